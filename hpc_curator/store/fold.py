"""The journals of a large run, folded in bounded memory: the manifest and the resume scan.

One in-memory :func:`~hpc_curator.store.journal.scan` of 10^8 indices does not fit rank 0 (numpy
columns alone are ~60 bytes an index, and parsing needs several times that). Above
``max_rows`` frozen indices (:data:`ROWS_ENV`, default :data:`DEFAULT_ROWS`) the journals are
read in parts (:func:`~hpc_curator.store.journal.scan_parts`) instead:

* :func:`fold` adds up what the summary takes from every record (busy and CPU time, first and
  last commit, output count) and spills each part's rows, bucketed by index value, to one
  Arrow IPC stream per bucket under ``D/manifest-spill``;
* :func:`summarize` reads one bucket at a time, keeps each index's latest row, adds it to the
  summary (:class:`~hpc_curator.store.rows.Tally`) and appends it to ``manifest.parquet`` under a
  temporary name; :func:`write` renames that into place, writes ``manifest.json`` last and
  removes the spill.
* :func:`status` is the resume scan: each frozen index's latest status in one int8 per index.

Peak memory is the frozen index list plus one part plus one bucket, and the time is linear.
A run within ``max_rows`` takes the in-memory path of :mod:`hpc_curator.store.manifest` unchanged;
both paths build rows and sums with :mod:`hpc_curator.store.rows`, so they write the same manifest.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from hpc_curator.engine import stages
from hpc_curator.model import partition
from hpc_curator.store import journal, ledger, manifest, rundir
from hpc_curator.store.arrow import column
from hpc_curator.store.atomic import fsync_dir, fsync_file
from hpc_curator.store.journal import JournalScan, latest_positions, scan, scan_parts
from hpc_curator.store.rows import ERROR_KEYS, Rows, Tally, has_values
from hpc_curator.store.rows import table as rows_table

#: environment variable: frozen indices above which the journals are folded in parts
ROWS_ENV = "HPC_CURATOR_MANIFEST_ROWS"
DEFAULT_ROWS = 250_000
#: most index buckets (open spill files at once); above it a bucket holds more than a part
MAX_BUCKETS = 256
_NUMERIC = (
    ("idx", "int64"),
    ("ok", "int8"),
    ("attempt", "int32"),
    ("rank", "int32"),
    ("worker", "int32"),
    ("wall", "float64"),
    ("cpu", "float64"),
    ("rss", "int64"),
    ("time", "float64"),
    ("pymem", "float64"),
    ("gpumem", "float64"),
)
_TABLE = "manifest.parquet"


def max_rows() -> int:
    """Rows per part of a folded scan (:data:`ROWS_ENV`, at least 1,000)."""
    try:
        return max(1000, int(os.environ.get(ROWS_ENV, DEFAULT_ROWS)))
    except ValueError:
        return DEFAULT_ROWS


@dataclass
class Folded:
    """The journals of a run, read once for its end.

    ``scan`` is the whole scan when the run fits in memory (``spilled`` false), else the last
    part, whose run-wide members (segments, workers, ends, torn lines...) are complete.
    """

    scan: JournalScan
    spilled: bool = False
    tally: Tally = field(default_factory=Tally)
    buckets: int = 0
    stage_width: int = 0
    tracked: tuple[str, ...] = ()
    #: the spill directory (``D/manifest-spill``) when spilled
    spill: Path | None = None
    #: ``run.json`` as :func:`fold` read it (spilled runs: not read and hashed a second time)
    info: rundir.RunInfo | None = None

    @property
    def segments(self) -> dict[str, list[str]]:
        return self.scan.segments

    @property
    def segment_sums(self) -> dict[tuple[str, str], list[Any]]:
        return self.scan.segment_sums

    @property
    def ends(self) -> dict[tuple[int, int], dict[str, Any]]:
        return self.scan.ends


def fold(
    rd: rundir.RunDir, rows: int | None = None, blocks: dict[str, Any] | None = None
) -> Folded:
    """Read the journals of ``rd`` for the end of an attempt (in parts above ``rows``);
    ``blocks``: journals read already (:func:`hpc_curator.engine.gather.own_journal`)."""
    rows = max_rows() if rows is None else rows
    info = rundir.load(rd)
    frozen = info.indices
    if len(frozen) <= rows:
        return Folded(scan(rd, blocks=blocks))
    lookup = _Frozen(rd, frozen)
    drops = journal.dropped_records(rd)
    try:
        return _fold_parts(rd, rows, info, lookup, drops, None)
    except _Conflict:
        verdict = ledger.rejected(rd, drops)
        return _fold_parts(rd, rows, info, lookup, drops | verdict.drops, verdict)


class _Conflict(Exception):
    """Two commits both hold a successful record of one index (the acceptance rule decides)."""


class _OkSeen:
    """Which frozen indices have a successful record so far (one byte per frozen index):
    finds a conflict for :mod:`hpc_curator.store.ledger` while the journals are read in parts."""

    def __init__(self, lookup: _Frozen, verdict: ledger.Verdict | None) -> None:
        self.lookup = lookup
        self.seen = np.zeros(len(lookup.frozen), dtype=bool) if verdict is None else None

    def add(self, part: JournalScan) -> None:
        if self.seen is None or not len(part.idx):
            return
        pos, member = self.lookup.positions(part.idx[part.ok == 1])
        pos = pos[member]
        if self.seen[pos].any() or len(np.unique(pos)) < len(pos):
            raise _Conflict()
        self.seen[pos] = True


def _fold_parts(
    rd: rundir.RunDir,
    rows: int,
    info: rundir.RunInfo,
    lookup: _Frozen,
    drops: set[tuple[str, int]],
    verdict: ledger.Verdict | None,
) -> Folded:
    import shutil

    frozen = info.indices
    shutil.rmtree(rd.spill_dir, ignore_errors=True)
    rd.spill_dir.mkdir()
    buckets = min(MAX_BUCKETS, max(1, math.ceil(len(frozen) / rows)))
    lo, hi = int(frozen.min()), int(frozen.max())
    span = hi - lo + 1
    writers: dict[int, Any] = {}
    folded: Folded | None = None
    seen = _OkSeen(lookup, verdict)
    report = verdict.report if verdict is not None else None
    try:
        for part in scan_parts(rd, max_rows=rows, drops=drops, rejected=report):
            seen.add(part)
            if folded is None:
                folded = Folded(part, spilled=True, buckets=buckets, spill=rd.spill_dir, info=info)
            folded.scan = part
            _spill(part, folded, writers, lo, span)
    finally:
        for writer in writers.values():
            writer.close()
    assert folded is not None
    return folded


def _spill(part: JournalScan, folded: Folded, writers: dict[int, Any], lo: int, span: int) -> None:
    import pyarrow as pa

    folded.tally.add_records(part.wall, part.cpu, part.time, manifest.count_outputs(part))
    if not len(part.idx):
        return
    rows = Rows.from_scan(part, np.arange(len(part.idx)))
    if rows.stages is not None:
        folded.stage_width = max(folded.stage_width, rows.stages.shape[1])
    folded.tracked = tuple(
        k for k in ("pymem", "gpumem") if k in folded.tracked or has_values(getattr(rows, k))
    )
    bucket = (rows.idx - lo) * folded.buckets // span
    np.clip(bucket, 0, folded.buckets - 1, out=bucket)
    order = np.argsort(bucket, kind="stable")  # journal order within a bucket: latest last
    edges = np.searchsorted(bucket[order], np.arange(folded.buckets + 1))
    batch = _batch(rows.take(order))
    for b in np.flatnonzero(np.diff(edges)).tolist():
        if b not in writers:
            writers[b] = pa.ipc.new_stream(str(_bucket(folded, b)), _schema())
        writers[b].write_batch(batch.slice(int(edges[b]), int(edges[b + 1] - edges[b])))


def _bucket(folded: Folded, b: int) -> Path:
    assert folded.spill is not None
    return folded.spill / f"bucket-{b:06d}.arrow"


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [(name, getattr(pa, kind)()) for name, kind in _NUMERIC]
        + [
            ("outputs", pa.list_(pa.string())),
            ("stages", pa.list_(pa.float64())),
            ("err", pa.string()),  # JSON of the failure's ERROR_KEYS; null for a success
        ]
    )


def _batch(rows: Rows) -> Any:
    """``rows`` as one record batch of the spill schema."""
    import pyarrow as pa

    n = len(rows)
    arrays = []
    for name, kind in _NUMERIC:
        values = getattr(rows, name)
        if name in ("pymem", "gpumem") and len(values) != n:
            values = np.full(n, np.nan)
        arrays.append(column(values, getattr(pa, kind)()))
    if rows.outputs is None:
        arrays.append(pa.nulls(n, pa.list_(pa.string())))
    else:
        out = rows.outputs
        out = out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out
        arrays.append(out.cast(pa.list_(pa.string())))
    if rows.stages is None or not rows.stages.shape[1]:
        arrays.append(pa.nulls(n, pa.list_(pa.float64())))
    else:
        width = rows.stages.shape[1]
        flat = column(rows.stages.ravel(), pa.float64())
        fixed = pa.FixedSizeListArray.from_arrays(flat, width)
        arrays.append(fixed.cast(pa.list_(pa.float64())))
    err: list[str | None] = [None] * n
    for row in np.flatnonzero(rows.ok == 0).tolist():
        doc = {key: rows.errors[key][row] for key in ERROR_KEYS} if rows.errors else {}
        err[row] = orjson.dumps(doc, default=repr).decode()
    arrays.append(pa.array(err, pa.string()))
    return pa.RecordBatch.from_arrays(arrays, schema=_schema())


def _read_bucket(path: Path, width: int) -> Rows:
    """The rows of one spill file (journal order), stage columns padded to ``width``."""
    import pyarrow as pa

    with pa.ipc.open_stream(str(path)) as reader:
        table = reader.read_all()
    n = table.num_rows
    cols = {name: table.column(name).to_numpy() for name, _ in _NUMERIC}
    stage_blocks = []
    for chunk in table.column("stages").chunks:
        block = np.full((len(chunk), width), np.nan)
        if width and chunk.null_count < len(chunk):
            flat = chunk.flatten().to_numpy(zero_copy_only=False)
            w = len(flat) // len(chunk)
            block[:, :w] = flat.reshape(len(chunk), w)
        stage_blocks.append(block)
    matrix = np.concatenate(stage_blocks) if stage_blocks else np.full((0, width), np.nan)
    errors = {key: np.full(n, None, dtype=object) for key in ERROR_KEYS}
    err = table.column("err").to_numpy(zero_copy_only=False)
    for row in np.flatnonzero(cols["ok"] == 0).tolist():
        if err[row] is not None:
            doc = orjson.loads(err[row])
            for key in ERROR_KEYS:
                errors[key][row] = doc.get(key)
    return Rows(
        idx=cols["idx"],
        ok=cols["ok"],
        attempt=cols["attempt"],
        rank=cols["rank"],
        worker=cols["worker"],
        wall=cols["wall"],
        cpu=cols["cpu"],
        rss=cols["rss"],
        time=cols["time"],
        outputs=table.column("outputs").combine_chunks(),
        stages=matrix if width else None,
        pymem=cols["pymem"],
        gpumem=cols["gpumem"],
        errors=errors,
    )


class _Frozen:
    """Membership in, and group labels of, the frozen index list (sorted once)."""

    def __init__(self, rd: rundir.RunDir, frozen: np.ndarray) -> None:
        self.frozen = frozen
        ordered = len(frozen) < 2 or bool(np.all(frozen[1:] > frozen[:-1]))
        self.sorter = None if ordered else np.argsort(frozen, kind="stable")
        self.labels = rd.load_groups()
        self.grouped: np.ndarray | None = None
        if self.labels is not None:
            _, inverse, counts = np.unique(self.labels, return_inverse=True, return_counts=True)
            self.grouped = counts[inverse] > 1

    def positions(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frozen positions of ``indices`` and whether each is frozen at all."""
        at = np.searchsorted(self.frozen, indices, sorter=self.sorter)
        at = np.minimum(at, max(len(self.frozen) - 1, 0))
        pos = at if self.sorter is None else self.sorter[at]
        member = self.frozen[pos] == indices if len(self.frozen) else np.zeros(len(indices), bool)
        return pos, member

    def group(self, pos: np.ndarray) -> Any:

        if self.labels is None or self.grouped is None:
            return None
        return column(self.labels[pos], mask=~self.grouped[pos])


def _status_parts(
    rd: rundir.RunDir,
    rows: int,
    lookup: _Frozen,
    drops: set[tuple[str, int]],
    verdict: ledger.Verdict | None,
) -> tuple[np.ndarray, JournalScan]:
    """Each frozen index's latest status (int8: -1 pending, 1 ok, 0 failed), a successful
    record winning over failures; raises :class:`_Conflict` when ``verdict`` is ``None`` and
    an index has two successful records."""
    state = np.full(len(lookup.frozen), -1, dtype=np.int8)
    seen = _OkSeen(lookup, verdict)
    last: JournalScan | None = None
    for part in scan_parts(rd, with_outputs=False, max_rows=rows, drops=drops):
        last = part
        if not len(part.idx):
            continue
        seen.add(part)
        pick = latest_positions(part.idx, part.ok)  # each index's current record in this part
        pos, member = lookup.positions(part.idx[pick])
        state[pos[member]] = np.maximum(state[pos[member]], part.ok[pick][member])
    assert last is not None
    return state, last


def summarize(
    rd: rundir.RunDir,
    folded: Folded,
    *,
    summaries: list[dict[str, Any]] | None = None,
    outputs: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The summary of :func:`manifest.summarize`; a spilled run also gets its table built
    (under a temporary name in the spill directory, put in place by :func:`write`)."""
    if not folded.spilled:
        return manifest.summarize(rd, folded.scan, summaries=summaries, outputs=outputs)
    import pyarrow.parquet as pq

    info = folded.info or rundir.load(rd)
    lookup = _Frozen(rd, info.indices)
    names = stages.recorded_names(folded.scan)
    tally = folded.tally
    assert folded.spill is not None
    writer = None
    try:
        for b in range(folded.buckets):
            path = _bucket(folded, b)
            if not path.exists():
                continue
            rows = _read_bucket(path, folded.stage_width)
            latest = rows.take(rows.latest())
            del rows
            pos, member = lookup.positions(latest.idx)
            tally.add_rows(latest.take(np.flatnonzero(member)), folded.scan.workers)
            table = rows_table(
                latest,
                folded.scan.worker_info,
                names,
                lookup.group(pos),
                stage_width=folded.stage_width,
                tracked=folded.tracked,
            )
            if writer is None:
                options = manifest.parquet_options(table.schema)
                writer = pq.ParquetWriter(str(folded.spill / _TABLE), table.schema, **options)
            writer.write_table(table)
            path.unlink()
        if writer is None:  # no index recorded yet: the in-memory path's empty table
            empty = manifest.build_table(rd, folded.scan)
            options = manifest.parquet_options(empty.schema)
            pq.write_table(empty, str(folded.spill / _TABLE), **options)
    finally:
        if writer is not None:
            writer.close()
    return manifest.document(rd, info, tally, folded.scan, summaries=summaries, outputs=outputs)


def write(rd: rundir.RunDir, folded: Folded, doc: dict[str, Any], attempt: int) -> None:
    """Write the manifest: :func:`manifest.write`, or for a spilled run put the table built
    by :func:`summarize` in place, then ``manifest.json`` (last), then drop the spill."""
    if not folded.spilled:
        manifest.write(rd, folded.scan, doc, attempt)
        return
    assert folded.spill is not None
    table = folded.spill / _TABLE
    fsync_file(table)
    os.replace(table, rd.manifest_parquet)
    fsync_dir(rd.path)
    manifest.write_document(rd, doc, attempt)
    import shutil

    shutil.rmtree(folded.spill, ignore_errors=True)


@dataclass
class Status:
    """What the start of an attempt needs from the journals (:func:`status`)."""

    #: indices with a committed record (ok or failed) / whose latest record failed
    recorded_idx: np.ndarray
    failed_idx: np.ndarray
    ends: dict[tuple[int, int], dict[str, Any]]
    #: the frozen indices with no record, in frozen order
    pending_idx: np.ndarray

    def recorded(self) -> np.ndarray:
        """Indices with a committed record (ok or failed), sorted."""
        return self.recorded_idx

    def failed_indices(self) -> np.ndarray:
        """Indices whose latest record failed."""
        return self.failed_idx

    def pending(self) -> np.ndarray:
        """Frozen indices with no committed record, in frozen order."""
        return self.pending_idx


def status(rd: rundir.RunDir, frozen: np.ndarray, rows: int | None = None) -> Status:
    """Each frozen index's latest status, the journals read in parts of ``rows`` records.

    One int8 per frozen index (-1 pending, 1 ok, 0 failed), the records of a part applied in
    journal order (the latest wins); records of indices not frozen count for nothing.
    """
    rows = max_rows() if rows is None else rows
    if len(frozen) <= rows:
        whole = scan(rd, with_outputs=False)
        recorded = whole.recorded()
        pending = partition.pending(frozen, recorded)
        return Status(recorded, whole.failed_indices(), whole.ends, pending)
    lookup = _Frozen(rd, frozen)
    drops = journal.dropped_records(rd)
    try:
        state, last = _status_parts(rd, rows, lookup, drops, None)
    except _Conflict:
        verdict = ledger.rejected(rd, drops)
        state, last = _status_parts(rd, rows, lookup, drops | verdict.drops, verdict)
    # state is by frozen position: no isin over the whole list, and sorted already if frozen is
    pending = frozen[state < 0]
    recorded, failed = frozen[state >= 0], frozen[state == 0]
    if lookup.sorter is not None:
        recorded.sort()
        failed.sort()
    return Status(recorded, failed, last.ends, pending)
