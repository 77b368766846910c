"""`connector check`: the preflight of both ends (connector.ops.check)."""

from __future__ import annotations

import argparse


def check(args: argparse.Namespace) -> int:
    import json

    from connector.config import load_settings
    from connector.ops.check import check

    settings = load_settings(args.config)  # a bad file: ConfigError, exit 2
    report = check(settings, offline=args.offline)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.render())
    return report.exit_code
