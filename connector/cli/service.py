"""The commands that start something: migrate, run (the daemon), serve (the API), mcp (the MCP
server over stdio), demo, dev."""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path

from connector.cli.common import cannot_listen, set_up_logging
from connector.errors import ConfigError


def dev_up(args: argparse.Namespace) -> int:
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


def dev_down(args: argparse.Namespace) -> int:
    from connector.testing.services import DevServices

    DevServices.in_folder(Path(args.dir)).down()
    print(f"stopped the services in {args.dir}")
    return 0


def migrate(args: argparse.Namespace) -> int:
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


def run(args: argparse.Namespace) -> int:
    import signal

    from connector.config import load_settings
    from connector.embed import make_embedder
    from connector.flow.daemon import Connector
    from connector.metrics import HealthServer, Metrics
    from connector.ops.check import start_checks
    from connector.sink.redis_client import client_for

    settings = load_settings(args.config)
    set_up_logging(args, settings)
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
            raise cannot_listen(
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
        start_checks(settings)  # `connector check`'s offline part: errors refuse, warnings once
        connector.run()
    finally:
        if server is not None:
            server.stop()
        embedder.close()
    return 0


def serve(args: argparse.Namespace) -> int:
    from connector.config import load_settings

    settings = load_settings(args.config)
    set_up_logging(args, settings)
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


def mcp(args: argparse.Namespace) -> int:
    from connector.config import load_settings

    settings = load_settings(args.config)
    set_up_logging(args, settings)  # to stderr: stdout is the protocol's
    try:
        from connector.serve.mcp import serve_stdio
    except ImportError as exc:
        raise ConfigError(
            f"`connector mcp` needs the mcp extra ({exc.name} is missing): "
            "pip install 'pg-redis-connector[mcp]'"
        ) from None
    serve_stdio(settings)
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """The API's socket, bound as uvicorn binds it (IPv6 for a host with a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        raise cannot_listen(
            exc, host, port, "--port or serve.port (CONNECTOR_SERVE__PORT)",
            "--host or serve.host (CONNECTOR_SERVE__HOST)",
        ) from None  # fmt: skip
    return listening


def demo(args: argparse.Namespace) -> int:
    from connector.demo import run_demo

    return run_demo(Path(args.dir), args.limit)
