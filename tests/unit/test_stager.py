"""The stager (connector.flow.stager): staging overlaps planning, in order, and waits only for
rows it still stages. Pure threads, no servers."""

from __future__ import annotations

import threading

import pytest

from connector.flow.stager import Stager


def test_jobs_run_in_order_one_at_a_time_while_the_caller_goes_on() -> None:
    release = threading.Event()
    done: list[int] = []
    with Stager() as stager:
        stager.submit([("t", "1")], lambda: (release.wait(5), done.append(1)))
        stager.settle([("t", "2")])  # another row: the caller plans on at once
        assert stager.busy and done == []
        release.set()
        stager.submit([("t", "2")], lambda: done.append(2))
    assert done == [1, 2]


def test_a_batch_of_a_row_still_being_staged_waits_for_that_staging() -> None:
    release = threading.Event()
    done: list[str] = []
    with Stager() as stager:
        stager.submit([("t", "1")], lambda: (release.wait(0.2), done.append("staged")))
        stager.settle([("t", "3"), ("t", "1")])
        assert done == ["staged"] and not stager.busy


def test_a_job_that_failed_raises_in_the_caller() -> None:
    def fail() -> None:
        raise ConnectionError("redis went away")

    stager = Stager()
    stager.submit([("t", "1")], fail)
    with pytest.raises(ConnectionError, match="redis went away"):
        stager.submit([("t", "2")], lambda: None)
    stager.close()
