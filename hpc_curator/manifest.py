"""The run manifest: ``manifest.json`` (summary) and ``manifest.parquet`` (one row per index).

Built from the journals alone (plus rank summaries and merged outputs when called at the end of
an attempt), so it can also be computed for a run that is still going (:func:`summarize`).
Written last and atomically: a manifest on disk always describes a consistent state.
"""

from __future__ import annotations

import json
from collections import Counter as Tally
from typing import Any

import numpy as np

from hpc_curator import rundir, stages
from hpc_curator.atomic import atomic_path, atomic_write
from hpc_curator.journal import JournalScan

FORMAT = "hpc-curator.manifest/1"
MAX_LISTED_FAILURES = 100


def summarize(
    rd: rundir.RunDir,
    scan: JournalScan,
    *,
    summaries: list[dict[str, Any]] | None = None,
    outputs: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Summary of a run from its journals (works while it is running).

    ``outputs`` are the merged outputs of this attempt's end (default: those the last
    manifest recorded). A run is complete only when every index succeeded *and* every
    stateful filter's committed segments are all in its merged output; otherwise it is
    ``incomplete`` and ``unmerged_outputs`` names the filters.
    """
    info = rundir.load(rd)
    if outputs is None:
        outputs = recorded_outputs(rd)
    frozen = np.isin(scan.idx, info.indices) if len(scan.idx) else np.zeros(0, dtype=bool)
    pos = scan.latest()
    pos = pos[frozen[pos]]  # a record of an index outside the frozen list counts for nothing
    ok = scan.ok[pos]
    n_ok, n_failed = int(ok.sum()), int((ok == 0).sum())
    pending = info.n - len(pos)
    unmerged = sorted(
        name
        for name, segments in scan.segments.items()
        if outputs.get(name, {}).get("segments") != len(segments)
    )
    status = "incomplete" if pending or unmerged else ("failed" if n_failed else "complete")
    failures = _failures(scan, pos[ok == 0])
    attempts = rundir.list_attempts(rd)
    times = scan.time
    return {
        "format": FORMAT,
        "run_dir": str(rd.path),
        "status": status,
        "counts": {"total": info.n, "ok": n_ok, "failed": n_failed, "pending": pending},
        "failure_types": dict(Tally(f["type"] for f in failures["all"]).most_common()),
        "failures": failures["listed"],
        "outputs": outputs,
        "unmerged_outputs": unmerged,
        "index_outputs": _count_outputs(scan),
        "timing": {
            "first_commit": float(times.min()) if len(times) else None,
            "last_commit": float(times.max()) if len(times) else None,
            "busy_seconds": float(scan.wall.sum()),
            "cpu_seconds": float(scan.cpu.sum()),
        },
        "attempts": [_attempt_view(a) for a in attempts],
        "ranks": summaries or _worker_view(scan),
        "world_size": len(summaries) if summaries else _last_world_size(scan),
        "journal_torn_lines": scan.torn,
        "journal_bad_records": scan.bad[:MAX_LISTED_FAILURES],
        "journal_bad_record_count": len(scan.bad),
        "journal_duplicate_records": scan.duplicates,
        **_stage_summary(scan, pos),
        "spec": info.spec,
        "created": info.meta.get("created"),
        "written": rundir.now_iso(),
        "versions": info.meta.get("versions", {}),
    }


def _stage_summary(scan: JournalScan, pos: np.ndarray) -> dict[str, Any]:
    """Per-stage totals over each index's latest record, and the slowest stage."""
    times = scan.stage_matrix()
    doc = stages.summarize(stages.recorded_names(scan), None if times is None else times[pos])
    for key, name in (("pymem", "py_peak_bytes"), ("gpumem", "gpu_peak_bytes")):
        values = getattr(scan, key)
        values = values[pos] if len(values) else values
        if len(values) and not np.isnan(values).all():
            doc[f"max_{name}"] = int(np.nanmax(values))
    return doc


def recorded_outputs(rd: rundir.RunDir) -> dict[str, dict[str, Any]]:
    """The merged outputs the last manifest recorded (``{}`` before the first)."""
    try:
        doc = json.loads(rd.manifest_json.read_text())
    except (OSError, ValueError):
        return {}
    outputs = doc.get("outputs")
    return outputs if isinstance(outputs, dict) else {}


def write(rd: rundir.RunDir, scan: JournalScan, doc: dict[str, Any], attempt: int) -> None:
    """Write ``manifest.parquet`` then ``manifest.json`` (the last file of an attempt).

    ``doc`` is the :func:`summarize` result; it is re-read for the attempt list so the
    attempt that just ended appears with its end time and reason.
    """
    doc["attempt"] = attempt
    doc["attempts"] = [_attempt_view(a) for a in rundir.list_attempts(rd)]
    _write_table(rd, scan)
    atomic_write(rd.manifest_json, json.dumps(doc, indent=2, default=repr))


def _write_table(rd: rundir.RunDir, scan: JournalScan) -> None:
    import pyarrow.parquet as pq

    table = build_table(rd, scan)
    with atomic_path(rd.manifest_parquet) as tmp:
        pq.write_table(table, tmp)


def build_table(rd: rundir.RunDir, scan: JournalScan) -> Any:
    """One row per index (its latest record), built column-wise: O(n) in C, not Python.

    The rows of ``manifest.parquet``, as an Arrow table (from the journals: also for a run
    that is still going).
    """
    import pyarrow as pa

    pos = scan.latest()
    take = pa.array(pos)
    ok = scan.ok[pos] == 1
    columns: dict[str, Any] = {
        "index": pa.array(scan.idx[pos]),
        "status": pa.DictionaryArray.from_arrays(
            pa.array(np.where(ok, 0, 1).astype(np.int32)), pa.array(["ok", "failed"])
        ),
        "attempt": pa.array(scan.attempt[pos]),
        "rank": pa.array(scan.rank[pos]),
        **_placement(scan, pos),
        "wall_s": pa.array(scan.wall[pos]),
        "cpu_s": pa.array(scan.cpu[pos]),
        "peak_rss": pa.array(scan.rss[pos]),
        "committed_at": pa.array(scan.time[pos]),
        "outputs": _outputs_column(scan).take(take),
    }
    group = _group_column(rd, scan.idx[pos])
    if group is not None:
        columns["group"] = group
    times = scan.stage_matrix()
    if times is not None:  # seconds in each stage (stages.py): time_source, time_1.Smooth, ...
        for k, name in enumerate(stages.recorded_names(scan)[: times.shape[1]]):
            columns[f"time_{name}"] = pa.array(times[pos, k], mask=np.isnan(times[pos, k]))
    for key, name in (("pymem", "py_peak_bytes"), ("gpumem", "gpu_peak_bytes")):
        values = getattr(scan, key)[pos] if len(getattr(scan, key)) else np.empty(0)
        if len(values) and not np.isnan(values).all():
            columns[name] = pa.array(values, mask=np.isnan(values)).cast(pa.int64())
    for key, name in (("type", "error_type"), ("msg", "error_message"), ("tb", "traceback")):
        values = np.full(len(pos), None, dtype=object)
        for row in np.flatnonzero(~ok):
            err = scan.errors.get(int(pos[row]))
            values[row] = err[key] if err else None
        columns[name] = pa.array(values, pa.string())
    return pa.table(columns)


def _group_column(rd: rundir.RunDir, indices: np.ndarray) -> Any:
    """Each row's index group (the smallest index of its group; null: not in a group)."""
    import pyarrow as pa

    labels = rd.load_groups()
    if labels is None:
        return None
    frozen = rundir.load(rd).indices
    sorter = np.argsort(frozen, kind="stable")
    label = labels[sorter[np.searchsorted(frozen, indices, sorter=sorter)]]
    sizes = np.unique(labels, return_counts=True)
    grouped = np.isin(label, sizes[0][sizes[1] > 1])
    return pa.array(label, mask=~grouped)


def _outputs_column(scan: JournalScan) -> Any:
    """Output paths per journal position (empty lists when scanned without outputs)."""
    import pyarrow as pa

    array = scan.outputs_array()
    if array is None:
        return pa.array([[]] * len(scan.idx), pa.list_(pa.string()))
    return array


def _count_outputs(scan: JournalScan) -> int | None:
    array = scan.outputs_array()
    return None if array is None else len(array.flatten())


def _placement(scan: JournalScan, pos: np.ndarray) -> dict[str, Any]:
    """Host, node, pid and job id of the worker that recorded each row (dictionary-encoded)."""
    import pyarrow as pa

    codes = pa.array(scan.worker[pos])
    out = {}
    for name in ("host", "node", "job_id"):
        values = [w.get(name) for w in scan.worker_info]
        out[name] = (
            pa.array([None if v is None else str(v) for v in values], pa.string())
            .take(codes)
            .dictionary_encode()
        )
    out["pid"] = pa.array([w.get("pid") for w in scan.worker_info], pa.int64()).take(codes)
    if any(w.get("array_task_id") is not None for w in scan.worker_info):  # job-array runs
        for name in ("array_job_id", "array_task_id"):
            values = [w.get(name) for w in scan.worker_info]
            out[name] = pa.array([None if v is None else str(v) for v in values]).take(codes)
    return out


def _failures(scan: JournalScan, positions: np.ndarray) -> dict[str, list[dict[str, Any]]]:
    all_: list[dict[str, Any]] = []
    for p in positions:
        err = scan.errors.get(int(p), {"type": "Unknown", "msg": "", "tb": ""})
        worker = scan.workers.get((int(scan.attempt[p]), int(scan.rank[p])), {})
        all_.append(
            {
                "index": int(scan.idx[p]),
                "type": err["type"],
                "message": err["msg"],
                "traceback": err["tb"],
                "stage": err.get("stage"),  # the stage it raised in (stages.py)
                "log": err.get("log"),  # its bytes of the rank log (ranklog.py)
                "rank": int(scan.rank[p]),
                "attempt": int(scan.attempt[p]),
                "host": worker.get("host"),
                "node": worker.get("node"),
                "pid": worker.get("pid"),
                "job_id": worker.get("job_id"),
            }
        )
    return {"all": all_, "listed": all_[:MAX_LISTED_FAILURES]}


def _attempt_view(rec: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "attempt",
        "launcher",
        "job_id",
        "host",
        "started",
        "ended",
        "reason",
        "counts",
        "world_size",
    )
    out = {k: rec.get(k) for k in keys}
    for key in ("mpi", "code_change_accepted"):  # which MPI ran; an accepted code change
        if key in rec:
            out[key] = rec[key]
    if not rec.get("ended"):
        out["reason"] = "running or crashed (no end record)"
    return out


def _worker_view(scan: JournalScan) -> list[dict[str, Any]]:
    out = []
    for key, start in sorted(scan.workers.items()):
        end = scan.ends.get(key, {})
        out.append({**start, **end, "attempt": key[0], "rank": key[1]})
    return out


def _last_world_size(scan: JournalScan) -> int:
    if not scan.workers:
        return 0
    last = max(a for a, _ in scan.workers)
    return sum(1 for a, _ in scan.workers if a == last)


def one_line(doc: dict[str, Any], reasons: list[str] | None = None) -> str:
    """A one-line summary for the terminal."""
    c = doc["counts"]
    line = f"{c['ok']}/{c['total']} ok, {c['failed']} failed, {c['pending']} pending"
    if doc["failure_types"]:
        kinds = ", ".join(f"{k} x{v}" for k, v in list(doc["failure_types"].items())[:3])
        line += f" ({kinds})"
    if reasons:
        line += f"; stopped early: {', '.join(reasons)}"
    if doc.get("unmerged_outputs"):
        line += f"; not merged yet: {', '.join(doc['unmerged_outputs'])}"
    return line
