"""Hooks for the schemathesis run of tests/bounds/test_api_schema.py (SCHEMATHESIS_HOOKS).

A well-formed `min_lsn` the index has not reached is a 504 after `serve.min_lsn_timeout_s`,
by design (tests/test_serve.py checks it): generated LSNs are random, so nearly every one is
ahead of the index. Each becomes 0/0 (reached at once), so that the run spends its time on
the rest of the body and every 5xx it sees is a defect.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis

_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")


@schemathesis.hook
def before_call(_context: Any, case: Any, _kwargs: dict[str, Any]) -> None:
    body = case.body
    lsn = body.get("min_lsn") if isinstance(body, dict) else None
    if isinstance(lsn, str) and _LSN.match(lsn):
        body["min_lsn"] = "0/0"
