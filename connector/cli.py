"""The `connector` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from connector.errors import ConnectorError

Handler = Callable[[argparse.Namespace], int]


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", help="settings file (TOML); default: $CONNECTOR_CONFIG", default=None
    )


def _cmd_dev_up(args: argparse.Namespace) -> int:
    from connector.devservices import DevServices

    services = DevServices.in_folder(Path(args.dir))
    state = services.up(args.dbname)
    print(f"Postgres: {state['postgres_dsn']}")
    print(f"Redis:    {state['redis_url']}")
    print("\nUse them with:")
    print(f"  export CONNECTOR_POSTGRES__DSN={state['postgres_dsn']}")
    print(f"  export CONNECTOR_REDIS__URL={state['redis_url']}")
    print(f"Stop them with: connector dev down --dir {args.dir}")
    return 0


def _cmd_dev_down(args: argparse.Namespace) -> int:
    from connector.devservices import DevServices

    DevServices.in_folder(Path(args.dir)).down()
    print(f"stopped the services in {args.dir}")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.migrate import MIGRATIONS_DIR, apply_migrations

    dsn = args.dsn
    if not dsn:
        dsn = load_settings(args.config, require_tables=False).postgres.dsn.get_secret_value()
    result = apply_migrations(dsn, Path(args.dir) if args.dir else MIGRATIONS_DIR)
    for name in result.applied:
        print(f"applied  {name}")
    for name in result.skipped:
        print(f"skipped  {name} (already applied)")
    return 0


def _dev_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("dev", help="throwaway Postgres + Redis Stack for trying things out")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_sub.add_parser("up", help="start both and print their DSN and URL")
    up.add_argument("--dir", default=".dev", help="folder for their data (default: .dev)")
    up.add_argument("--dbname", default="app")
    up.set_defaults(handler=_cmd_dev_up)
    down = dev_sub.add_parser("down", help="stop the services started by `dev up`")
    down.add_argument("--dir", default=".dev")
    down.set_defaults(handler=_cmd_dev_down)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connector",
        description="PostgreSQL (wal2json) -> Redis vector search, kept in sync in real time.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    migrate = sub.add_parser("migrate", help="apply migrations/*.sql in order, once each")
    _add_config(migrate)
    migrate.add_argument("--dsn", help="admin DSN (default: postgres.dsn from the settings)")
    migrate.add_argument("--dir", help="migrations folder (default: the project's migrations/)")
    migrate.set_defaults(handler=_cmd_migrate)

    _dev_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConnectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
