"""The page at `/`, in a real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright; nothing downloads a browser): a row committed to Postgres shows up in a search typed
into the page, the index's LSN is shown live, and an answer streams in with its sources; a search
in flight shows that it works (a spinner and its seconds, the button disabled), and an error is
shown where the results would be, with the API's message (or that no answer came)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from connector.config import Settings
from connector.testing.daemon import DaemonThread
from connector.testing.openai_server import FakeOpenAI
from tests.support import insert, make_settings, openai_settings, serving, synced

Start = Callable[[Settings], DaemonThread]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without these Chromium keeps trying to reach Google's services, which a closed network refuses.
_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"no Chromium at {CHROMIUM}: scripts/setup.sh installs it for tests")
    pytest.skip("Chromium is not installed (scripts/setup.sh installs it)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def page() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=_FLAGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_the_page_finds_a_row_just_committed_and_streams_an_answer(
    migrated_dsn: str, redis_url: str, run_connector: Start, fake_openai: FakeOpenAI, page: Any
) -> None:
    settings = make_settings(
        migrated_dsn, redis_url,
        chat={"base_url": fake_openai.url, "api_key": "sk-test-not-a-real-key"},
    )  # fmt: skip
    run_connector(settings)
    synced(settings, migrated_dsn)
    with serving(settings) as client:
        tab = page
        tab.goto(str(client.base_url) + "/")
        tab.wait_for_function("document.getElementById('physical').textContent === 'documents.v1'")
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO documents (id, title, body, source) VALUES "
                         "(42, 'narwhals', 'narwhal tusks are teeth', 'web')")  # fmt: skip
        committed = time.perf_counter()
        shown = None
        tab.fill("#q", "narwhal tusks")
        tab.fill("#filters", "source=web")
        while shown is None and time.perf_counter() - committed < 15:
            tab.evaluate("delete document.getElementById('results').dataset.lsn")
            tab.click("#search")
            tab.wait_for_function("document.getElementById('results').dataset.lsn !== undefined")
            if "narwhal tusks are teeth" in tab.inner_text("#results"):
                shown = time.perf_counter()
        assert shown is not None, tab.inner_text("#results")
        print(f"commit -> row shown in the page: {1000 * (shown - committed):.0f} ms")
        assert "score" in tab.inner_text("#results")
        tab.fill("#question", "what are narwhal tusks?")
        tab.click("#ask")
        tab.wait_for_function("document.getElementById('answer').dataset.done === '1'")
        assert tab.inner_text("#answer") == fake_openai.chat_reply
        assert "(cited)" in tab.inner_text("#sources")
        assert tab.inner_text("#lsn") != "?"


def test_a_search_in_flight_shows_its_work_and_errors_show_where_the_results_would(
    migrated_dsn: str, redis_url: str, run_connector: Start, fake_openai: FakeOpenAI, page: Any
) -> None:
    settings = make_settings(migrated_dsn, redis_url, embedding=openai_settings(fake_openai))
    insert(migrated_dsn, (7, "otters", "otters hold hands while they sleep"))
    run_connector(settings)
    synced(settings, migrated_dsn)
    with serving(settings) as client:
        tab = page
        tab.goto(str(client.base_url) + "/")
        assert not tab.is_visible("#answer"), "an empty answer box before anything was asked"
        fake_openai.latency_s = 1.5  # a slow provider, or the model loading at the first search
        tab.fill("#q", "otters asleep")
        tab.click("#search")
        tab.wait_for_selector("#results[aria-busy=true] .working", timeout=5000)
        assert tab.is_disabled("#search")
        first = tab.inner_text("#results .working")
        assert first.startswith("searching\u2026 "), first
        tab.wait_for_function(  # the seconds it has taken go on
            "(first) => document.querySelector('#results .working')?.textContent !== first",
            arg=first, timeout=5000,
        )  # fmt: skip
        tab.wait_for_function("document.getElementById('results').dataset.lsn !== undefined")
        assert "otters hold hands" in tab.inner_text("#results")
        assert tab.is_enabled("#search") and not tab.query_selector("#results .working")
        fake_openai.latency_s = 0.0

        tab.fill("#filters", "colour=red")  # no such metadata field: the API says 400
        tab.click("#search")
        tab.wait_for_selector("#results .error", timeout=5000)
        said = tab.inner_text("#results .error")
        assert said.startswith("400: filters.colour: unknown filter field 'colour'"), said
        assert tab.is_enabled("#search")
    tab.fill("#filters", "")  # the server is gone: fetch gets no answer at all
    tab.click("#search")
    tab.wait_for_selector("#results .error", timeout=5000)
    said = tab.inner_text("#results .error")
    assert said.startswith("no answer from the server ("), said
    tab.wait_for_selector("#state-error .error", timeout=5000)  # the live state says so too
