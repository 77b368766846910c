"""Versioned rows: which version of a row a reader at visible LSN V sees, and what is garbage.

Every write of a row adds a *version* to its manifest (`P:row:<table>:<key>`, a hash of
`<lsn>` -> the version's chunk ids, or "-" for a delete). A version becomes visible when the
checkpoint's visible LSN passes its LSN; until then it is *pending*, and no reader sees it.

Chunk ids are content-addressed: `<text hash>@<lsn>` (with `+<n>` after the hash for the n-th
repeat of a text in one row), where `lsn` is the version that first wrote that text. A version
lists the ids of its chunks in order; a chunk whose text did not change keeps its id, so it is
neither written nor re-indexed again.

A table's truncate floors (`P:floor:<table>`: `<lsn>` fields) hide every version below them: a
reader at V honours the newest floor at or below V. Pure: no I/O here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from connector.core.lsn import Lsn

DELETED = "-"
# The manifest field that names the partition a row of a partitioned table is in.
LEAF_FIELD = "leaf"


def chunk_id(text_hash: str, lsn: Lsn, repeat: int = 0) -> str:
    return f"{text_hash}+{repeat}@{lsn.value}" if repeat else f"{text_hash}@{lsn.value}"


def id_text_hash(chunk: str) -> str:
    """The text hash of a chunk id (what vector reuse matches on)."""
    return chunk.partition("@")[0].partition("+")[0]


def id_lsn(chunk: str) -> Lsn:
    """The LSN of the version that wrote a chunk id."""
    return Lsn(int(chunk.rpartition("@")[2]))


@dataclass(frozen=True, slots=True)
class Version:
    lsn: Lsn
    chunks: tuple[str, ...] = ()
    deleted: bool = False
    meta: str = ""  # fingerprint of the metadata its chunks carry (see `metadata_fingerprint`)

    @property
    def value(self) -> str:
        """The manifest field value of this version: `-`, or `<meta>;<id>,<id>,...`."""
        return DELETED if self.deleted else f"{self.meta};{','.join(self.chunks)}"


@dataclass(frozen=True, slots=True)
class Manifest:
    """A row's versions, newest first (empty for a row Redis has never held)."""

    versions: tuple[Version, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[bytes, bytes] | Mapping[str, str]) -> Manifest:
        versions = []
        for field, value in raw.items():
            name = field.decode() if isinstance(field, bytes) else field
            if not name.isdigit():
                continue  # not a version (room for other fields)
            text = value.decode() if isinstance(value, bytes) else value
            lsn = Lsn(int(name))
            if text == DELETED:
                versions.append(Version(lsn, deleted=True))
                continue
            meta, _, ids = text.rpartition(";")
            versions.append(Version(lsn, tuple(ids.split(",")) if ids else (), meta=meta))
        return cls(tuple(sorted(versions, key=lambda v: v.lsn, reverse=True)))

    @property
    def newest(self) -> Version | None:
        return self.versions[0] if self.versions else None

    def at(self, visible: Lsn) -> Version | None:
        """The newest version a reader at `visible` can see, deleted or not."""
        return next((v for v in self.versions if v.lsn <= visible), None)

    def current(self, visible: Lsn, floor: Lsn | None = None) -> Version | None:
        """The version a reader at `visible` sees as the row, or None when, at `visible`, the row
        does not exist (never written, deleted, or below its table's truncate floor)."""
        version = self.at(visible)
        if version is None or version.deleted or (floor is not None and version.lsn < floor):
            return None
        return version

    def pending(self, visible: Lsn) -> list[Version]:
        """Versions not visible yet at `visible`."""
        return [v for v in self.versions if v.lsn > visible]

    def collect(self, settled: Lsn, floor: Lsn | None = None) -> Garbage:
        """What garbage collection may remove once every reader is at or past `settled` (the
        visible LSN of a grace period ago): every version older than the one current at
        `settled`; that one too when it is below the table's floor, or a delete that a newer
        version follows; and the chunks no remaining version lists. A delete with nothing after
        it stays, as the row's tombstone."""
        keep_from = self.at(settled)
        if keep_from is None:
            return Garbage()
        newer = [v for v in self.versions if v.lsn > keep_from.lsn]
        below_floor = floor is not None and keep_from.lsn < floor
        drop_it = below_floor or (keep_from.deleted and bool(newer))
        kept = newer if drop_it else [*newer, keep_from]
        dropped = [
            v for v in self.versions if v.lsn < keep_from.lsn or (drop_it and v is keep_from)
        ]
        return Garbage(
            tuple(dropped),
            _unlisted(dropped, kept),
            row_gone=not kept,
            tomb=kept == [keep_from] and keep_from.deleted,
        )


@dataclass(frozen=True, slots=True)
class Garbage:
    versions: tuple[Version, ...] = ()  # manifest fields to delete
    chunks: tuple[str, ...] = ()  # chunk ids to delete
    row_gone: bool = False  # no version is left: the manifest itself can go
    tomb: bool = False  # only the row's delete is left: it stays, with the tombstone TTL

    def __bool__(self) -> bool:
        return bool(self.versions or self.chunks)


def _unlisted(dropped: Iterable[Version], kept: Iterable[Version]) -> tuple[str, ...]:
    listed = {c for v in kept for c in v.chunks}
    return tuple(dict.fromkeys(c for v in dropped for c in v.chunks if c not in listed))


def metadata_fingerprint(fields: Mapping[str, str | float]) -> str:
    """A short digest of a row's metadata fields: a version whose metadata differs from its
    base's cannot keep the base's chunks (their hashes carry the metadata filters use)."""
    if not fields:
        return ""
    text = "\x1f".join(f"{k}\x1e{v!r}" for k, v in sorted(fields.items()))
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def floor_at(floors: Iterable[Lsn], visible: Lsn) -> Lsn | None:
    """The truncate floor a reader at `visible` honours: the newest one at or below it."""
    return max((f for f in floors if f <= visible), default=None)


def parse_floors(raw: Mapping[bytes, bytes] | Mapping[str, str]) -> list[Lsn]:
    names = (f.decode() if isinstance(f, bytes) else f for f in raw)
    return [Lsn(int(name)) for name in names if name.isdigit()]


def assign_ids(hashes: Sequence[str], lsn: Lsn, base: Version | None) -> tuple[str, ...]:
    """Chunk ids for a new version at `lsn` with chunk texts `hashes` (in order): a text the
    base version already has keeps its id (as many times as the base has it), the rest get
    ids at `lsn`."""
    reusable: dict[str, list[str]] = {}
    for chunk in base.chunks if base is not None and not base.deleted else ():
        reusable.setdefault(id_text_hash(chunk), []).append(chunk)
    seen: dict[str, int] = {}
    ids = []
    for digest in hashes:
        repeat = seen.get(digest, 0)
        seen[digest] = repeat + 1
        old = reusable.get(digest)
        ids.append(old.pop(0) if old else chunk_id(digest, lsn, repeat))
    return tuple(ids)
