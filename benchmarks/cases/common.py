"""What every benchmark case shares: settings, required contenders, targets, rows, run checks."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import harness as h
from benchmarks.harness import Contender, fmt

WORKLOADS = h.ROOT / "benchmarks" / "workloads.py"
W1_ELEMENTS = 64 * 64 * 16
#: Indices of a warm-up run (fills the bytecode and page caches; not timed).
WARMUP_N = 1000


@dataclass
class Config:
    """Harness settings shared by every case."""

    quick: bool
    reps: int
    work: Path
    blas_threads: str | None
    log: Callable[[str], None] = print
    env: dict[str, str] = field(default_factory=dict)

    def fresh(self, name: str) -> Path:
        """An empty scratch directory ``work/name``."""
        d = self.work / name
        shutil.rmtree(d, ignore_errors=True)
        return d


#: Contenders that are hpc-curator itself: if one fails, the case fails (others are only
#: marked unavailable).
REQUIRED = {
    "hpc_small", "hpc_big", "rank_small", "rank_big", "hpc_mpi", "hpc_pool",
    "merge", "manifest", "scan", "help", "dry_run", "strided", "dynamic", "run",
    "sleep_call", "sleep_items", "hpc_strided", "hpc_dynamic",
}  # fmt: skip


def interleave(contenders: list[Contender], reps: int, *, warmup: bool, log: Any):
    """:func:`harness.interleave` with hpc-curator's own contenders marked required."""
    for c in contenders:
        c.required = c.name.split("@")[0] in REQUIRED  # "name@size" in P11
    return h.interleave(contenders, reps, warmup=warmup, log=log)


def target(name: str, measured: float | None, limit: float, unit: str, better: str = "lower"):
    """One target row: pass/miss and by how much (ratio to the limit)."""
    if measured is None:
        return {"name": name, "measured": "-", "pass": None, "limit": limit}
    ok = measured <= limit if better == "lower" else measured >= limit
    by = measured / limit if limit else None
    text = fmt(measured, unit)
    return {
        "name": name,
        "measured": text,
        "value": measured,
        "limit": limit,
        "pass": bool(ok),
        "by": "" if ok or by is None else f"({by:.2f}x the limit)",
    }


def rm(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def manifest_doc(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text())


def check_complete(run_dir: Path, n: int) -> dict[str, Any]:
    doc = manifest_doc(run_dir)
    if doc["counts"]["ok"] != n or doc["status"] != "complete":
        raise RuntimeError(f"hpc-curator run incomplete: {doc['counts']}")
    return doc


def phases(run_dir: Path, t_launch: float, seconds: float) -> dict[str, float]:
    """Where the wall time of one ``hpc-curate run`` went, from the run dir's own records.

    ``t_launch`` is ``time.time()`` just before the command started, ``seconds`` its wall time.
    """
    doc = manifest_doc(run_dir)
    att = json.loads((run_dir / "attempts" / f"{doc['attempt']:04d}.json").read_text())
    rk = doc["ranks"]
    first_start = min(x["started"] for x in rk)
    last_end = max(x["ended"] for x in rk)
    written = (run_dir / "manifest.json").stat().st_mtime
    return {
        "launch_to_prepare_s": att["started_ts"] - t_launch,
        "prepare_to_loop_s": first_start - att["started_ts"],
        "startup_s": first_start - t_launch,
        "work_span_s": last_end - first_start,
        "gather_merge_s": att["ended_ts"] - last_end,
        "manifest_write_s": written - att["ended_ts"],
        "finish_total_s": written - last_end,
        "exit_s": t_launch + seconds - written,
    }


PHASE_LABELS = {
    "launch_to_prepare_s": "launch to attempt claimed (parent CLI, mpiexec, imports, MPI init)",
    "prepare_to_loop_s": "attempt claimed to first rank loop (prepare, bcast, build, counters)",
    "work_span_s": "first rank loop start to last rank loop end (work + commits)",
    "gather_merge_s": "last rank end to attempt end (barrier, gather, scan, merge, summary)",
    "manifest_write_s": "attempt end to manifest.json written (parquet + json)",
    "exit_s": "manifest written to command exit (MPI finalize, parent poll + read)",
}


def phase_rows(prefix: str, label: str, extras: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One derived row per phase (median over repetitions)."""
    rows = []
    for key, text in PHASE_LABELS.items():
        vals = [e[key] for e in extras if key in e]
        if vals:
            rows.append(derived_row(f"{prefix}_{key}", f"  {label}: {text}", vals, "s"))
    return rows


def peak_rss(data: dict[str, dict[str, Any]], name: str) -> list[float]:
    """Per repetition, the peak RSS (MiB) of the largest process of ``name``'s commands."""
    return [e["max_rss_mib"] for e in data[name]["extra"] if e.get("max_rss_mib") is not None]


def rss_target(data: dict[str, dict[str, Any]], ours: str, ref: str, label: str) -> dict:
    """T4: the largest hpc-curator process <= 1.5x the raw loop's largest process."""
    a, b = h.summary(peak_rss(data, ours))["median"], h.summary(peak_rss(data, ref))["median"]
    ratio = a / b if a is not None and b else None
    return target(f"T4 peak RSS of the largest process <= 1.5x raw ({label})", ratio, 1.5, "x")


def rows_from(data: dict[str, dict[str, Any]], **notes: str) -> list[dict[str, Any]]:
    rows = []
    for name, d in data.items():
        rows.append(
            {
                "name": name,
                "label": d["label"],
                "median": d["median"],
                "min": d["min"],
                "max": d["max"],
                "n": d["n"],
                "unit": d["unit"],
                "values": d["values"],
                "unavailable": d.get("unavailable"),
                "note": notes.get(name, ""),
            }
        )
    return rows


def tree_rss(data: dict[str, dict[str, Any]], name: str) -> list[float]:
    """Per repetition, the peak RSS (MiB) summed over every process of ``name``'s commands."""
    return [e["tree_rss_mib"] for e in data[name]["extra"] if e.get("tree_rss_mib")]


def memory_rows(data: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per contender, the peak RSS of the largest process its command ran (``wait4``) and of
    its whole process tree (sampled every 20 ms: :mod:`benchmarks.treerss`)."""
    rows = []
    for name, d in data.items():
        mem = peak_rss(data, name)
        if mem:
            label = f"  {d['label']}: peak RSS of its largest process"
            rows.append(derived_row(f"{name}_rss", label, mem, "MiB"))
        tree = tree_rss(data, name)
        if tree:
            label = f"  {d['label']}: peak RSS of its process tree (sum, sampled)"
            rows.append(derived_row(f"{name}_tree_rss", label, tree, "MiB"))
    return rows


def derived_row(name: str, label: str, values: list[float], unit: str, note: str = ""):
    s = h.summary(values)
    return {"name": name, "label": label, "unit": unit, "values": values, "note": note, **s}


def ratio_text(r: dict[str, Any], ref: str) -> str:
    if r.get("median") is None:
        return ""
    return f"{r['median']:.3f}x {ref} ({r['min']:.3f}-{r['max']:.3f})"
