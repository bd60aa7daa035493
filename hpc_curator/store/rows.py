"""Manifest rows: each index's latest record, column-wise, and what the summary adds up.

:class:`Rows` is one block of rows as numpy arrays. It comes from an in-memory journal scan
(:meth:`Rows.from_scan`) or from a bucket of a streamed one (:mod:`hpc_curator.store.fold`); the
Arrow table of ``manifest.parquet`` (:func:`table`) and the summary's counts, failures and
stage totals (:class:`Tally`) are computed from it the same way in both cases, so a manifest
streamed bucket by bucket equals the one built in memory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from hpc_curator.engine import stages
from hpc_curator.store.arrow import column, take
from hpc_curator.store.journal import JournalScan, latest_positions

#: most failures listed in ``manifest.json`` (all of them are in ``manifest.parquet``)
MAX_LISTED_FAILURES = 100
#: per-failure members of a journal's ``err`` (``type``, ``msg``, ``tb``, ``stage``, ``log``)
ERROR_KEYS = ("type", "msg", "tb", "stage", "log")


@dataclass
class Rows:
    """Rows of the manifest, one per index (or per record before de-duplication)."""

    idx: np.ndarray
    ok: np.ndarray
    attempt: np.ndarray
    rank: np.ndarray
    #: the writer of each row: an index into the scan's ``worker_info`` (its start record)
    worker: np.ndarray
    wall: np.ndarray
    cpu: np.ndarray
    rss: np.ndarray
    time: np.ndarray
    #: output paths (Arrow ``list<string>``), ``None`` when scanned without outputs
    outputs: Any
    #: seconds per row and stage, NaN where not recorded; ``None`` when no row has any
    stages: np.ndarray | None
    #: peak Python / GPU bytes per row (NaN: not tracked); empty when no row tracked them
    pymem: np.ndarray
    gpumem: np.ndarray
    #: :data:`ERROR_KEYS` -> object array (``None`` where the row has no error record)
    errors: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.idx)

    @classmethod
    def from_scan(cls, scan: JournalScan, pos: np.ndarray) -> Rows:
        """The rows at scan positions ``pos``."""
        ok = scan.ok[pos]
        failed = np.flatnonzero(ok == 0)
        errors: dict[str, np.ndarray] = {}  # no error columns at all when nothing failed
        if len(failed):
            errors = {key: np.full(len(pos), None, dtype=object) for key in ERROR_KEYS}
        for row in failed:
            err = scan.errors.get(int(pos[row])) or {}
            for key in ERROR_KEYS:
                errors[key][row] = err.get(key)
        matrix = scan.stage_matrix()
        outputs = scan.outputs_array()
        return cls(
            idx=scan.idx[pos],
            ok=ok,
            attempt=scan.attempt[pos],
            rank=scan.rank[pos],
            worker=scan.worker[pos],
            wall=scan.wall[pos],
            cpu=scan.cpu[pos],
            rss=scan.rss[pos],
            time=scan.time[pos],
            outputs=None if outputs is None else take(outputs, pos),
            stages=None if matrix is None else matrix[pos],
            pymem=scan.pymem[pos] if len(scan.pymem) else np.empty(0),
            gpumem=scan.gpumem[pos] if len(scan.gpumem) else np.empty(0),
            errors=errors,
        )

    def take(self, sel: np.ndarray) -> Rows:
        """The rows at positions ``sel``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "errors":
                out[f.name] = {k: v[sel] for k, v in value.items()}
            elif f.name == "outputs":
                out[f.name] = None if value is None else take(value, sel)
            elif value is None or (value.ndim == 1 and len(value) == 0 and len(sel)):
                out[f.name] = value  # absent column (stages None, pymem not tracked)
            else:
                out[f.name] = value[sel]
        return Rows(**out)

    def latest(self) -> np.ndarray:
        """Positions of each index's current row (its success, else its last failure in
        journal order), index-sorted."""
        return latest_positions(self.idx, self.ok)


def table(
    rows: Rows,
    worker_info: list[dict[str, Any]],
    stage_names: list[str],
    group: Any = None,
    *,
    stage_width: int | None = None,
    tracked: tuple[str, ...] | None = None,
) -> Any:
    """The Arrow table of ``manifest.parquet`` for ``rows`` (built column-wise, in C).

    ``stage_width`` (stage columns) and ``tracked`` (``"pymem"``/``"gpumem"`` columns) fix
    the columns for every block of a streamed manifest; by default they follow ``rows``.
    """
    import pyarrow as pa

    ok = rows.ok == 1
    n = len(rows)
    columns: dict[str, Any] = {
        "index": column(rows.idx, pa.int64()),
        "status": pa.DictionaryArray.from_arrays(
            column(np.where(ok, 0, 1), pa.int32()), pa.array(["ok", "failed"])
        ),
        "attempt": column(rows.attempt, pa.int32()),
        "rank": column(rows.rank, pa.int32()),
        **_placement(rows.worker, worker_info),
        "wall_s": column(rows.wall, pa.float64()),
        "cpu_s": column(rows.cpu, pa.float64()),
        "peak_rss": column(rows.rss, pa.int64()),
        "committed_at": column(rows.time, pa.float64()),
        "outputs": rows.outputs
        if rows.outputs is not None
        else pa.array([[]] * n, pa.list_(pa.string())),
    }
    if group is not None:
        columns["group"] = group
    if stage_width is None:
        stage_width = 0 if rows.stages is None else rows.stages.shape[1]
    for k, name in enumerate(stage_names[:stage_width]):  # seconds per stage (stages.py)
        have = rows.stages is not None and k < rows.stages.shape[1]
        col = rows.stages[:, k] if have else np.full(n, np.nan)  # type: ignore[index]
        columns[f"time_{name}"] = column(col, pa.float64(), mask=np.isnan(col))
    if tracked is None:
        tracked = tuple(k for k in ("pymem", "gpumem") if has_values(getattr(rows, k)))
    for key, name in (("pymem", "py_peak_bytes"), ("gpumem", "gpu_peak_bytes")):
        if key in tracked:
            values = getattr(rows, key)
            values = values if len(values) == n else np.full(n, np.nan)
            missing = np.isnan(values)
            columns[name] = column(np.where(missing, 0, values), pa.int64(), mask=missing)
    for key, name in (("type", "error_type"), ("msg", "error_message"), ("tb", "traceback")):
        text = rows.errors.get(key)
        if text is None or len(text) != n or ok.all():
            columns[name] = pa.nulls(n, pa.string())
        else:
            columns[name] = pa.array(np.where(ok, np.array(None), text).tolist(), pa.string())
    return pa.table(columns)


def has_values(values: np.ndarray) -> bool:
    """Whether an optional column (NaN: not recorded) has any value."""
    return bool(len(values)) and not bool(np.isnan(values).all())


def _placement(codes: np.ndarray, worker_info: list[dict[str, Any]]) -> dict[str, Any]:
    """Host, node, pid and job id of the worker that recorded each row (dictionary-encoded).

    Built with numpy indexing and dictionary arrays, not Arrow's ``take``: that would import
    ``pyarrow.compute`` (~30 ms and ~10 MB in rank 0 of every run) for a per-worker lookup.
    """
    import pyarrow as pa

    codes = np.asarray(codes, dtype=np.int64)
    out = {}
    for name in ("host", "node", "job_id"):
        values = [_text(w.get(name)) for w in worker_info]
        distinct = sorted({v for v in values if v is not None})
        slot = {v: k for k, v in enumerate(distinct)}
        per_worker = np.array([-1 if v is None else slot[v] for v in values], dtype=np.int32)
        picked = per_worker[codes]
        out[name] = pa.DictionaryArray.from_arrays(
            column(picked, pa.int32(), mask=picked < 0), pa.array(distinct, pa.string())
        )
    pids = [w.get("pid") for w in worker_info]
    known = np.array([p is not None for p in pids], dtype=bool)
    pid = np.array([p if p is not None else 0 for p in pids], dtype=np.int64)
    out["pid"] = column(pid[codes], pa.int64(), mask=~known[codes])
    if any(w.get("array_task_id") is not None for w in worker_info):  # job-array runs
        for name in ("array_job_id", "array_task_id"):
            ids = np.array(
                [_text(w.get(name)) for w in worker_info],
                dtype=object,
            )
            out[name] = pa.array(ids[codes].tolist(), pa.string())
    return out


class Tally:
    """What the summary adds up, over blocks of latest rows and of all records.

    Blocks come in index order (a bucket after another), so the failures listed are the
    first :data:`MAX_LISTED_FAILURES` by index, as in one pass over the whole run.
    """

    def __init__(self) -> None:
        self.rows = 0
        self.ok = 0
        self.failed = 0
        self.failure_types: Counter[str] = Counter()
        self.failures: list[dict[str, Any]] = []
        self.stage_total = np.zeros(0)
        self.stage_count = np.zeros(0, dtype=np.int64)
        self.stage_max = np.zeros(0)
        self.peaks: dict[str, int] = {}
        self.busy = 0.0
        self.cpu = 0.0
        self.first: float | None = None
        self.last: float | None = None
        self.outputs: int | None = 0

    def add_rows(self, rows: Rows, workers: dict[tuple[int, int], dict[str, Any]]) -> None:
        """Fold in latest rows (only rows of frozen indices count: select them before)."""
        self.rows += len(rows)
        ok = rows.ok
        self.ok += int((ok == 1).sum())
        self.failed += int((ok == 0).sum())
        for row in np.flatnonzero(ok == 0):
            kind = rows.errors["type"][row] if rows.errors else None
            self.failure_types["Unknown" if kind is None else kind] += 1
            if len(self.failures) < MAX_LISTED_FAILURES:
                self.failures.append(_failure(rows, int(row), workers))
        if rows.stages is not None and len(rows):
            self._add_stages(rows.stages)
        for key, name in (("pymem", "py_peak_bytes"), ("gpumem", "gpu_peak_bytes")):
            values = getattr(rows, key)
            if has_values(values):
                peak = int(np.nanmax(values))
                self.peaks[name] = max(peak, self.peaks.get(name, peak))

    def _add_stages(self, matrix: np.ndarray) -> None:
        k = matrix.shape[1]
        if k > len(self.stage_total):
            grow = k - len(self.stage_total)
            self.stage_total = np.concatenate([self.stage_total, np.zeros(grow)])
            self.stage_count = np.concatenate([self.stage_count, np.zeros(grow, np.int64)])
            self.stage_max = np.concatenate([self.stage_max, np.full(grow, -np.inf)])
        self.stage_total[:k] += np.nansum(matrix, axis=0)
        self.stage_count[:k] += (~np.isnan(matrix)).sum(axis=0)
        self.stage_max[:k] = np.fmax(self.stage_max[:k], np.fmax.reduce(matrix, axis=0))

    def add_records(
        self, wall: np.ndarray, cpu: np.ndarray, time: np.ndarray, outputs: int | None
    ) -> None:
        """Fold in every record (retries included): busy and CPU time, first/last commit."""
        self.busy += float(wall.sum())
        self.cpu += float(cpu.sum())
        if len(time):
            lo, hi = float(time.min()), float(time.max())
            self.first = lo if self.first is None else min(self.first, lo)
            self.last = hi if self.last is None else max(self.last, hi)
        self.outputs = None if outputs is None or self.outputs is None else self.outputs + outputs

    def stage_summary(self, names: list[str]) -> dict[str, Any]:
        """``stages``, ``slowest_stage`` and the memory peaks of the summary."""
        if not self.rows or not len(self.stage_total):
            doc = stages.summarize(names, None)
        else:
            doc = stages.summarize_totals(names, self.stage_total, self.stage_count, self.stage_max)
        doc.update({f"max_{name}": value for name, value in self.peaks.items()})
        return doc


def _failure(
    rows: Rows, row: int, workers: dict[tuple[int, int], dict[str, Any]]
) -> dict[str, Any]:
    err = {key: rows.errors[key][row] for key in ERROR_KEYS} if rows.errors else {}
    attempt, rank = int(rows.attempt[row]), int(rows.rank[row])
    worker = workers.get((attempt, rank), {})
    return {
        "index": int(rows.idx[row]),
        "type": err.get("type") or "Unknown",
        "message": err.get("msg") or "",
        "traceback": err.get("tb") or "",
        "stage": err.get("stage"),  # the stage it raised in (stages.py)
        "log": err.get("log"),  # its bytes of the rank log (ranklog.py)
        "rank": rank,
        "attempt": attempt,
        "host": worker.get("host"),
        "node": worker.get("node"),
        "pid": worker.get("pid"),
        "job_id": worker.get("job_id"),
    }


def _text(value: Any) -> str | None:
    """A start record's member as text (``None`` stays missing)."""
    return None if value is None else str(value)
