"""The `connector` command line."""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from connector.config import Settings
from connector.errors import ConfigError, ConnectorError, QueryError

if TYPE_CHECKING:  # the query side (embedders, chat client) loads only for search and ask
    from connector.query import FilterValue

Handler = Callable[[argparse.Namespace], int]


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", help="settings file (TOML); default: $CONNECTOR_CONFIG", default=None
    )


def _cmd_dev_up(args: argparse.Namespace) -> int:
    from connector.testing.services import DevServices

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
    from connector.testing.services import DevServices

    DevServices.in_folder(Path(args.dir)).down()
    print(f"stopped the services in {args.dir}")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.source.migrate import MIGRATIONS_DIR, apply_migrations

    dsn = args.dsn
    if not dsn:
        dsn = load_settings(args.config, require_tables=False).postgres.dsn.get_secret_value()
    result = apply_migrations(dsn, Path(args.dir) if args.dir else MIGRATIONS_DIR)
    for name in result.applied:
        print(f"applied  {name}")
    for name in result.skipped:
        print(f"skipped  {name} (already applied)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import signal

    from connector.config import load_settings
    from connector.embed import make_embedder
    from connector.flow.daemon import Connector
    from connector.metrics import HealthServer, Metrics
    from connector.sink.redis_client import client_for

    settings = load_settings(args.config)
    _logging(args, settings)
    embedder = make_embedder(settings.embedding, client_for(settings.redis))
    metrics = Metrics()
    metrics.track_embedder(lambda: embedder.stats, embedder.provider, embedder.model)
    connector = Connector(settings, embedder, metrics)
    observability = settings.observability
    server = None
    if observability.metrics_port:
        host, port = observability.metrics_host, observability.metrics_port
        try:
            server = HealthServer(metrics, connector.is_ready, host, port).start()
        except OSError as exc:
            embedder.close()
            raise _cannot_listen(
                exc, host, port,
                "observability.metrics_port (CONNECTOR_OBSERVABILITY__METRICS_PORT)",
                "observability.metrics_host (CONNECTOR_OBSERVABILITY__METRICS_HOST)",
                ", or 0 to turn the metrics and probes server off",
            ) from None  # fmt: skip

    def _stop(signum: int, _frame: object) -> None:
        logging.getLogger("connector").info("%s: stopping", signal.Signals(signum).name)
        connector.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        connector.run()
    finally:
        if server is not None:
            server.stop()
        embedder.close()
    return 0


def _cannot_listen(
    exc: OSError, host: str, port: int, port_setting: str, host_setting: str, off: str = ""
) -> ConfigError:
    """One line for an address that cannot be bound, naming the setting that fixes it."""
    where = f"cannot listen on {host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"{where}: the port is in use (by another connector?): set {port_setting} to a "
            f"free port{off}"
        )
    if exc.errno == errno.EACCES:
        return ConfigError(f"{where}: permission denied (below 1024?): set {port_setting}")
    reason = exc.strerror or str(exc)
    return ConfigError(f"{where} ({reason}): set {host_setting} to an address of this machine")


def _logging(args: argparse.Namespace, settings: Settings | None = None) -> None:
    from connector.logs import configure_logging

    level = args.log_level or (settings.observability.log_level if settings else "INFO")
    fmt = args.log_format or (settings.observability.log_format if settings else "text")
    configure_logging(level, fmt)


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from connector.config import load_settings
    from connector.ops.status import collect_status, render

    status = collect_status(load_settings(args.config))
    print(json.dumps(status.as_dict(), indent=2) if args.json else render(status))
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.core.lsn import Lsn
    from connector.ops.replay import rewind

    settings = load_settings(args.config)
    lsn = Lsn.parse(args.from_lsn)  # checked by argparse
    confirmed = rewind(settings, lsn)
    print(f"checkpoint moved back to {lsn} (the slot holds changes from {confirmed} on).")
    print("Start the connector (`connector run`): it re-applies every change after that LSN.")
    return 0


def _cmd_resync(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.embed import make_embedder
    from connector.ops.resync import resync
    from connector.sink.redis_client import client_for

    settings = load_settings(args.config)
    embedder = make_embedder(settings.embedding, client_for(settings.redis))
    try:
        report = resync(settings, embedder, args.table)
    finally:
        embedder.close()
    print(
        f"resync at {report.at}: {report.rows} rows copied, {report.embedded} chunks embedded "
        "(the others kept their vectors); rows the tables no longer have are hidden and "
        "collected"
    )
    return 0


def _cmd_reindex(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.embed import make_embedder
    from connector.ops.reindex import reindex

    settings = load_settings(args.config)
    embedder = make_embedder(settings.embedding)  # its model only: the daemon embeds
    try:
        return reindex(
            settings, embedder, args.table, dry_run=args.dry_run, cancel=args.cancel,
            force=args.force, wait=not args.no_wait,
        )  # fmt: skip
    finally:
        embedder.close()


def _cmd_serve(args: argparse.Namespace) -> int:
    from connector.config import load_settings

    settings = load_settings(args.config)
    _logging(args, settings)
    try:
        import uvicorn

        from connector.serve.api import create_app
    except ImportError as exc:
        raise ConfigError(
            f"`connector serve` needs the serve extra ({exc.name} is missing): "
            "pip install 'pg-redis-connector[serve]'"
        ) from None
    serve = settings.serve
    host, port = args.host or serve.host, args.port or serve.port
    app = create_app(settings)
    listening = _listen(host, port)  # bound here: a busy port is one line, not uvicorn's exit
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    logging.getLogger("connector").info("serving on http://%s:%d", shown, port)
    try:
        server.run(sockets=[listening])
    finally:
        listening.close()
    return 0 if server.started else 1


def _listen(host: str, port: int) -> socket.socket:
    """The API's socket, bound as uvicorn binds it (IPv6 for a host with a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        raise _cannot_listen(
            exc, host, port, "--port or serve.port (CONNECTOR_SERVE__PORT)",
            "--host or serve.host (CONNECTOR_SERVE__HOST)",
        ) from None  # fmt: skip
    return listening


def _cmd_verify(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.embed import make_embedder
    from connector.ops.verify import checkpoint_problem, repair, verify
    from connector.sink.redis_client import client_for

    settings = load_settings(args.config)
    drifts = verify(settings, args.table)
    for drift in drifts:
        print(drift.summary())
    problem = checkpoint_problem(settings)
    if problem:
        print(f"checkpoint: {problem}")
    if all(drift.clean for drift in drifts):
        return 1 if problem else 0
    if not args.repair:
        print("drift found: run `connector verify --repair` to fix it")
        return 1
    embedder = make_embedder(settings.embedding, client_for(settings.redis))
    try:
        repair(settings, embedder, drifts)
    finally:
        embedder.close()
    after = verify(settings, args.table)
    for drift in after:
        print("after repair: " + drift.summary())
    return 0 if all(drift.clean for drift in after) and not problem else 1


def _cmd_slot_drop(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.ops.slot import drop_slot

    settings = load_settings(args.config)
    if drop_slot(settings, args.force):
        print(f"dropped slot {settings.postgres.slot} and its checkpoint")
    else:
        print(f"slot {settings.postgres.slot} does not exist")
    return 0


def _cmd_slot_take_over(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.ops.slot import take_over

    settings = load_settings(args.config)
    for line in take_over(settings, args.index, args.force):
        print(line)
    print(
        f"`connector run` with this configuration (slot {settings.postgres.slot}) now writes "
        "them; with no checkpoint of its own it copies their tables from a snapshot first "
        "(unchanged rows keep their vectors). Drop the old slot with `connector slot drop` "
        "and its configuration when nothing uses it: it holds WAL on the server"
    )
    return 0


def _ops_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser("status", help="slot, checkpoint, lag, retained WAL, index sizes")
    _add_config(status)
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_cmd_status)

    replay = sub.add_parser("replay", help="re-apply the changes after a saved LSN")
    _add_config(replay)
    replay.add_argument(
        "--from-lsn", required=True, type=_lsn_text, metavar="LSN", help="e.g. 0/1A2B3C4D"
    )
    replay.set_defaults(handler=_cmd_replay)

    resync = sub.add_parser("resync", help="rebuild tables' index from a consistent snapshot")
    _add_config(resync)
    resync.add_argument("--table", action="append", help="only this table (repeatable)")
    resync.set_defaults(handler=_cmd_resync)

    reindex = sub.add_parser(
        "reindex", help="rebuild an index behind its alias while the connector runs"
    )
    _add_config(reindex)
    reindex.add_argument("--table", action="append", help="only this table's index (repeatable)")
    reindex.add_argument("--dry-run", action="store_true", help="print the plan only")
    reindex.add_argument("--cancel", action="store_true", help="drop a rebuild under way")
    reindex.add_argument("--force", action="store_true", help="even if memory looks short")
    reindex.add_argument(
        "--no-wait", action="store_true", help="record the rebuild, do not follow it"
    )
    reindex.set_defaults(handler=_cmd_reindex)

    serve = sub.add_parser("serve", help="the HTTP search and answer API, and a page at /")
    _add_config(serve)
    serve.add_argument("--host", help="listen on this address (default: serve.host)")
    serve.add_argument("--port", type=_positive_int, help="and this port (default: serve.port)")
    serve.set_defaults(handler=_cmd_serve)

    verify = sub.add_parser("verify", help="compare tables with the index; exit 1 on drift")
    _add_config(verify)
    verify.add_argument("--table", action="append", help="only this table (repeatable)")
    verify.add_argument("--repair", action="store_true", help="fix the drift found")
    verify.set_defaults(handler=_cmd_verify)

    slot = sub.add_parser("slot", help="replication slot management")
    slot_sub = slot.add_subparsers(dest="slot_command", required=True)
    drop = slot_sub.add_parser("drop", help="drop the slot and its checkpoint (decommission)")
    _add_config(drop)
    drop.add_argument("--force", action="store_true", help="even if a connector is using it")
    drop.set_defaults(handler=_cmd_slot_drop)
    take = slot_sub.add_parser(
        "take-over", help="make this slot the owner of indexes another slot wrote"
    )
    _add_config(take)
    take.add_argument("--index", action="append", help="only this index (repeatable)")
    take.add_argument("--force", action="store_true", help="even if the other slot streams")
    take.set_defaults(handler=_cmd_slot_take_over)


def parse_filters(items: Sequence[str], fields: dict[str, str]) -> dict[str, FilterValue]:
    """`field=value`; numeric fields take `N` or a range `LOW..HIGH` (either side may be empty);
    tag fields take `a|b` for any of several values. Bad input raises QueryError naming the
    fields there are."""
    filters: dict[str, FilterValue] = {}
    known = ", ".join(f"{name} ({kind})" for name, kind in sorted(fields.items())) or "none"
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise QueryError(f"--filter {item!r}: use FIELD=VALUE (fields: {known})")
        kind = fields.get(name)
        if kind is None:
            raise QueryError(f"--filter {item!r}: unknown field {name!r} (fields: {known})")
        if kind == "numeric":
            filters[name] = _numeric_filter(item, value)
        elif kind == "tag" and "|" in value:
            filters[name] = value.split("|")
        else:
            filters[name] = value
    return filters


def _numeric_filter(item: str, value: str) -> float | tuple[float | None, float | None]:
    try:
        if ".." in value:
            low, _, high = value.partition("..")
            return (float(low) if low else None, float(high) if high else None)
        return float(value)
    except ValueError:
        raise QueryError(
            f"--filter {item!r}: a numeric field takes a number N or a range LOW..HIGH"
        ) from None


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


def _cmd_search(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from connector.config import load_settings
    from connector.query import searcher

    settings = load_settings(args.config)
    found = searcher(settings, args.index)
    filters = parse_filters(args.filter or [], found.spec.fields)
    hits = found.search(
        args.text, args.k, filters, args.min_lsn, hybrid=args.hybrid, timeout_s=args.timeout
    )
    if args.json:
        print(json.dumps([asdict(hit) for hit in hits], indent=2, ensure_ascii=False))
        return 0
    if not hits:
        print("no results")
    for rank, hit in enumerate(hits, 1):
        key = ",".join(hit.key)
        snippet = " ".join(hit.content.split())[:160]
        print(f"{rank:>2}. {hit.score:.3f}  {hit.table} [{key}] chunk {hit.chunk}")
        print(f"    {snippet}")
        if hit.metadata:
            print("    " + "  ".join(f"{k}={v}" for k, v in hit.metadata.items()))
    return 0


def _cmd_ask(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from connector.config import load_settings
    from connector.query import searcher
    from connector.query.answerer import Answerer

    settings = load_settings(args.config)
    found = searcher(settings)
    filters = parse_filters(args.filter or [], found.spec.fields)
    answerer = Answerer(settings, found)

    def show(piece: str) -> None:
        if not args.json:
            print(piece, end="", flush=True)

    try:
        result = answerer.stream(args.question, args.k, filters, on_token=show)
    finally:
        answerer.close()
    if args.json:
        print(json.dumps(asdict(result), indent=2, ensure_ascii=False))
        return 0
    print("\n\nSources:")
    for number, hit in enumerate(result.sources, 1):
        mark = "*" if hit in result.cited else " "
        print(f" {mark}[{number}] {hit.table} [{','.join(hit.key)}] chunk {hit.chunk}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from connector.demo import run_demo

    return run_demo(Path(args.dir), args.limit)


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
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (default: settings)")
    parser.add_argument("--log-format", choices=["text", "json"], help="default: settings")
    sub = parser.add_subparsers(dest="command", required=True)

    migrate = sub.add_parser("migrate", help="apply migrations/*.sql in order, once each")
    _add_config(migrate)
    migrate.add_argument("--dsn", help="admin DSN (default: postgres.dsn from the settings)")
    migrate.add_argument("--dir", help="migrations folder (default: the project's migrations/)")
    migrate.set_defaults(handler=_cmd_migrate)

    run = sub.add_parser("run", help="run the connector (the daemon) until SIGTERM/SIGINT")
    _add_config(run)
    run.set_defaults(handler=_cmd_run)

    search = sub.add_parser("search", help="search the synced index")
    _add_config(search)
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
    search.set_defaults(handler=_cmd_search)

    ask = sub.add_parser("ask", help="answer a question from the index (streams the answer)")
    _add_config(ask)
    ask.add_argument("question")
    ask.add_argument("--k", type=_positive_int, default=5, help="sources to retrieve (default 5)")
    ask.add_argument("--filter", action="append", metavar="FIELD=VALUE", help="as for search")
    ask.add_argument("--json", action="store_true", help="print the answer and sources as JSON")
    ask.set_defaults(handler=_cmd_ask)

    demo = sub.add_parser("demo", help="throwaway services + a real corpus + the daemon")
    demo.add_argument("--dir", default=".dev", help="folder for the services (default: .dev)")
    demo.add_argument("--limit", type=_positive_int, default=10_000, help="documents to load")
    demo.set_defaults(handler=_cmd_demo)

    _ops_parsers(sub)
    _dev_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _logging(args)
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


if __name__ == "__main__":
    sys.exit(main())
