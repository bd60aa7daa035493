"""The report's data: everything :func:`hpc_curator.report.build_report` shows, from a run dir.

Everything comes from the run directory: ``run.json``, the attempt records, the journals
(:func:`hpc_curator.store.journal.scan`) and, for a finished attempt, ``manifest.json`` and the
merged
outputs. A run that is still going (or crashed) has no current manifest; its summary is computed
from the journals with :func:`hpc_curator.store.manifest.summarize`, exactly like ``hpc-curate
manifest`` does. This module draws and formats nothing (see :mod:`hpc_curator.report.figures`
and :mod:`hpc_curator.report.page`).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc_curator.model.partition import sorted_unique
from hpc_curator.store import attempt_records, journal, manifest, rundir

SLOWEST = 20
MAX_PARTIAL_SEGMENTS = 5000


@dataclass
class ReportData:
    """Everything the report shows, computed once from the run directory."""

    rd: rundir.RunDir
    info: rundir.RunInfo
    scan: journal.JournalScan
    doc: dict[str, Any]
    source: str
    state: str
    attempts: list[dict[str, Any]]
    workers: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    finish: np.ndarray
    worker_of: np.ndarray
    t0: float
    wall_seconds: float
    elapsed: float
    failure_groups: list[dict[str, Any]]
    slowest: list[dict[str, Any]]
    outputs: list[dict[str, Any]] = field(default_factory=list)
    generated: float = field(default_factory=time.time)

    def numbers(self) -> dict[str, Any]:
        """The headline numbers (also embedded in the HTML as JSON for machines and tests).

        Returns
        -------
        dict
            Status, state, counts, failure types, world size, nodes, attempts, requeues,
            executions, wall and elapsed seconds, throughput and summed busy seconds.
        """
        c = self.doc["counts"]
        return {
            "status": self.doc["status"],
            "state": self.state,
            "source": self.source,
            "counts": c,
            "failure_types": self.doc["failure_types"],
            "world_size": self.doc["world_size"],
            "nodes": [n["node"] for n in self.nodes],
            "attempts": len(self.attempts),
            "requeues": max(0, len(self.attempts) - 1),
            "executions": len(self.scan.idx),
            "wall_seconds": self.wall_seconds,
            "elapsed_seconds": self.elapsed,
            "throughput": len(self.scan.idx) / self.wall_seconds if self.wall_seconds else 0.0,
            "busy_seconds": float(self.scan.wall.sum()),
        }


def pipeline_label(spec: dict[str, Any]) -> str:
    """A short human name of the pipeline a run's spec describes.

    Parameters
    ----------
    spec
        The frozen pipeline spec of the run (``RunInfo.spec``).

    Returns
    -------
    str
        ``file.py:factory`` for a factory spec, ``Source → Filter → Sink`` for components.
    """
    if spec.get("kind") == "factory":
        return str(spec.get("ref"))
    parts = [spec.get("source") or {}, *(spec.get("filters") or []), spec.get("sink") or {}]
    names = [str(p.get("class")) for p in parts if p.get("class")]
    return " → ".join(names) or str(spec.get("kind", "pipeline"))


# -- collecting ----------------------------------------------------------------------------
def collect(run_dir: str | Path) -> ReportData:
    """Read a run directory into a :class:`ReportData` (works while the run is going).

    The summary is ``manifest.json`` when it belongs to the newest attempt and that attempt
    ended; otherwise :func:`hpc_curator.store.manifest.summarize` over the journals.

    Parameters
    ----------
    run_dir
        The run directory.

    Returns
    -------
    ReportData
        Summary, per-worker and per-node rows, failure groups, slowest indices, outputs.
    """
    rd = rundir.RunDir(run_dir)
    info = rundir.load(rd)
    scan = journal.scan(rd, with_outputs=False)
    attempts = attempt_records.list_attempts(rd)
    now = time.time()
    last = attempts[-1] if attempts else {}
    if not last:
        state = "not started"
    elif last.get("ended"):
        state = "ended"
    else:
        state = (
            "running" if attempt_records.attempt_alive(rd, last, now) else "crashed (no end record)"
        )
    saved = json.loads(rd.manifest_json.read_text()) if rd.manifest_json.exists() else None
    if saved and last.get("ended") and saved.get("attempt") == last.get("attempt"):
        doc, source = saved, "manifest.json"
    else:
        outputs = saved.get("outputs", {}) if saved else {}
        doc, source = manifest.summarize(rd, scan, outputs=outputs), "journals (live summary)"
    running = last.get("attempt") if state == "running" else None
    workers, worker_of = _workers(scan, running, now)
    spans = []
    for a in attempts:
        start = a.get("started_ts") or 0.0
        end = a.get("ended_ts")
        if end is None:
            mine = scan.time[scan.attempt == a.get("attempt")]
            alive = state == "running" and a is last
            end = now if alive else (float(mine.max()) if len(mine) else start)
        spans.append((start, end))
    t0 = min((s for s, _ in spans), default=float(scan.time.min()) if len(scan.time) else now)
    return ReportData(
        rd=rd,
        info=info,
        scan=scan,
        doc=doc,
        source=source,
        state=state,
        attempts=attempts,
        workers=workers,
        nodes=_nodes(workers),
        finish=_finish_times(scan),
        worker_of=worker_of,
        t0=t0,
        wall_seconds=float(sum(e - s for s, e in spans)),
        elapsed=float(max((e for _, e in spans), default=t0) - t0),
        failure_groups=_failure_groups(scan),
        slowest=_slowest(scan, workers, worker_of),
        outputs=_outputs(rd, doc, scan),
    )


def _finish_times(scan: journal.JournalScan) -> np.ndarray:
    """Estimated finish time of each record: commit time minus the walls run after it."""
    n = len(scan.idx)
    if n == 0:
        return np.empty(0)
    new = np.ones(n, dtype=bool)
    new[1:] = (
        (scan.time[1:] != scan.time[:-1])
        | (scan.rank[1:] != scan.rank[:-1])
        | (scan.attempt[1:] != scan.attempt[:-1])
    )
    group = np.cumsum(new) - 1
    cum = np.cumsum(scan.wall)
    last_of_group = np.append(np.flatnonzero(new)[1:] - 1, n - 1)
    return scan.time - (cum[last_of_group][group] - cum)


def _workers(
    scan: journal.JournalScan, running: int | None, now: float
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """One row per (attempt, rank) and the row number of every record."""
    keys = scan.attempt.astype(np.int64) << 32 | scan.rank.astype(np.int64)
    every = sorted(
        {(int(k) >> 32, int(k) & 0xFFFFFFFF) for k in sorted_unique(keys)} | set(scan.workers)
    )
    row_of = {k: i for i, k in enumerate(every)}
    lookup = np.array([(a << 32) | r for a, r in every], dtype=np.int64)
    worker_of = np.searchsorted(lookup, keys) if len(keys) else np.empty(0, dtype=np.int64)
    m = len(every)
    count = np.bincount(worker_of, minlength=m)
    failed = np.bincount(worker_of, weights=(scan.ok == 0), minlength=m)
    busy = np.bincount(worker_of, weights=scan.wall, minlength=m)
    peak = np.zeros(m, dtype=np.int64)
    last = np.zeros(m)
    np.maximum.at(peak, worker_of, scan.rss)
    np.maximum.at(last, worker_of, scan.time)
    rows = []
    for (attempt, rank), i in row_of.items():
        start, end = scan.workers.get((attempt, rank), {}), scan.ends.get((attempt, rank), {})
        t_start = start.get("time")
        t_end = end.get("ended") or (now if attempt == running else float(last[i]) or None)
        rows.append(
            {
                "attempt": attempt,
                "rank": rank,
                "label": f"a{attempt} r{rank}",
                "host": start.get("host") or "?",
                "node": start.get("node") or start.get("host") or "?",
                "indices": int(count[i]),
                "failed": int(failed[i]),
                "busy": float(busy[i]),
                "span": float(t_end - t_start) if t_start and t_end else 0.0,
                "peak_rss": int(max(peak[i], end.get("peak_rss") or 0)),
                "reason": end.get("reason") or "no end record",
            }
        )
    return rows, worker_of


def _nodes(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    agg: dict[str, dict[str, Any]] = {}
    for w in workers:
        n = agg.setdefault(
            w["node"], {"node": w["node"], "workers": 0, "indices": 0, "failed": 0, "busy": 0.0}
        )
        n["workers"] += 1
        n["indices"] += w["indices"]
        n["failed"] += w["failed"]
        n["busy"] += w["busy"]
        n["peak_rss"] = max(n.get("peak_rss", 0), w["peak_rss"])
    return sorted(agg.values(), key=lambda n: n["node"])


def _failure_groups(scan: journal.JournalScan) -> list[dict[str, Any]]:
    """Current failures grouped by exception type, largest group first."""
    pos = scan.latest()
    groups: dict[str, dict[str, Any]] = defaultdict(dict)
    for p in pos[scan.ok[pos] == 0]:
        err = scan.errors.get(int(p), {"type": "Unknown", "msg": "", "tb": ""})
        g = groups[err.get("type", "Unknown")]
        if not g:
            g.update(type=err.get("type", "Unknown"), indices=[], ranks=set(), message="", tb="")
            g.update(message=err.get("msg", ""), tb=err.get("tb", ""))
            g.update(where=f"attempt {int(scan.attempt[p])}, rank {int(scan.rank[p])}")
        g["indices"].append(int(scan.idx[p]))
        g["ranks"].add(int(scan.rank[p]))
    return sorted(groups.values(), key=lambda g: -len(g["indices"]))


def _slowest(
    scan: journal.JournalScan, workers: list[dict[str, Any]], worker_of: np.ndarray
) -> list[dict[str, Any]]:
    pos = scan.latest()
    top = pos[np.argsort(-scan.wall[pos], kind="stable")[:SLOWEST]]
    return [
        {
            "index": int(scan.idx[p]),
            "status": "ok" if scan.ok[p] else "failed",
            "wall": float(scan.wall[p]),
            "cpu": float(scan.cpu[p]),
            "worker": workers[int(worker_of[p])]["label"],
            "node": workers[int(worker_of[p])]["node"],
        }
        for p in top
    ]


def _outputs(rd: rundir.RunDir, doc: dict[str, Any], scan: journal.JournalScan) -> list[Any]:
    """Merged stateful-filter outputs, and partial states from committed segments while a
    filter has none yet: what each filter's class tabulates (``StatefulFilter.figures``)."""
    classes = _recorded_classes(rd)
    out = []
    for name, o in (doc.get("outputs") or {}).items():
        item = {"name": name, "merged": True, **o, "stats": None}
        path = rundir.output_location(rd, o)
        cls = _filter_class(str(o.get("class", "")))
        if cls is not None and path.exists():
            try:
                item["stats"] = cls.figures(cls.read_state(str(path)))
            except Exception as exc:  # a report never fails because of one output
                item["error"] = str(exc)
        out.append(item)
    merged = {o["name"] for o in out}
    for name, segs in scan.segments.items():
        if name not in merged:
            item = {"name": name, "merged": False, "segments": len(segs), "stats": None}
            item["stats"] = _partial(rd, name, segs, _filter_class(classes.get(name, "")))
            out.append(item)
    return out


def _recorded_classes(rd: rundir.RunDir) -> dict[str, str]:
    """The stateful filters' classes the latest attempt recorded (``{}`` if none did)."""
    for rec in reversed(attempt_records.list_attempts(rd)):
        if isinstance(rec.get("stateful"), dict):
            return {str(k): str(v) for k, v in rec["stateful"].items()}
    return {}


def _filter_class(path: str) -> Any:
    """The StatefulFilter subclass named ``module:qualname``, or ``None`` (not importable
    here, or not a stateful filter: the report shows no figures for it)."""
    import importlib

    from hpc_curator.model.pipeline import StatefulFilter

    module, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:
        return None
    return obj if isinstance(obj, type) and issubclass(obj, StatefulFilter) else None


def _partial(rd: rundir.RunDir, name: str, segs: list[str], cls: Any) -> Any:
    """Figures of the committed segments of a filter not merged yet (a running run)."""
    if cls is None or not segs or len(segs) > MAX_PARTIAL_SEGMENTS:
        return None
    try:
        state = cls.empty_state()
        for seg in segs:
            state = cls.combine(state, cls.read_state(str(rd.shard_dir(name) / seg)))
        return cls.figures(state)
    except Exception:
        return None  # a segment is unreadable
