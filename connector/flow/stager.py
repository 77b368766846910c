"""The stager: Redis's work on one batch overlaps Python's preparation of the next.

Planning a batch (decode, chunk, embed) is Python's work; staging it is mostly Redis's (an HNSW
insertion per chunk). The stager runs each staging job in a thread of its own, in order and one
at a time, while the caller plans the next batch: throughput is the slower of the two instead of
their sum. A plan reads the rows' manifests, so a batch touching a row still being staged waits
for that staging first (`settle`); batches of distinct rows never wait.

A job's error is raised in the caller at its next `settle`, `submit` or `drain`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

Row = tuple[str, str]  # (table, encoded key)


class Stager:
    """Runs staging jobs in order, one at a time, in a thread of its own."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="connector-stager")
        self._job: Future[object] | None = None
        self._rows: Collection[Row] = ()

    @property
    def busy(self) -> bool:
        return self._job is not None and not self._job.done()

    def settle(self, rows: Iterable[Row]) -> None:
        """Wait for the job in hand if it stages any of `rows` (its error is raised here)."""
        if self._job is None:
            return
        if self._job.done() or any(r in self._rows for r in rows):
            self.drain()

    def submit(self, rows: Collection[Row], job: Callable[[], object]) -> None:
        """Run `job` (which stages `rows`) after the job in hand."""
        self.drain()
        self._rows = rows
        self._job = self._pool.submit(job)

    def drain(self) -> None:
        """Wait for the job in hand; raise its error."""
        job, self._job, self._rows = self._job, None, ()
        if job is not None:
            job.result()

    def close(self) -> None:
        """Wait for the job in hand without raising (the caller is already failing or done)."""
        job, self._job = self._job, None
        if job is not None:
            job.exception()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Stager:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.drain()
        self.close()
