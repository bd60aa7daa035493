"""P5: W2 heavy-tailed load imbalance, strided against dynamic scheduling."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from benchmarks import harness as h
from benchmarks.cases.common import (
    WORKLOADS,
    Config,
    check_complete,
    derived_row,
    interleave,
    memory_rows,
    rm,
    rows_from,
    target,
)
from benchmarks.harness import Contender, run_timed


# -- P5 ------------------------------------------------------------------------------------
def p5(cfg: Config) -> dict[str, Any]:
    """W2 heavy-tailed with 8 ranks (oversubscribed): makespan / ideal, strided vs dynamic."""
    from benchmarks.workloads import W2_ALPHA, pareto_costs

    ranks = 4 if cfg.quick else 8
    n, mean_ms = (200, 5.0) if cfg.quick else (2000, 4.0)
    spec = f"{WORKLOADS}:w2"
    costs = pareto_costs(n, 0, mean_ms)
    ideal_theory = costs.sum() / ranks

    def run(schedule: str):
        def fn(rep: int) -> tuple[float, dict[str, Any]]:
            import pyarrow.parquet as pq

            d = cfg.fresh(f"p5-{schedule}")
            argv = [*h.hpc_curate(), "run", spec, "-p", f"n={n}", "-p", f"mean_ms={mean_ms}"]
            argv += ["--ranks", str(ranks), "--schedule", schedule, "--run-dir", str(d), "-q"]
            r = run_timed(argv, env=cfg.env)
            doc = check_complete(d, n)
            t = pq.read_table(d / "manifest.parquet", columns=["rank", "wall_s"])
            busy = np.bincount(
                t["rank"].to_numpy(), weights=t["wall_s"].to_numpy(), minlength=ranks
            )
            makespan, ideal = float(busy.max()), float(busy.sum()) / ranks
            rk = doc["ranks"]
            span = max(x["ended"] for x in rk) - min(x["started"] for x in rk)
            rm(d)
            return makespan / ideal, {
                "wall_s": r.seconds,
                "makespan_s": makespan,
                "ideal_s": ideal,
                "work_span_s": span,
                "work_span_over_ideal": span / ideal,
            }

        return fn

    contenders = [
        Contender(
            "strided", run("strided"), unit="x", label=f"strided: makespan / ideal ({ranks} ranks)"
        ),
        Contender(
            "dynamic", run("dynamic"), unit="x", label=f"dynamic: makespan / ideal ({ranks} ranks)"
        ),
    ]
    data = interleave(contenders, cfg.reps, warmup=False, log=cfg.log)
    rows = rows_from(data)
    for name in ("strided", "dynamic"):
        ex = data[name]["extra"]
        rows.append(
            derived_row(
                f"{name}_span",
                f"  {name}: rank work span / ideal",
                [e["work_span_over_ideal"] for e in ex],
                "x",
                "first rank start to last rank end, over ideal busy time",
            )
        )
        rows.append(
            derived_row(
                f"{name}_wall", f"  {name}: whole command wall", [e["wall_s"] for e in ex], "s"
            )
        )
    # what the cost distribution allows, computed from the same seeded costs
    strided_theory = max(costs[r::ranks].sum() for r in range(ranks)) / ideal_theory
    chunk = max(1, min(256, n // (ranks * 16)))
    free = np.zeros(ranks)
    for start in range(0, n, chunk):
        k = int(np.argmin(free))
        free[k] += costs[start : start + chunk].sum()
    dynamic_theory = free.max() / ideal_theory
    free = np.zeros(ranks)
    for cost in costs:
        free[int(np.argmin(free))] += cost
    dynamic_one = free.max() / ideal_theory
    bound = max(1.0, costs.max() / ideal_theory)
    rows += [
        derived_row("strided_theory", "  strided, zero-overhead model", [strided_theory], "x"),
        derived_row(
            "dynamic_theory",
            f"  dynamic, zero-overhead model (chunk {chunk})",
            [dynamic_theory],
            "x",
        ),
        derived_row("dynamic_one", "  dynamic, zero-overhead model (chunk 1)", [dynamic_one], "x"),
        derived_row("bound", "  lower bound max(1, largest cost / ideal)", [bound], "x"),
    ]
    rows += memory_rows(data)
    return {
        "title": f"load imbalance (W2 heavy-tailed, {ranks} ranks on {os.cpu_count()} CPUs)",
        "description": (
            f"{n} indices, sleep-based cost ~ Pareto(alpha={W2_ALPHA}), mean {mean_ms} ms, seed 0 "
            f"(total {costs.sum():.2f} s, largest {costs.max() * 1e3:.0f} ms). Makespan = max over "
            "ranks of the summed per-index wall_s from manifest.parquet; ideal = total / ranks."
        ),
        "rows": rows,
        "targets": [
            target("dynamic makespan / ideal <= 1.10", data["dynamic"]["median"], 1.10, "x")
        ],
    }
