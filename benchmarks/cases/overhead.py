"""P1 (framework overhead per index, start-up) and P6 (64-rank scale): W0 no-op runs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from benchmarks import harness as h
from benchmarks.cases.common import (
    WARMUP_N,
    WORKLOADS,
    Config,
    check_complete,
    derived_row,
    interleave,
    memory_rows,
    phase_rows,
    phases,
    rm,
    rows_from,
    rss_target,
    target,
)
from benchmarks.harness import Contender, fmt, run_timed


# -- P1 ------------------------------------------------------------------------------------
def p1(cfg: Config) -> dict[str, Any]:
    """W0 overhead: hpc-curate run --ranks 2 vs a raw mpi4py strided loop, 1k and 200k."""
    small, big = 1000, (20_000 if cfg.quick else 200_000)
    spec = f"{WORKLOADS}:w0"
    mpx = h.mpiexec()

    def hpc(size: int) -> Callable[[int], tuple[float, dict[str, Any]]]:
        def fn(rep: int) -> tuple[float, dict[str, Any]]:
            n = size if rep >= 0 else min(size, WARMUP_N)
            d = cfg.fresh(f"p1-hpc-{n}")
            cmd = [*h.hpc_curate(), "run", spec, "-p", f"n={n}", "--ranks", "2"]
            t_launch = time.time()
            r = run_timed([*cmd, "--run-dir", str(d), "-q"], env=cfg.env)
            check_complete(d, n)
            extra = phases(d, t_launch, r.seconds)
            rm(d)
            return r.seconds, extra

        return fn

    def rank_direct(size: int) -> Callable[[int], tuple[float, dict[str, Any]]]:
        def fn(rep: int) -> tuple[float, dict[str, Any]]:
            n = size if rep >= 0 else min(size, WARMUP_N)
            d = cfg.fresh(f"p1-rank-{n}")
            cmd = [mpx, "-n", "2", h.PYTHON, "-m", "hpc_curator", "rank", "--spec", spec]
            r = run_timed([*cmd, "-p", f"n={n}", "--run-dir", str(d)], env=cfg.env)
            check_complete(d, n)
            rm(d)
            return r.seconds, {}

        return fn

    def raw(size: int) -> Callable[[int], tuple[float, dict[str, Any]]]:
        def fn(rep: int) -> tuple[float, dict[str, Any]]:
            n = size if rep >= 0 else min(size, WARMUP_N)
            d = cfg.fresh(f"p1-raw-{n}")
            cmd = [mpx, "-n", "2", h.PYTHON, "-m", "benchmarks.contenders", "raw-mpi"]
            r = run_timed([*cmd, "--workload", "w0", "--n", str(n), "--out", str(d)], env=cfg.env)
            if r.result.get("done") != n:
                raise RuntimeError(f"raw loop did {r.result.get('done')} of {n}")
            rm(d)
            return r.seconds, {}

        return fn

    contenders = [
        Contender("hpc_small", hpc(small), label=f"hpc-curate run --ranks 2, {small:,} indices"),
        Contender("raw_small", raw(small), label=f"raw mpi4py loop (mpiexec -n 2), {small:,}"),
        Contender("hpc_big", hpc(big), label=f"hpc-curate run --ranks 2, {big:,} indices"),
        Contender("raw_big", raw(big), label=f"raw mpi4py loop (mpiexec -n 2), {big:,}"),
    ]
    if not cfg.quick:
        contenders += [
            Contender(
                "rank_small", rank_direct(small), label=f"mpiexec -n 2 hpc-curate rank, {small:,}"
            ),
            Contender("rank_big", rank_direct(big), label=f"mpiexec -n 2 hpc-curate rank, {big:,}"),
        ]
    data = interleave(contenders, cfg.reps, warmup=not cfg.quick, log=cfg.log)
    v = {k: d["values"] for k, d in data.items()}
    span = big - small
    added = [
        ((hb - hs) - (rb - rs)) / span * 1e6
        for hs, rs, hb, rb in zip(
            v["hpc_small"], v["raw_small"], v["hpc_big"], v["raw_big"], strict=False
        )
    ]
    per_hpc = [(hb - hs) / span * 1e6 for hs, hb in zip(v["hpc_small"], v["hpc_big"], strict=False)]
    per_raw = [(rb - rs) / span * 1e6 for rs, rb in zip(v["raw_small"], v["raw_big"], strict=False)]
    startup = [hs / rs for hs, rs in zip(v["hpc_small"], v["raw_small"], strict=False)]
    rows = rows_from(data)
    rows += phase_rows("hpc_small", f"hpc {small:,}", data["hpc_small"]["extra"])
    rows += phase_rows("hpc_big", f"hpc {big:,}", data["hpc_big"]["extra"])
    rows += [
        derived_row("hpc_per_index", "hpc-curator wall per index (2 ranks)", per_hpc, "us"),
        derived_row("raw_per_index", "raw loop wall per index (2 ranks)", per_raw, "us"),
        derived_row(
            "added_per_index",
            "added cost per index (hpc - raw)",
            added,
            "us",
            "wall µs per index with 2 ranks in parallel; x2 for CPU µs per index",
        ),
        derived_row(
            "startup_ratio", f"start-up ratio ({small:,} indices, hpc / raw)", startup, "x"
        ),
    ]
    if v.get("rank_small"):
        launcher = [hs - ks for hs, ks in zip(v["hpc_small"], v["rank_small"], strict=False)]
        rows.append(
            derived_row(
                "launcher_overhead",
                "hpc-curate run wrapper over bare mpiexec rank",
                launcher,
                "s",
                "parent CLI: imports, spec load, mpiexec --version probe, 0.3 s poll loop",
            )
        )
    a, s = h.summary(added)["median"], h.summary(startup)["median"]
    rows += memory_rows(data)
    return {
        "title": "framework overhead (W0 no-op, 2 MPI ranks, journaling + fsync on)",
        "description": (
            f"Whole-command wall times at {small:,} and {big:,} indices; the fixed start-up is "
            "differenced out: added cost = ((hpc_big - hpc_small) - (raw_big - raw_small)) / "
            f"{span:,}, paired per repetition. Commit every 1000 indices (default), fsync on."
        ),
        "rows": rows,
        "targets": [
            target("added cost per index <= 10 µs", a, 10.0, "us"),
            target(f"start-up ({small:,} idx, whole command) <= 2x raw", s, 2.0, "x"),
            rss_target(data, "hpc_big", "raw_big", f"W0 {big:,}"),
        ],
    }


# -- P6 ------------------------------------------------------------------------------------
def p6(cfg: Config) -> dict[str, Any]:
    """64 ranks oversubscribed on W0 200k: completes; gather + merge + manifest time."""
    ranks, n = (8, 10_000) if cfg.quick else (64, 200_000)
    reps = 1 if cfg.quick else min(cfg.reps, 3)
    spec = f"{WORKLOADS}:w0"

    def fn(rep: int) -> tuple[float, dict[str, Any]]:
        d = cfg.fresh("p6")
        t_launch = time.time()
        argv = [*h.hpc_curate(), "run", spec, "-p", f"n={n}", "--ranks", str(ranks)]
        r = run_timed([*argv, "--run-dir", str(d), "-q"], env=cfg.env, timeout=1800)
        check_complete(d, n)
        extra = phases(d, t_launch, r.seconds)
        rm(d)
        return r.seconds, extra

    data = interleave(
        [Contender("run", fn, label=f"hpc-curate run --ranks {ranks}, {n:,} W0 indices (wall)")],
        reps,
        warmup=False,
        log=cfg.log,
    )
    rows = rows_from(data)
    rows += phase_rows("run", "phase", data["run"]["extra"])
    rows.append(
        derived_row(
            "finish_total_s",
            "  gather + merge + manifest (last rank end to manifest.json written)",
            [e["finish_total_s"] for e in data["run"]["extra"]],
            "s",
        )
    )
    fin = h.summary([e["finish_total_s"] for e in data["run"]["extra"]])["median"]
    rows += memory_rows(data)
    return {
        "title": f"scale ({ranks} ranks oversubscribed on {os.cpu_count()} CPUs, W0 {n:,} indices)",
        "description": (
            "Phases from the run dir: rank summaries (started/ended) in manifest.json, the "
            "attempt record's started_ts/ended_ts, and manifest.json's mtime. "
            f"{reps} repetition(s): each run is long on 2 CPUs."
        ),
        "rows": rows,
        "targets": [
            {
                "name": "completes",
                "measured": "yes" if data["run"]["n"] else "no",
                "pass": bool(data["run"]["n"]),
            },
            {
                "name": "gather + merge + manifest time reported (no target)",
                "measured": fmt(fin, "s"),
                "pass": None,
            },
        ],
    }
