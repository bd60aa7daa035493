"""The run manifest: ``manifest.json`` (summary) and ``manifest.parquet`` (one row per index).

Built from the journals alone (plus rank summaries and merged outputs when called at the end of
an attempt), so it can also be computed for a run that is still going (:func:`summarize`).
Written last and atomically: a manifest on disk always describes a consistent state.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from hpc_curator.engine import stages
from hpc_curator.engine.values import one_line as one_line
from hpc_curator.store import attempt_records, rundir
from hpc_curator.store.arrow import column, count_items
from hpc_curator.store.atomic import atomic_path, atomic_write
from hpc_curator.store.journal import JournalScan
from hpc_curator.store.rows import MAX_LISTED_FAILURES, Rows, Tally
from hpc_curator.store.rows import table as rows_table

FORMAT = "hpc-curator.manifest/1"
__all__ = ["MAX_LISTED_FAILURES", "build_table", "document", "summarize", "write", "write_document"]


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
    latest = latest_rows(scan)
    tally = Tally()
    # a record of an index outside the frozen list counts for nothing
    member = np.isin(latest.idx, info.indices)
    tally.add_rows(latest if member.all() else latest.take(np.flatnonzero(member)), scan.workers)
    tally.add_records(scan.wall, scan.cpu, scan.time, count_outputs(scan))
    return document(rd, info, tally, scan, summaries=summaries, outputs=outputs)


def document(
    rd: rundir.RunDir,
    info: rundir.RunInfo,
    tally: Tally,
    scan: JournalScan,
    *,
    summaries: list[dict[str, Any]] | None = None,
    outputs: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The summary from what ``tally`` added up and the run-wide members of ``scan`` (its
    segments, writers, torn lines...: complete in the last part of a streamed scan)."""
    if outputs is None:
        outputs = recorded_outputs(rd)
    pending = info.n - tally.rows
    unmerged = sorted(
        name for name, segments in scan.segments.items() if not holds(outputs.get(name), segments)
    )
    status = "incomplete" if pending or unmerged else ("failed" if tally.failed else "complete")
    return {
        "format": FORMAT,
        "run_dir": str(rd.path),
        "status": status,
        "counts": {"total": info.n, "ok": tally.ok, "failed": tally.failed, "pending": pending},
        "failure_types": dict(tally.failure_types.most_common()),
        "failures": tally.failures,
        "outputs": outputs,
        "unmerged_outputs": unmerged,
        "index_outputs": tally.outputs,
        "timing": {
            "first_commit": tally.first,
            "last_commit": tally.last,
            "busy_seconds": tally.busy,
            "cpu_seconds": tally.cpu,
        },
        "attempts": [_attempt_view(a) for a in attempt_records.list_attempts(rd)],
        "ranks": summaries or _worker_view(scan),
        "world_size": len(summaries) if summaries else _last_world_size(scan),
        "journal_torn_lines": scan.torn,
        "journal_bad_records": scan.bad[:MAX_LISTED_FAILURES],
        "journal_bad_record_count": len(scan.bad),
        "journal_duplicate_records": scan.duplicates,
        "rejected_commits": scan.rejected[:MAX_LISTED_FAILURES],
        "rejected_commit_count": len(scan.rejected),
        **tally.stage_summary(stages.recorded_names(scan)),
        "spec": info.spec,
        "created": info.meta.get("created"),
        "written": rundir.now_iso(),
        "versions": info.meta.get("versions", {}),
    }


def holds(output: dict[str, Any] | None, segments: list[str]) -> bool:
    """Whether a merged output (its manifest entry) holds exactly ``segments``."""
    if not output:
        return False
    if "segment_set" in output:
        from hpc_curator.store.checksum import segment_set

        return bool(output["segment_set"] == segment_set(segments))
    return bool(output.get("segments") == len(segments))


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
    _write_table(rd, scan)
    write_document(rd, doc, attempt)


def write_document(rd: rundir.RunDir, doc: dict[str, Any], attempt: int) -> None:
    """Write ``manifest.json`` (after ``manifest.parquet``: the last file of an attempt)."""
    doc["attempt"] = attempt
    doc["attempts"] = [_attempt_view(a) for a in attempt_records.list_attempts(rd)]
    atomic_write(rd.manifest_json, json.dumps(doc, indent=2, default=repr))


def _write_table(rd: rundir.RunDir, scan: JournalScan) -> None:
    import pyarrow.parquet as pq

    table = build_table(rd, scan)
    with atomic_path(rd.manifest_parquet) as tmp:
        pq.write_table(table, tmp, **parquet_options(table.schema))


def parquet_options(schema: Any) -> dict[str, Any]:
    """How ``manifest.parquet`` is written: dictionary encoding only for the text columns.

    Times, sizes and indices are nearly all distinct: their dictionaries only grow until
    Parquet falls back to plain encoding. Measured on 200,000 rows: 83 -> 25 ms and 45 -> 5 MiB
    of writer memory, for a file 35% larger (1.6 MB).
    """
    import pyarrow as pa

    numeric = (pa.types.is_integer, pa.types.is_floating)
    text = [f.name for f in schema if not any(is_(f.type) for is_ in numeric)]
    return {"use_dictionary": text}


def build_table(rd: rundir.RunDir, scan: JournalScan) -> Any:
    """One row per index (its latest record), built column-wise: O(n) in C, not Python.

    The rows of ``manifest.parquet``, as an Arrow table (from the journals: also for a run
    that is still going).
    """
    latest = latest_rows(scan)
    group = group_column(rd.load_groups(), rundir.load(rd).indices, latest.idx)
    return rows_table(latest, scan.worker_info, stages.recorded_names(scan), group)


def latest_rows(scan: JournalScan) -> Rows:
    """Each index's latest record, index-sorted (built once per scan: summary and table)."""
    return scan.memo("latest_rows", lambda: Rows.from_scan(scan, scan.latest()))


def group_column(labels: np.ndarray | None, frozen: np.ndarray, indices: np.ndarray) -> Any:
    """Each row's index group (the smallest index of its group; null: not in a group)."""

    if labels is None:
        return None
    sorter = np.argsort(frozen, kind="stable")
    label = labels[sorter[np.searchsorted(frozen, indices, sorter=sorter)]]
    sizes = np.unique(labels, return_counts=True)
    grouped = np.isin(label, sizes[0][sizes[1] > 1])
    return column(label, mask=~grouped)


def count_outputs(scan: JournalScan) -> int | None:
    """How many output paths the records of ``scan`` name (``None``: scanned without)."""
    array = scan.outputs_array()
    return None if array is None else count_items(array)


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
