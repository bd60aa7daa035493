"""P3: merge of FieldStats segments, manifest and resume scan at 10^6 indices."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks import harness as h
from benchmarks.cases.common import Config, derived_row, interleave, rows_from, target
from benchmarks.harness import Contender, run_timed


# -- P3 ------------------------------------------------------------------------------------
def p3(cfg: Config) -> dict[str, Any]:
    """Merge of 1,024 segments; manifest and resume scan for 10^6 indices in 64 journals."""
    from benchmarks import probe

    n_idx = 100_000 if cfg.quick else 1_000_000
    n_seg = 128 if cfg.quick else 1024
    n_ranks = 64
    jdir = cfg.fresh("p3-journals")
    sdir = cfg.fresh("p3-segments")
    t0 = time.perf_counter()
    probe.build_journal_run(jdir, n_idx, n_ranks)
    probe.build_segments(sdir, n_seg)
    cfg.log(f"    built synthetic run dirs in {time.perf_counter() - t0:.1f} s")

    def measure(what: str, run_dir: Path):
        def fn(rep: int) -> tuple[float, dict[str, Any]]:
            r = run_timed([h.PYTHON, "-m", "benchmarks.probe", what, str(run_dir)], env=cfg.env)
            return r.result["seconds"], r.result

        return fn

    mpx = h.mpiexec()

    def measure_tree(rep: int) -> tuple[float, dict[str, Any]]:
        cmd = [mpx, "-n", "2", h.PYTHON, "-m", "benchmarks.probe", "merge_tree", str(sdir)]
        r = run_timed(cmd, env=cfg.env)
        return r.result["seconds"], r.result

    contenders = [
        Contender("merge", measure("merge", sdir), label=f"merge {n_seg:,} FieldStats segments"),
        Contender(
            "merge_tree",
            measure_tree,
            label=f"merge {n_seg:,} segments as a run does: tree over 2 ranks (mpiexec -n 2)",
        ),
        Contender(
            "manifest", measure("manifest", jdir), label=f"manifest json+parquet, {n_idx:,} indices"
        ),
        Contender(
            "scan",
            measure("scan", jdir),
            label=f"resume scan, {n_idx:,} indices / {n_ranks} journals",
        ),
    ]
    data = interleave(contenders, cfg.reps, warmup=not cfg.quick, log=cfg.log)
    rows = rows_from(data)
    extra_rows = []
    for name, keys in (
        ("merge_tree", ("share_s", "final_s")),
        ("manifest", ("scan_s", "summarize_s", "write_s")),
        ("scan", ("load_s", "scan_s", "pending_s")),
    ):
        for key in keys:
            vals = [e[key] for e in data[name]["extra"]]
            extra_rows.append(derived_row(f"{name}_{key}", f"  {name}: {key[:-2]}", vals, "s"))
    rss = {
        name: h.summary([e["peak_rss_mib"] for e in data[name]["extra"]])
        for name in data
        if name != "merge_tree"
    }
    for name in rss:
        extra_rows.append(
            {
                **rss[name],
                "name": f"{name}_rss",
                "label": f"  {name}: peak RSS",
                "unit": "MiB",
                "note": "whole process (python + imports included)",
            }
        )
    med = {k: d["median"] for k, d in data.items()}
    return {
        "title": "merge, manifest and resume-scan scale",
        "description": (
            f"Synthetic run dirs written directly in journal.py's record format: {n_idx:,} "
            f"indices strided over {n_ranks} journals, commits of 1000, one output path per "
            f"index, 100 failures with tracebacks; {n_seg:,} FieldStats segments (fields u, v). "
            "Each measurement in a fresh process (peak RSS from getrusage)."
        ),
        "rows": rows + extra_rows,
        "targets": [
            target(f"merge {n_seg:,} segments <= 1 s (one process)", med["merge"], 1.0, "s"),
            target(
                f"merge {n_seg:,} segments <= 1 s (a 2-rank run's tree)",
                med["merge_tree"],
                1.0,
                "s",
            ),
            target(f"manifest {n_idx:,} indices <= 3 s", med["manifest"], 3.0, "s"),
            target(
                f"manifest {n_idx:,} indices peak RSS <= 1 GiB",
                rss["manifest"]["median"],
                1024,
                "MiB",
            ),
            target(f"resume scan {n_idx:,} indices <= 2 s", med["scan"], 2.0, "s"),
        ],
    }
