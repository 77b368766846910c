"""The MCP server with the MCP SDK's own client, against the real services and a running
connector: over stdio (`connector mcp` spawned as a desktop agent spawns it) and over
streamable HTTP (`/mcp` on the API, behind its bearer token)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx2
import psycopg
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from connector.config import Settings
from connector.testing.config import write_config
from connector.testing.daemon import DaemonThread
from connector.testing.openai_server import FakeOpenAI
from tests.support import insert, make_settings, serving, synced, wal_lsn

Start = Callable[[Settings], DaemonThread]
TOKEN = "s3cret-token-for-mcp-tests"
ROOT = Path(__file__).resolve().parent.parent


def _commit(dsn: str, key: int, title: str) -> str:
    """A row committed to Postgres; the commit's LSN."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO documents (id, title, body) VALUES (%s, %s, %s)",
                     (key, title, f"all about {title}"))  # fmt: skip
        return wal_lsn(conn)


def _error(result: CallToolResult) -> str:
    assert result.is_error, result
    return " ".join(getattr(block, "text", "") for block in result.content)


def _started(settings: Settings, dsn: str, run_connector: Start) -> None:
    run_connector(settings)
    insert(dsn, *[(n, f"title {n}", f"the body of document number {n}") for n in range(1, 6)])
    synced(settings, dsn)


async def _reads_its_writes(client: Client, dsn: str, key: int, word: str) -> None:
    """A row committed just now is found by `search` given the commit's LSN."""
    lsn = _commit(dsn, key, word)
    found = await client.call_tool("search", {"text": f"{word}\n\nall about {word}", "k": 1,
                                              "min_lsn": lsn})  # fmt: skip
    assert not found.is_error, found
    assert found.structured_content is not None
    hits = found.structured_content["hits"]
    assert hits[0]["key"] == [str(key)] and word in hits[0]["content"], hits
    visible = found.structured_content["lsn"]
    assert tuple(int(p, 16) for p in visible.split("/")) >= tuple(
        int(p, 16) for p in lsn.split("/")
    )


def test_stdio_lists_the_tools_reads_your_writes_and_names_a_bad_argument(
    migrated_dsn: str, redis_url: str, run_connector: Start, tmp_path: Path
) -> None:
    settings = make_settings(migrated_dsn, redis_url, serve={"min_lsn_timeout_s": 0.5})
    _started(settings, migrated_dsn, run_connector)
    config = write_config(tmp_path / "connector.toml", settings)
    spawn = StdioServerParameters(
        command=sys.executable, args=["-m", "connector.cli", "mcp", "--config", str(config)],
        cwd=str(ROOT),
    )  # fmt: skip
    log = tmp_path / "stderr.log"

    async def session(client: Client) -> None:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == {"search", "index_status"}, tools  # no chat model: no ask
        k = tools["search"].input_schema["properties"]["k"]
        assert (k["minimum"], k["maximum"]) == (1, settings.serve.max_k)
        await _reads_its_writes(client, migrated_dsn, 77, "aardvark")
        bad = await client.call_tool("search", {"text": "x", "filters": {"colour": "red"}})
        assert "filters.colour" in _error(bad) and "source" in _error(bad)
        assert bad.structured_content == {"error": _error(bad), "field": "filters.colour"}
        too_many = await client.call_tool("search", {"text": "x", "k": 1000})
        assert "serve.max_k" in _error(too_many)
        late = await client.call_tool("search", {"text": "x", "min_lsn": "FF/0"})
        assert "min_lsn" in _error(late) and "reached" in _error(late)
        status = await client.call_tool("index_status", {})
        state = status.structured_content
        assert state is not None and not status.is_error, status
        assert (state["index"], state["physical"]) == ("documents", "documents.v1")
        assert state["rows"] == 6 and state["chunks"] >= 6, state
        assert state["model"].startswith("hashing/") and "/" in state["lsn"]
        after = await client.call_tool("search", {"text": "title 3", "k": 1})
        assert not after.is_error  # the server survived every bad call

    with log.open("w") as errlog:
        # The handshake of today's desktop agents (the 2025 protocol): mode="legacy".
        anyio.run(_with, Client(stdio_client(spawn, errlog=errlog), mode="legacy"), session)
    assert "Traceback" not in log.read_text(), log.read_text()


def test_http_needs_the_token_and_ask_returns_the_answer_with_its_sources(
    migrated_dsn: str, redis_url: str, run_connector: Start, fake_openai: FakeOpenAI
) -> None:
    settings = make_settings(
        migrated_dsn, redis_url, serve={"api_keys": [TOKEN]},
        chat={"base_url": fake_openai.url, "api_key": "sk-test-not-a-real-key"},
    )  # fmt: skip
    _started(settings, migrated_dsn, run_connector)
    insert(migrated_dsn, (1000, "otters", "otters hold hands while they sleep"))
    with serving(settings) as api:
        listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        assert api.post("/mcp", json=listing).status_code == 401
        url = str(api.base_url.join("/mcp"))
        authorized = {"Authorization": f"Bearer {TOKEN}"}
        elsewhere = api.post(
            "/mcp", json=listing, headers={**authorized, "Origin": "http://evil.example"}
        )
        assert elsewhere.status_code == 403 and "serve.cors_origins" in elsewhere.text
        pieces: list[str] = []

        async def progress(_done: float, _total: float | None, message: str | None) -> None:
            pieces.append(message or "")

        async def session(client: Client) -> None:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert tools == {"search", "ask", "index_status"}
            await _reads_its_writes(client, migrated_dsn, 77, "aardvark")
            asked = await client.call_tool("ask", {"text": "how do otters sleep?", "k": 3},
                                           progress_callback=progress)  # fmt: skip
            assert not asked.is_error, asked
            answer = asked.structured_content
            assert answer is not None and answer["answer"] == fake_openai.chat_reply
            assert answer["sources"][0]["key"] == ["1000"] and answer["sources"][0]["cited"]
            assert json.loads(asked.content[0].text) == answer  # type: ignore[union-attr]
            bad = await client.call_tool("ask", {"text": "x", "hybrid": True})
            assert "hybrid" in _error(bad)

        async def legacy(client: Client) -> None:  # the 2025 protocol's handshake
            assert len((await client.list_tools()).tools) == 3
            await _reads_its_writes(client, migrated_dsn, 78, "pangolin")

        async def connect() -> None:
            async with httpx2.AsyncClient(headers=authorized) as http:
                await _with(Client(streamable_http_client(url, http_client=http)), session)
                transport = streamable_http_client(url, http_client=http)
                await _with(Client(transport, mode="legacy"), legacy)

        anyio.run(connect)
        assert "".join(pieces) == fake_openai.chat_reply  # the answer streamed as it came
        metrics = api.get("/metrics").text
        assert 'connector_api_requests_total{outcome="401",route="/mcp"}' in metrics


def test_without_the_extra_serve_still_starts_and_mcp_says_what_to_install(
    migrated_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    """`mcp` is an extra: with it blocked, the API imports and serves, and `connector mcp`
    names the extra."""
    config = write_config(tmp_path / "connector.toml", make_settings(migrated_dsn, redis_url))
    blocked = tmp_path / "blocked"
    (blocked / "mcp").mkdir(parents=True)
    (blocked / "mcp" / "__init__.py").write_text("raise ModuleNotFoundError(name='mcp')\n")
    env = {"PYTHONPATH": str(blocked), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "connector.cli", "mcp", "--config", str(config)],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "pip install 'pg-redis-connector[mcp]'" in done.stderr, done.stderr
    served = subprocess.run(
        [sys.executable, "-c", "from connector.serve.api import create_app; "
         "from connector.config import load_settings; "
         f"app = create_app(load_settings({str(config)!r})); "
         "print(sorted(r.path for r in app.routes))"],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )  # fmt: skip
    assert served.returncode == 0, served.stderr
    assert "'/v1/search'" in served.stdout and "'/mcp'" not in served.stdout, served.stdout


async def _with(client: Client, session: Callable[[Client], Awaitable[None]]) -> None:
    async with client:
        await session(client)
