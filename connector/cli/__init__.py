"""The `connector` command line: its grammar here, what each command does in the modules beside it.

- `service`: migrate, run (the daemon), serve (the HTTP API), mcp (the MCP server over
  stdio), demo, dev up/down.
- `operate`: status, replay, resync, reindex, verify, slot drop/take-over (connector.ops).
- `queries`: search and ask (connector.query).
- `check`: the preflight of both ends (connector.ops.check).
- `common`: the log setup, and the one line for an address that cannot be bound.

Each command takes the parsed arguments and returns the exit code. Each imports what it uses when
it runs, so that the daemon (`connector run`) does not load the query side, nor a search the
daemon's. `python -m connector.cli` runs `main` (`__main__.py`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from connector.cli import check, operate, queries, service
from connector.cli.common import set_up_logging
from connector.errors import ConnectorError

Handler = Callable[[argparse.Namespace], int]
if TYPE_CHECKING:  # not subscriptable at run time
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]


def _command(
    commands: Commands, name: str, summary: str, handler: Handler, config: bool = True
) -> argparse.ArgumentParser:
    """The parser of the subcommand `name`, which runs `handler` (with `--config` unless not
    `config`)."""
    parser = commands.add_parser(name, help=summary)
    if config:
        parser.add_argument(
            "--config", "-c", help="settings file (TOML); default: $CONNECTOR_CONFIG", default=None
        )
    parser.set_defaults(handler=handler)
    return parser


def _ops_parsers(sub: Commands) -> None:
    status = _command(
        sub, "status", "slot, checkpoint, lag, retained WAL, index sizes", operate.status
    )
    status.add_argument("--json", action="store_true")

    preflight = _command(
        sub, "check", "check Postgres, Redis and the models before a run; exit 1 on errors",
        check.check,
    )  # fmt: skip
    preflight.add_argument("--json", action="store_true", help="print the findings as JSON")
    preflight.add_argument("--offline", action="store_true", help="do not ask the model providers")

    replay = _command(sub, "replay", "re-apply the changes after a saved LSN", operate.replay)
    replay.add_argument(
        "--from-lsn", required=True, type=_lsn_text, metavar="LSN", help="e.g. 0/1A2B3C4D"
    )

    resync = _command(
        sub, "resync", "rebuild tables' index from a consistent snapshot", operate.resync
    )
    resync.add_argument("--table", action="append", help="only this table (repeatable)")

    reindex = _command(
        sub,
        "reindex",
        "rebuild an index behind its alias while the connector runs",
        operate.reindex,
    )
    reindex.add_argument("--table", action="append", help="only this table's index (repeatable)")
    reindex.add_argument("--dry-run", action="store_true", help="print the plan only")
    reindex.add_argument("--cancel", action="store_true", help="drop a rebuild under way")
    reindex.add_argument("--force", action="store_true", help="even if memory looks short")
    reindex.add_argument(
        "--no-wait", action="store_true", help="record the rebuild, do not follow it"
    )

    serve = _command(sub, "serve", "the HTTP search and answer API, and a page at /", service.serve)
    serve.add_argument("--host", help="listen on this address (default: serve.host)")
    serve.add_argument("--port", type=_positive_int, help="and this port (default: serve.port)")

    _command(sub, "mcp", "the MCP server over stdio, for AI agents (the mcp extra)", service.mcp)

    verify = _command(
        sub, "verify", "compare tables with the index; exit 1 on drift", operate.verify
    )
    verify.add_argument("--table", action="append", help="only this table (repeatable)")
    verify.add_argument("--repair", action="store_true", help="fix the drift found")

    slot = sub.add_parser("slot", help="replication slot management")
    slot_sub = slot.add_subparsers(dest="slot_command", required=True)
    drop = _command(
        slot_sub, "drop", "drop the slot and its checkpoint (decommission)", operate.slot_drop
    )
    drop.add_argument("--force", action="store_true", help="even if a connector is using it")
    take = _command(
        slot_sub,
        "take-over",
        "make this slot the owner of indexes another slot wrote",
        operate.slot_take_over,
    )
    take.add_argument("--index", action="append", help="only this index (repeatable)")
    take.add_argument("--force", action="store_true", help="even if the other slot streams")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def _lsn_text(text: str) -> str:
    from connector.core.lsn import Lsn

    try:
        Lsn.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def _dev_parser(sub: Commands) -> None:
    dev = sub.add_parser("dev", help="throwaway Postgres + Redis Stack for trying things out")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    up = _command(
        dev_sub, "up", "start both and print their DSN and URL", service.dev_up, config=False
    )
    up.add_argument("--dir", default=".dev", help="folder for their data (default: .dev)")
    up.add_argument("--dbname", default="app")
    down = _command(
        dev_sub, "down", "stop the services started by `dev up`", service.dev_down, config=False
    )
    down.add_argument("--dir", default=".dev")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connector",
        description="PostgreSQL (wal2json) -> Redis vector search, kept in sync in real time.",
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (default: settings)")
    parser.add_argument("--log-format", choices=["text", "json"], help="default: settings")
    sub = parser.add_subparsers(dest="command", required=True)

    migrate = _command(
        sub, "migrate", "apply migrations/*.sql in order, once each", service.migrate
    )
    migrate.add_argument("--dsn", help="admin DSN (default: postgres.dsn from the settings)")
    migrate.add_argument("--dir", help="migrations folder (default: the project's migrations/)")

    _command(sub, "run", "run the connector (the daemon) until SIGTERM/SIGINT", service.run)

    search = _command(sub, "search", "search the synced index", queries.search)
    search.add_argument("text")
    search.add_argument("--k", type=_positive_int, default=5, help="number of results (default 5)")
    search.add_argument(
        "--filter",
        action="append",
        metavar="FIELD=VALUE",
        help="metadata filter; numeric: N or LOW..HIGH; tag: a|b; repeatable",
    )
    search.add_argument("--index", help="index to search (default: the first table's)")
    search.add_argument(
        "--min-lsn", type=_lsn_text, help="first wait until the index has applied this LSN"
    )
    search.add_argument("--hybrid", action="store_true", help="fuse full-text and vector ranks")
    search.add_argument(
        "--timeout", type=_positive_float, default=5.0, help="--min-lsn wait bound (s)"
    )
    search.add_argument("--json", action="store_true", help="print the hits as JSON")

    ask = _command(sub, "ask", "answer a question from the index (streams the answer)", queries.ask)
    ask.add_argument("question")
    ask.add_argument("--k", type=_positive_int, default=5, help="sources to retrieve (default 5)")
    ask.add_argument("--filter", action="append", metavar="FIELD=VALUE", help="as for search")
    ask.add_argument("--json", action="store_true", help="print the answer and sources as JSON")

    demo = _command(
        sub, "demo", "throwaway services + a real corpus + the daemon", service.demo, config=False
    )
    demo.add_argument("--dir", default=".dev", help="folder for the services (default: .dev)")
    demo.add_argument("--limit", type=_positive_int, default=10_000, help="documents to load")

    _ops_parsers(sub)
    _dev_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    set_up_logging(args)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConnectorError as exc:
        from connector.logs import redact

        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A server that cannot be reached is an answer for the user, not a traceback.
        if not type(exc).__module__.startswith(("psycopg", "redis")):
            raise
        from connector.logs import redact

        service = "Postgres" if type(exc).__module__.startswith("psycopg") else "Redis"
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"error: {service}: {redact(first_line)}", file=sys.stderr)
        return 1
