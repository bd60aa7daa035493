"""Reading journals: the commit records a scan keeps, as columns, and joining them.

:func:`journal_commits` reads one journal line by line (torn lines, malformed and repeated
records and invalidated commits go into :class:`Shared`); :class:`Part` turns consecutive
commits into per-index columns. :func:`read_block` reads some journals into one
``(Part, Shared)`` and :func:`join` puts blocks of consecutive journals together exactly as
one read of all of them would: at the end of an attempt every rank reads the journal it
wrote (:func:`hpc_curator.engine.gather.merge_tree`), so rank 0 reads only the others.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from hpc_curator.store.records import commit_problem, parse_line
from hpc_curator.store.rundir import RunDir

OUT_KEY = b',"out":'


def split_outputs(line: bytes) -> tuple[bytes, bytes | None]:
    """Cut a commit line's trailing ``"out"`` member off before parsing (it is the bulk).

    Returns the line without that member and the member's JSON text. Writers put ``"out"``
    last; inside JSON strings a quote is always escaped, so the first ``,"out":`` is the key
    itself, and ``],"`` cannot occur inside a list of lists of strings -- if it does, members
    follow ``"out"`` (a writer that did not put it last) and the line is returned whole, with
    ``None``. A torn line stays torn (no trailing newline is added).
    """
    cut = line.find(OUT_KEY)
    if cut < 0 or not line.endswith(b"}\n"):
        return line, None
    raw = line[cut + len(OUT_KEY) : -2]
    if b'],"' in raw:
        return line, None
    return line[:cut] + b"}\n", raw


@dataclass
class Shared:
    """What a scan collects for the whole run (small: per journal or per commit, not index)."""

    #: ``(journal file name, seq)`` of commits that count for nothing: invalidated, or
    #: rejected by the acceptance rule (:mod:`hpc_curator.store.ledger`)
    drops: set[tuple[str, int]]
    segments: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    workers: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    ends: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    torn: dict[str, int] = field(default_factory=dict)
    segment_sums: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    bad: list[dict[str, Any]] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    worker_info: list[dict[str, Any]] = field(default_factory=list)
    #: commits the acceptance rule rejected (:class:`hpc_curator.store.ledger.Verdict` ``report``)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def journal_commits(
    path: Path, shared: Shared, with_outputs: bool
) -> Iterator[tuple[dict[str, Any], bytes | None, int, int, int]]:
    """The valid, not invalidated commit records of one journal, with their ``"out"`` text,
    attempt, rank and writer code; start/end records, torn lines, malformed and repeated
    records go into ``shared``."""
    attempt, rank = RunDir.parse_journal_name(path)
    code = len(shared.worker_info)
    shared.worker_info.append({})
    # one line at a time, and only a digest of each commit kept: a journal's records are
    # never all in memory (~250 bytes per index as Python objects)
    seen: dict[int, bytes] = {}
    for rec, raw in read_split(path, with_outputs, digests=True):
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
            line = rec.get(LINE)  # kept: the acceptance rule reports file:line
            line_digest = rec.pop(DIGEST, b"")
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
            if shared.drops and (path.name, rec["seq"]) in shared.drops:
                continue
            for name, digest in (rec.get("segsum") or {}).items():
                if name in rec["seg"]:
                    shared.segment_sums[(name, rec["seg"][name])] = digest
            for name, seg in rec.get("seg", {}).items():
                shared.segments[name].append(seg)
            yield rec, raw, attempt, rank, code


class Part:
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
        for key, dtype in COLUMNS:
            self.cols[key].append(np.asarray(rec[key], dtype=dtype))
        self.per_commit.append((n, attempt, rank, code, float(rec.get("time", 0.0))))
        if self.raw_outputs is not None:
            self.raw_outputs.append((n, raw))
        self.stage_records.append((n, stage_block(rec.get("stage"), n)))
        for key in ("pymem", "gpumem"):
            v = rec.get(key)
            if isinstance(v, list) and len(v) == n:
                self.optional[key].append((self.position, np.asarray(v, dtype=np.float64)))
        for pos, err in rec.get("err", {}).items():
            self.errors[self.position + int(pos)] = err
        self.position += n

    def columns(self, shared: Shared) -> dict[str, Any]:
        """The members of a :class:`~hpc_curator.store.journal.JournalScan` of these records."""

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

        return dict(
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
            segments=shared.segments,
            workers=shared.workers,
            ends=shared.ends,
            torn=shared.torn,
            segment_sums=shared.segment_sums,
            bad=shared.bad,
            duplicates=shared.duplicates,
            rejected=shared.rejected,
            stage_records=self.stage_records,
            pymem=spread("pymem"),
            gpumem=spread("gpumem"),
        )


#: per-index members of a commit record kept by :func:`scan`, with their array types
COLUMNS = (
    ("idx", np.int64),
    ("ok", np.int8),
    ("wall", np.float64),
    ("cpu", np.float64),
    ("rss", np.int64),
)


def stage_block(value: Any, n: int) -> Any:
    """A commit's per-index stage seconds as an ``(n, stages)`` array; ragged rows (crash
    records have none) stay a list; ``None`` when not recorded."""
    if not isinstance(value, list) or len(value) != n:
        return None
    try:
        block = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        return value
    return block if block.ndim == 2 else value


#: key under which :func:`read_split` leaves a commit record's line number (popped by scan)
LINE = "\x00line"
#: key of a commit line's digest (repeated lines are recognised by it)
DIGEST = "\x00digest"


def read_split(
    path: Path, with_outputs: bool, *, digests: bool = False
) -> Iterator[tuple[dict[str, Any] | None, bytes | None]]:
    """Records of one journal, one line at a time, parsed without ``"out"``, and that
    member's raw JSON; ``(None, None)`` for a torn or corrupt line. Commit records carry
    their line number and, with ``digests``, a digest of the line (popped by the readers)."""
    import hashlib

    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            head, raw = split_outputs(line)
            rec = parse_line(head)
            if rec is None:
                yield None, None
                continue
            if "out" in rec:  # the line could not be cut: "out" was parsed with the rest
                out = rec.pop("out")
                raw = orjson.dumps(out) if with_outputs else None
            if rec.get("t") == "commit":
                rec[LINE] = number
                if digests:
                    rec[DIGEST] = hashlib.blake2b(line, digest_size=16).digest()
            yield rec, raw if with_outputs else None


def read_block(
    paths: Sequence[Path], drops: set[tuple[str, int]], with_outputs: bool = True
) -> tuple[Part, Shared]:
    """The commit records of the journals ``paths`` (in this order) as one block."""
    import gc

    shared, part = Shared(drops=drops), Part(with_outputs)
    enabled = gc.isenabled()
    gc.disable()  # see journal.scan_parts
    try:
        for path in paths:
            for rec, raw, attempt, rank, code in journal_commits(path, shared, with_outputs):
                part.add(rec, raw, attempt, rank, code)
    finally:
        if enabled:
            gc.enable()
    return part, shared


def join(blocks: Sequence[tuple[Part, Shared]], with_outputs: bool = True) -> tuple[Part, Shared]:
    """Blocks of consecutive journals as one block: what :func:`read_block` of all their
    journals gives (positions, writer codes and error positions shifted; the run-wide
    members in journal order)."""
    part, shared = Part(with_outputs), Shared(drops=blocks[0][1].drops if blocks else set())
    for other, more in blocks:
        codes, start = len(shared.worker_info), part.position
        for key, arrays in other.cols.items():
            part.cols[key].extend(arrays)
        part.per_commit += [(n, a, r, code + codes, t) for n, a, r, code, t in other.per_commit]
        if part.raw_outputs is not None:
            if other.raw_outputs is None:
                raise ValueError("a block read without outputs cannot join one with them")
            part.raw_outputs += other.raw_outputs
        part.errors.update({start + pos: err for pos, err in other.errors.items()})
        part.stage_records += other.stage_records
        for key, values in other.optional.items():
            part.optional[key] += [(start + at, v) for at, v in values]
        part.position += other.position
        for name, segs in more.segments.items():
            shared.segments[name].extend(segs)
        shared.workers.update(more.workers)
        shared.ends.update(more.ends)
        shared.torn.update(more.torn)
        shared.segment_sums.update(more.segment_sums)
        shared.bad += more.bad
        shared.duplicates.update(more.duplicates)
        shared.rejected += more.rejected
        shared.worker_info += more.worker_info
    return part, shared
