"""schemathesis against the OpenAPI document `connector serve` serves: every operation, the
examples, coverage and fuzzing phases with bounded examples, all checks (no 5xx, responses as
documented, what the schema allows is accepted and what it does not is refused with a 4xx).
Over real HTTP against the real services and a running connector, with a text metadata field
so that every kind of filter is generated."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from connector.config import Settings
from connector.testing.daemon import DaemonThread
from connector.testing.openai_server import FakeOpenAI
from tests.support import (
    DOCUMENTS,
    assert_index_equals_table,
    insert,
    make_settings,
    serving,
    synced,
)

Start = Callable[[Settings], DaemonThread]
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 150  # per operation and phase: the whole run takes about a minute on two cores
SEED = int(os.environ.get("CONNECTOR_SCHEMATHESIS_SEED", "21"))  # another seed fuzzes anew


def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    migrated_dsn: str, redis_url: str, run_connector: Start, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    table = {**DOCUMENTS, "metadata": {**DOCUMENTS["metadata"], "title": "text"}}
    settings = make_settings(
        migrated_dsn, redis_url, [table],
        chat={"base_url": fake_openai.url, "api_key": "sk-test-not-a-real-key"},
        serve={"min_lsn_timeout_s": 0.5},
    )  # fmt: skip
    run_connector(settings)
    insert(migrated_dsn, *[(n, f"title {n}", f"the body of document {n}") for n in range(1, 11)])
    synced(settings, migrated_dsn)
    with serving(settings) as client:
        began = time.monotonic()
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")), "run",
                f"{client.base_url}/openapi.json", "--checks", "all",
                "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--workers", "2",
                "--phases", "examples,coverage,fuzzing", "--request-timeout", "10",
                "--no-color",
            ],
            cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.bounds.schemathesis_hooks",
                 "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        took = time.monotonic() - began
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "Tested: 6" in run.stdout and "Examples" in run.stdout, report
    print(f"schemathesis: {took:.0f} s\n{run.stdout[-1500:]}")
    assert_index_equals_table(settings, migrated_dsn)
