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
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from hpc_curator.arrow import list_values
from hpc_curator.partition import sorted_unique
from hpc_curator.records import commit_problem
from hpc_curator.records import parse_line as parse_line
from hpc_curator.rundir import RunDir


class JournalWriter:
    """Append records to one journal file (the only writer of that file)."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh = open(path, "ab")
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


_OUT_KEY = b',"out":'


def _split_outputs(line: bytes) -> tuple[bytes, bytes | None]:
    """Cut a commit line's trailing ``"out"`` member off before parsing (it is the bulk).

    Returns the line without that member and the member's JSON text. Writers put ``"out"``
    last; inside JSON strings a quote is always escaped, so the first ``,"out":`` is the key
    itself, and ``],"`` cannot occur inside a list of lists of strings -- if it does, members
    follow ``"out"`` (a writer that did not put it last) and the line is returned whole, with
    ``None``. A torn line stays torn (no trailing newline is added).
    """
    cut = line.find(_OUT_KEY)
    if cut < 0 or not line.endswith(b"}\n"):
        return line, None
    raw = line[cut + len(_OUT_KEY) : -2]
    if b'],"' in raw:
        return line, None
    return line[:cut] + b"}\n", raw


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
    for rec, raw in _read_split(path, with_outputs):
        if rec is None:
            torn += 1
            continue
        rec.pop(_LINE, None)
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

    Per-index arrays are in journal order (attempt, rank, commit); an index can appear more
    than once only if it was retried, and the *last* occurrence is its current status.
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
    #: per commit record: its index count and per-index stage seconds (``None``: not recorded)
    stage_records: list[tuple[int, Any]] = field(default_factory=list)
    #: per-index peak Python / GPU bytes (NaN where not tracked)
    pymem: np.ndarray = field(default_factory=lambda: np.empty(0))
    gpumem: np.ndarray = field(default_factory=lambda: np.empty(0))
    _outputs: Any = field(default=None, init=False, repr=False, compare=False)
    _stage_matrix: Any = field(default=None, init=False, repr=False, compare=False)

    def outputs_array(self) -> Any:
        """Output paths per position (Arrow ``list<string>``), or ``None`` without outputs."""
        if self.raw_outputs is None:
            return None
        if self._outputs is None:
            self._outputs = _parse_outputs(self.raw_outputs)
        return self._outputs

    def stage_matrix(self) -> Any:
        """Seconds per position and stage (:func:`hpc_curator.stages.matrix`), built once:
        the manifest's summary and its table both need it."""
        from hpc_curator import stages

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
        return latest_positions(self.idx)

    def recorded(self) -> np.ndarray:
        """Indices with a committed record (ok or failed)."""
        return sorted_unique(self.idx)

    def failed_indices(self) -> np.ndarray:
        """Indices whose current status is failed."""
        pos = self.latest()
        return self.idx[pos][self.ok[pos] == 0]


def latest_positions(idx: np.ndarray) -> np.ndarray:
    """Positions of the last occurrence of each value of ``idx`` (journal order: its current
    record), sorted by value."""
    if len(idx) == 0:
        return np.empty(0, dtype=np.int64)
    order = np.argsort(idx, kind="stable")  # equal indices keep journal order
    ranked = idx[order]
    last = np.empty(len(ranked), dtype=bool)
    last[-1] = True
    np.not_equal(ranked[1:], ranked[:-1], out=last[:-1])
    return order[last]


def dropped_records(rd: RunDir) -> set[tuple[int, int, int]]:
    """``(attempt, rank, seq)`` of every commit record an invalidation took back.

    :mod:`hpc_curator.revise` writes one file per ``invalidate``; the records they name count
    for nothing (their indices are pending again, their segments are not merged).
    """
    out: set[tuple[int, int, int]] = set()
    folder = rd.invalidations_dir
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        doc = orjson.loads(path.read_bytes())
        out.update((int(a), int(r), int(q)) for a, r, q in doc["records"])
    return out


def scan(rd: RunDir, *, with_outputs: bool = True) -> JournalScan:
    """Read every journal of ``rd`` into a :class:`JournalScan` (less invalidated records).

    Holds the whole run in memory (about 120 bytes per recorded index without outputs); the
    manifest of a large run streams the journals instead (:func:`scan_parts`,
    :mod:`hpc_curator.fold`).
    """
    (whole,) = scan_parts(rd, with_outputs=with_outputs)
    return whole


def scan_parts(
    rd: RunDir, *, with_outputs: bool = True, max_rows: int | None = None
) -> Iterator[JournalScan]:
    """The journals of ``rd`` as consecutive :class:`JournalScan` parts of ``max_rows`` or so.

    Parts split at commit boundaries, in journal order: their per-index arrays concatenated
    are :func:`scan`'s. Positions in :attr:`JournalScan.errors` are part-local. The run-wide
    members (segments, workers, ends, torn, bad, ...) are objects shared by all parts and
    complete in the last one. ``max_rows=None``: one part.

    The cyclic garbage collector is paused while journals are read: a scan allocates millions
    of short-lived containers and no cycles, and each full collection would walk all of them
    (measured: 10^7 indices took 20x the time of 10^6 with it on).
    """
    shared = _Shared(drops=dropped_records(rd))
    part = _Part(with_outputs)
    enabled = gc.isenabled()
    gc.disable()
    try:
        for path in rd.journal_files():
            for rec, raw, attempt, rank, code in _journal_commits(path, shared, with_outputs):
                part.add(rec, raw, attempt, rank, code)
                if max_rows is not None and part.position >= max_rows:
                    full, part = part, _Part(with_outputs)
                    if enabled:
                        gc.enable()
                    yield full.build(shared)
                    gc.disable()
    finally:
        if enabled:
            gc.enable()
    yield part.build(shared)


@dataclass
class _Shared:
    """What a scan collects for the whole run (small: per journal or per commit, not index)."""

    drops: set[tuple[int, int, int]]
    segments: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    workers: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    ends: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    torn: dict[str, int] = field(default_factory=dict)
    segment_sums: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    bad: list[dict[str, Any]] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    worker_info: list[dict[str, Any]] = field(default_factory=list)


def _journal_commits(
    path: Path, shared: _Shared, with_outputs: bool
) -> Iterator[tuple[dict[str, Any], bytes | None, int, int, int]]:
    """The valid, not invalidated commit records of one journal, with their ``"out"`` text,
    attempt, rank and writer code; start/end records, torn lines, malformed and repeated
    records go into ``shared``."""
    attempt, rank = _attempt_rank(path)
    code = len(shared.worker_info)
    shared.worker_info.append({})
    # one line at a time, and only a digest of each commit kept: a journal's records are
    # never all in memory (~250 bytes per index as Python objects)
    seen: dict[int, bytes] = {}
    for rec, raw in _read_split(path, with_outputs, digests=True):
        if rec is None:
            shared.torn[path.name] = shared.torn.get(path.name, 0) + 1
            continue
        kind = rec.get("t")
        if kind == "start":
            shared.workers[(attempt, rank)] = rec
            shared.worker_info[code] = rec
        elif kind == "end":
            shared.ends[(attempt, rank)] = rec
        elif kind == "commit":
            line = rec.pop(_LINE, None)
            line_digest = rec.pop(_DIGEST, b"")
            problem = commit_problem(rec)
            if problem is None and rec["seq"] in seen:
                if seen[rec["seq"]] == line_digest:  # the same line written again
                    shared.duplicates[path.name] = shared.duplicates.get(path.name, 0) + 1
                    continue
                problem = f"a second commit record with seq {rec['seq']}"
            if problem is not None:
                shared.bad.append({"file": str(path), "line": line, "reason": problem})
                continue
            seen[rec["seq"]] = line_digest
            if shared.drops and (attempt, rank, rec["seq"]) in shared.drops:
                continue
            for name, digest in (rec.get("segsum") or {}).items():
                if name in rec["seg"]:
                    shared.segment_sums[(name, rec["seg"][name])] = digest
            for name, seg in rec.get("seg", {}).items():
                shared.segments[name].append(seg)
            yield rec, raw, attempt, rank, code


class _Part:
    """Per-index columns of consecutive commit records, turned into numpy per commit (the
    record's Python lists, ~200 bytes per index, are freed with it)."""

    def __init__(self, with_outputs: bool) -> None:
        self.cols: dict[str, list[np.ndarray]] = defaultdict(list)
        self.raw_outputs: list[tuple[int, bytes | None]] | None = [] if with_outputs else None
        self.errors: dict[int, dict[str, Any]] = {}
        self.stage_records: list[tuple[int, Any]] = []
        self.per_commit: list[tuple[int, int, int, int, float]] = []  # n, a, rank, code, time
        self.optional: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)
        self.position = 0

    def add(
        self, rec: dict[str, Any], raw: bytes | None, attempt: int, rank: int, code: int
    ) -> None:
        n = len(rec["idx"])
        for key, dtype in _COLUMNS:
            self.cols[key].append(np.asarray(rec[key], dtype=dtype))
        self.per_commit.append((n, attempt, rank, code, float(rec.get("time", 0.0))))
        if self.raw_outputs is not None:
            self.raw_outputs.append((n, raw))
        self.stage_records.append((n, _stage_block(rec.get("stage"), n)))
        for key in ("pymem", "gpumem"):
            v = rec.get(key)
            if isinstance(v, list) and len(v) == n:
                self.optional[key].append((self.position, np.asarray(v, dtype=np.float64)))
        for pos, err in rec.get("err", {}).items():
            self.errors[self.position + int(pos)] = err
        self.position += n

    def build(self, shared: _Shared) -> JournalScan:
        def cat(key: str, dtype: Any) -> np.ndarray:
            parts = self.cols.pop(key, None)
            return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

        counts = np.array([c[0] for c in self.per_commit], dtype=np.int64)

        def repeat(k: int, dtype: Any) -> np.ndarray:
            return np.repeat(np.array([c[k] for c in self.per_commit], dtype=dtype), counts)

        def spread(key: str) -> np.ndarray:
            """A column only some commits carry (NaN elsewhere); empty when none does."""
            if not self.optional.get(key):
                return np.empty(0)
            out = np.full(self.position, np.nan)
            for at, values in self.optional[key]:
                out[at : at + len(values)] = values
            return out

        return JournalScan(
            idx=cat("idx", np.int64),
            ok=cat("ok", np.int8),
            attempt=repeat(1, np.int32),
            rank=repeat(2, np.int32),
            worker=repeat(3, np.int32),
            worker_info=shared.worker_info,
            wall=cat("wall", np.float64),
            cpu=cat("cpu", np.float64),
            rss=cat("rss", np.int64),
            time=repeat(4, np.float64),
            raw_outputs=self.raw_outputs,
            errors=self.errors,
            segments=shared.segments,  # type: ignore[arg-type]
            workers=shared.workers,
            ends=shared.ends,
            torn=shared.torn,
            segment_sums=shared.segment_sums,
            bad=shared.bad,
            duplicates=shared.duplicates,
            stage_records=self.stage_records,
            pymem=spread("pymem"),
            gpumem=spread("gpumem"),
        )


#: per-index members of a commit record kept by :func:`scan`, with their array types
_COLUMNS = (
    ("idx", np.int64),
    ("ok", np.int8),
    ("wall", np.float64),
    ("cpu", np.float64),
    ("rss", np.int64),
)


def _stage_block(value: Any, n: int) -> Any:
    """A commit's per-index stage seconds as an ``(n, stages)`` array; ragged rows (crash
    records have none) stay a list; ``None`` when not recorded."""
    if not isinstance(value, list) or len(value) != n:
        return None
    try:
        block = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        return value
    return block if block.ndim == 2 else value


#: key under which :func:`_read_split` leaves a commit record's line number (popped by scan)
_LINE = "\x00line"
#: key of a commit line's digest (repeated lines are recognised by it)
_DIGEST = "\x00digest"


def _read_split(
    path: Path, with_outputs: bool, *, digests: bool = False
) -> Iterator[tuple[dict[str, Any] | None, bytes | None]]:
    """Records of one journal, one line at a time, parsed without ``"out"``, and that
    member's raw JSON; ``(None, None)`` for a torn or corrupt line. Commit records carry
    their line number and, with ``digests``, a digest of the line (popped by the readers)."""
    import hashlib

    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            head, raw = _split_outputs(line)
            rec = parse_line(head)
            if rec is None:
                yield None, None
                continue
            if "out" in rec:  # the line could not be cut: "out" was parsed with the rest
                out = rec.pop("out")
                raw = orjson.dumps(out) if with_outputs else None
            if rec.get("t") == "commit":
                rec[_LINE] = number
                if digests:
                    rec[_DIGEST] = hashlib.blake2b(line, digest_size=16).digest()
            yield rec, raw if with_outputs else None


_attempt_rank = RunDir.parse_journal_name
