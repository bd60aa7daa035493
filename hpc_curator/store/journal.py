"""Per-rank append-only journals: the durable record of what is done.

One file per (attempt, rank), written by exactly one process, one JSON object per line:

``{"t": "start", ...}``
    who is writing (rank, size, host, node, pid, job and step ids, attempt, time).
``{"t": "commit", "seq": k, ...}``
    the indices finished since the previous commit, column-wise — ``idx``, ``ok`` (1/0),
    ``wall``, ``cpu``, ``rss`` (bytes), ``out`` (list of paths per index), ``err`` (position →
    ``{"type", "msg", "tb"}`` for failures) — and ``seg``, the shard segment each stateful
    filter flushed just before (``{filter: file name}``).
``{"t": "end", ...}``
    the rank left its loop (reason, counts).

Durability: a commit line is written with a single ``write`` then flushed and fsynced. An index
is done exactly when a complete commit line naming it is on disk; its segment was renamed into
place before the line was written. A crash mid-write leaves a torn last line, which readers skip
and report (:attr:`JournalScan.torn`), never fatal. No locks and no shared files, so the journal
works on Lustre and GPFS.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from hpc_curator.model.partition import sorted_unique
from hpc_curator.store.arrow import list_values
from hpc_curator.store.journalread import LINE, Part, Shared, join, journal_commits, read_split
from hpc_curator.store.records import parse_line as parse_line
from hpc_curator.store.rundir import RunDir


class JournalWriter:
    """Append records to one journal file (the only writer of that file)."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        from hpc_curator.store.nofollow import ensure_dir, open_append_new

        ensure_dir(path.parent)
        self.path = path
        # created here, never opened twice and never through a symlink: the name carries
        # this process's writer token (RunDir.journal_path)
        self._fh = open_append_new(path)
        self._fsync = fsync

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably (one write, flush, fsync)."""
        self._fh.write(dumps(record))
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Close the file."""
        self._fh.close()


def dumps(record: dict[str, Any]) -> bytes:
    """One journal line (orjson: the journal is the per-commit hot path and the resume scan)."""
    return orjson.dumps(record, default=repr, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def _parse_outputs(commits: list[tuple[int, bytes | None]]) -> Any:
    """Output paths per position as an Arrow ``list<string>`` array.

    ``commits`` holds, per commit record, its number of indices and the JSON text of its
    ``"out"`` member. All of them are parsed in one pass by Arrow's JSON reader (C++, no
    Python object per path). A member that does not parse, or whose length is not the commit's
    index count, gives empty output lists for that commit, so positions always line up.
    """
    import io

    import pyarrow as pa
    import pyarrow.json as pj

    paths = pa.list_(pa.string())
    n_total = sum(n for n, _ in commits)
    if all(raw is not None for _, raw in commits) and commits:
        longest = max(len(raw) for _, raw in commits if raw is not None)
        buf = b"".join(b'{"o":' + raw + b"}\n" for _, raw in commits if raw is not None)
        try:
            table = pj.read_json(
                io.BytesIO(buf),
                # 1 MiB blocks in this thread: 200,000 indices in 9-36 ms instead of 33-96 ms
                # with 16 MiB blocks, and 7 MiB less memory (a line must fit in one block)
                read_options=pj.ReadOptions(
                    block_size=max(1 << 20, longest + 64), use_threads=False
                ),
                parse_options=pj.ParseOptions(
                    explicit_schema=pa.schema([("o", pa.list_(paths))]), newlines_in_values=False
                ),
            )
            per_index = list_values(table.column("o").chunks)
            if len(per_index) == n_total:
                return per_index
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    lists: list[list[str]] = []
    for n, raw in commits:  # slow path: one commit at a time, each checked
        try:
            value = orjson.loads(raw) if raw is not None else None
        except ValueError:
            value = None
        ok = isinstance(value, list) and len(value) == n and all(isinstance(v, list) for v in value)
        lists.extend(value if ok else [[] for _ in range(n)])  # type: ignore[arg-type]
    return pa.array(lists, paths)


def read_records(path: Path, *, with_outputs: bool = True) -> tuple[list[dict[str, Any]], int]:
    """Return the valid records of one journal and the number of torn/corrupt lines.

    With ``with_outputs=False`` commit records come back without their ``"out"`` lists
    (resume scans and progress need only indices and statuses; this halves their cost).
    """
    complete: list[dict[str, Any]] = []
    torn = 0
    for rec, raw in read_split(path, with_outputs):
        if rec is None:
            torn += 1
            continue
        rec.pop(LINE, None)
        try:
            if raw is not None:
                rec["out"] = orjson.loads(raw)
            complete.append(rec)
        except ValueError:
            torn += 1  # a corrupt "out" member makes the whole line corrupt
    return complete, torn


@dataclass
class JournalScan:
    """Everything the journals of a run directory say, column-wise.

    Per-index arrays are in journal order (attempt, rank, writer, commit); an index can
    appear more than once only if it failed and was retried: its successful record, else its
    last failure, is its current status (:meth:`latest`).
    """

    idx: np.ndarray
    ok: np.ndarray
    attempt: np.ndarray
    rank: np.ndarray
    wall: np.ndarray
    cpu: np.ndarray
    rss: np.ndarray
    time: np.ndarray
    #: per commit record: its index count and the JSON text of its ``"out"`` member (``None``
    #: when scanned without outputs); parsed on demand by :meth:`outputs_array`
    raw_outputs: list[tuple[int, bytes | None]] | None
    errors: dict[int, dict[str, Any]]
    segments: dict[str, list[str]]
    workers: dict[tuple[int, int], dict[str, Any]]
    #: per position, an index into :attr:`worker_info` (the start record of its writer)
    worker: np.ndarray
    worker_info: list[dict[str, Any]]
    ends: dict[tuple[int, int], dict[str, Any]]
    torn: dict[str, int] = field(default_factory=dict)
    #: ``{(filter, segment name): [bytes, sha256]}`` as recorded at commit time
    segment_sums: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    #: malformed commit records skipped: ``{"file", "line", "reason"}`` each
    bad: list[dict[str, Any]] = field(default_factory=list)
    #: exact repeats of a commit record (same attempt, rank, seq) skipped, per journal file
    duplicates: dict[str, int] = field(default_factory=dict)
    #: commits rejected by the acceptance rule (:mod:`hpc_curator.store.ledger`): one successful
    #: index accepted from another commit; ``{"file", "line", "seq", "reason"}`` each
    rejected: list[dict[str, Any]] = field(default_factory=list)
    #: per commit record: its index count and per-index stage seconds (``None``: not recorded)
    stage_records: list[tuple[int, Any]] = field(default_factory=list)
    #: per-index peak Python / GPU bytes (NaN where not tracked)
    pymem: np.ndarray = field(default_factory=lambda: np.empty(0))
    gpumem: np.ndarray = field(default_factory=lambda: np.empty(0))
    _outputs: Any = field(default=None, init=False, repr=False, compare=False)
    _stage_matrix: Any = field(default=None, init=False, repr=False, compare=False)
    _memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()``, computed once per scan: what several readers of one scan need (the
        manifest's summary and its table both take the latest rows)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def outputs_array(self) -> Any:
        """Output paths per position (Arrow ``list<string>``), or ``None`` without outputs."""
        if self.raw_outputs is None:
            return None
        if self._outputs is None:
            self._outputs = _parse_outputs(self.raw_outputs)
        return self._outputs

    def stage_matrix(self) -> Any:
        """Seconds per position and stage (:func:`hpc_curator.engine.stages.matrix`), built once:
        the manifest's summary and its table both need it."""
        from hpc_curator.engine import stages

        if self._stage_matrix is None:
            self._stage_matrix = stages.matrix(self)
        return self._stage_matrix

    @property
    def outputs(self) -> list[list[str]] | None:
        """Output paths per position as Python lists (small runs; see :meth:`outputs_array`)."""
        array = self.outputs_array()
        return None if array is None else array.to_pylist()

    def latest(self) -> np.ndarray:
        """Positions of the last occurrence of each index (current status), index-sorted."""
        return latest_positions(self.idx, self.ok)

    def recorded(self) -> np.ndarray:
        """Indices with a committed record (ok or failed)."""
        return sorted_unique(self.idx)

    def failed_indices(self) -> np.ndarray:
        """Indices whose current status is failed."""
        pos = self.latest()
        return self.idx[pos][self.ok[pos] == 0]


def latest_positions(idx: np.ndarray, ok: np.ndarray | None = None) -> np.ndarray:
    """Positions of each index's current record, sorted by index: its successful record if
    it has one (the acceptance rule leaves at most one), else its last failure in journal
    order (``ok`` omitted: the last occurrence)."""
    if len(idx) == 0:
        return np.empty(0, dtype=np.int64)
    if ok is None or len(ok) != len(idx) or bool(ok.all()):
        order = np.argsort(idx, kind="stable")  # equal indices keep journal order
    else:
        order = np.lexsort((ok, idx))  # by index, then failures before the success; stable
    ranked = idx[order]
    last = np.empty(len(ranked), dtype=bool)
    last[-1] = True
    np.not_equal(ranked[1:], ranked[:-1], out=last[:-1])
    return order[last]


def dropped_records(rd: RunDir) -> set[tuple[str, int]]:
    """``(journal file name, seq)`` of every commit record an invalidation took back.

    :mod:`hpc_curator.store.revise` writes one file per ``invalidate``; the records they name count
    for nothing (their indices are pending again, their segments are not merged). Files
    written before journals carried writer tokens name ``[attempt, rank, seq]``.
    """
    out: set[tuple[str, int]] = set()
    folder = rd.invalidations_dir
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        doc = orjson.loads(path.read_bytes())
        for record in doc["records"]:
            if len(record) == 3:  # [attempt, rank, seq]: a journal named without a token
                a, r, q = record
                out.add((f"a{int(a):04d}-rank{int(r):05d}.jsonl", int(q)))
            else:
                name, q = record
                out.add((str(name), int(q)))
    return out


def scan(
    rd: RunDir,
    *,
    with_outputs: bool = True,
    blocks: Mapping[str, tuple[Part, Shared]] | None = None,
) -> JournalScan:
    """Read every journal of ``rd`` into a :class:`JournalScan` (less invalidated records and
    the commits the acceptance rule rejects, :mod:`hpc_curator.store.ledger`).

    Holds the whole run in memory (about 120 bytes per recorded index without outputs); the
    manifest of a large run streams the journals instead (:func:`scan_parts`,
    :mod:`hpc_curator.store.fold`). ``blocks`` maps journal file names to what
    :func:`~hpc_curator.store.journalread.read_block` read from them already (the ranks' own
    journals at the end of an attempt); the other journals are read here, and the result is
    the same as reading them all.
    """
    from hpc_curator.store import ledger

    drops = dropped_records(rd)
    whole = _scan(rd, with_outputs, blocks, drops)
    if not ledger.has_conflicts(whole.idx, whole.ok):
        return whole
    verdict = ledger.rejected(rd, drops)
    whole = _scan(rd, with_outputs, None, drops | verdict.drops)
    whole.rejected = verdict.report
    return whole


def _scan(
    rd: RunDir,
    with_outputs: bool,
    blocks: Mapping[str, tuple[Part, Shared]] | None,
    drops: set[tuple[str, int]],
) -> JournalScan:
    if not blocks:
        (whole,) = scan_parts(rd, with_outputs=with_outputs, drops=drops)
        return whole
    from hpc_curator.store.journalread import read_block

    parts = []
    for path in rd.journal_files():
        given = blocks.get(path.name)
        parts.append(given if given is not None else read_block([path], drops, with_outputs))
    part, shared = join(parts, with_outputs)
    return JournalScan(**part.columns(shared))


def scan_parts(
    rd: RunDir,
    *,
    with_outputs: bool = True,
    max_rows: int | None = None,
    drops: set[tuple[str, int]] | None = None,
    rejected: list[dict[str, Any]] | None = None,
) -> Iterator[JournalScan]:
    """The journals of ``rd`` as consecutive :class:`JournalScan` parts of ``max_rows`` or so.

    Parts split at commit boundaries, in journal order: their per-index arrays concatenated
    are :func:`scan`'s. Positions in :attr:`JournalScan.errors` are part-local. The run-wide
    members (segments, workers, ends, torn, bad, ...) are objects shared by all parts and
    complete in the last one. ``max_rows=None``: one part. ``drops``: the commits that count
    for nothing (default: the invalidated ones); the caller applies the acceptance rule
    (:mod:`hpc_curator.store.ledger`) and passes its ``rejected`` report through.

    The cyclic garbage collector is paused while journals are read: a scan allocates millions
    of short-lived containers and no cycles, and each full collection would walk all of them
    (measured: 10^7 indices took 20x the time of 10^6 with it on).
    """
    shared = Shared(drops=dropped_records(rd) if drops is None else drops)
    shared.rejected = rejected or []
    part = Part(with_outputs)
    enabled = gc.isenabled()
    gc.disable()
    try:
        for path in rd.journal_files():
            for rec, raw, attempt, rank, code in journal_commits(path, shared, with_outputs):
                part.add(rec, raw, attempt, rank, code)
                if max_rows is not None and part.position >= max_rows:
                    full, part = part, Part(with_outputs)
                    if enabled:
                        gc.enable()
                    yield JournalScan(**full.columns(shared))
                    gc.disable()
    finally:
        if enabled:
            gc.enable()
    yield JournalScan(**part.columns(shared))
