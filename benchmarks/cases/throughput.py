"""P2: W1 throughput of hpc-curator (mpiexec, process_pool) against the other tools."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import harness as h
from benchmarks.cases.common import (
    W1_ELEMENTS,
    WORKLOADS,
    Config,
    check_complete,
    interleave,
    memory_rows,
    phase_rows,
    phases,
    ratio_text,
    rm,
    rows_from,
    rss_target,
    target,
)
from benchmarks.harness import Contender, run_timed


# -- P2 ------------------------------------------------------------------------------------
def p2(cfg: Config) -> dict[str, Any]:
    """W1 throughput: hpc-curator (mpiexec, process_pool) vs the other tools, 2 workers."""
    n = 40 if cfg.quick else 1000
    workers = 2
    spec = f"{WORKLOADS}:w1"
    mpx = h.mpiexec()

    def size(rep: int) -> int:
        return n if rep >= 0 else min(n, 20)  # warm-up: small (bytecode and page caches)

    def verify(result: dict[str, Any], name: str, k: int) -> None:
        if result.get("done") != k:
            raise RuntimeError(f"{name} did {result.get('done')} of {k} indices")
        if result.get("count") != k * W1_ELEMENTS:
            raise RuntimeError(f"{name} statistics count {result.get('count')} is wrong")

    def contender(name: str, argv_fn: Callable[[Path, int], list[str]]):
        def fn(rep: int) -> tuple[float, dict[str, Any]]:
            k = size(rep)
            d = cfg.fresh(f"p2-{name}")
            d.mkdir(parents=True)
            r = run_timed(argv_fn(d, k), env=cfg.env)
            verify(r.result, name, k)
            n_files = len(list((d / "fields").glob("*.h5")))
            if n_files != k:
                raise RuntimeError(f"{name} wrote {n_files} of {k} files")
            rm(d)
            return r.seconds, {"inner_s": r.result.get("inner_s")}

        return fn

    def hpc_mpi(rep: int) -> tuple[float, dict[str, Any]]:
        k = size(rep)
        d = cfg.fresh("p2-hpc-mpi")
        out = d / "fields"
        cmd = [*h.hpc_curate(), "run", spec, "-p", f"n={k}", "-p", f"out={out}"]
        t_launch = time.time()
        r = run_timed(
            [*cmd, "--ranks", str(workers), "--run-dir", str(d / "run"), "-q"], env=cfg.env
        )
        doc = check_complete(d / "run", k)
        extra = phases(d / "run", t_launch, r.seconds)
        from hpc_curator.components import read_fieldstats

        count = read_fieldstats(doc["outputs"]["stats"]["path"])["u"]["count"]
        if count != k * W1_ELEMENTS:
            raise RuntimeError(f"hpc-curator statistics count {count} is wrong")
        if len(list(out.glob("*.h5"))) != k:
            raise RuntimeError("hpc-curator did not write every file")
        rm(d)
        return r.seconds, extra

    def mod(name: str, *extra: str) -> Callable[[Path, int], list[str]]:
        return lambda d, k: [
            h.PYTHON,
            "-m",
            "benchmarks.contenders",
            name,
            "--workload",
            "w1",
            "--n",
            str(k),
            "--out",
            str(d),
            "--workers",
            str(workers),
            *extra,
        ]

    def raw_argv(d: Path, k: int) -> list[str]:
        return [mpx, "-n", str(workers), *mod("raw-mpi")(d, k)]

    def fut_argv(d: Path, k: int) -> list[str]:
        futures = [h.PYTHON, "-m", "mpi4py.futures", *mod("mpi-futures")(d, k)[1:]]
        return [mpx, "-n", str(workers + 1), *futures]

    datatrove_missing = None
    import importlib.util

    if importlib.util.find_spec("datatrove") is None:
        datatrove_missing = "datatrove is not installed (pip install datatrove)"
    contenders = [
        Contender("hpc_mpi", hpc_mpi, label="hpc-curator: hpc-curate run --ranks 2"),
        Contender(
            "raw_mpi",
            contender("raw_mpi", raw_argv),
            label="raw mpi4py strided loop (mpiexec -n 2)",
        ),
        Contender(
            "hpc_pool",
            contender("hpc_pool", mod("hpc-pool")),
            label="hpc-curator: run_pipeline process_pool, 2",
        ),
        Contender("joblib", contender("joblib", mod("joblib")), label="joblib Parallel(loky, 2)"),
        Contender("dask", contender("dask", mod("dask")), label="dask.bag processes, 2 workers"),
        Contender(
            "mpi_futures",
            contender("mpi_futures", fut_argv),
            label="mpi4py.futures MPIPoolExecutor (2 workers)",
        ),
        Contender(
            "datatrove",
            contender("datatrove", mod("datatrove")),
            label="datatrove LocalPipelineExecutor (2)",
            unavailable=datatrove_missing,
        ),
    ]
    if not cfg.quick:
        contenders.append(
            Contender("seq", contender("seq", mod("seq")), label="sequential loop (1 process)")
        )
    data = interleave(contenders, cfg.reps, warmup=not cfg.quick, log=cfg.log)
    rows = rows_from(data)
    seq_med = data.get("seq", {}).get("median")
    for r in rows:
        parts = []
        if r["name"] != "raw_mpi":
            parts.append(ratio_text(h.ratios(data, r["name"], "raw_mpi"), "raw"))
        if r["name"] not in ("hpc_mpi",):
            rr = h.ratios(data, r["name"], "hpc_mpi")
            if rr["median"] is not None:
                parts.append(f"{rr['median']:.3f}x hpc-mpi")
        r["ratio"] = "; ".join(p for p in parts if p)
        if seq_med and r["median"]:
            r["note"] = (
                r.get("note") or ""
            ) + f"speed-up vs sequential {seq_med / r['median']:.2f}x"
    rows += phase_rows("hpc_mpi", "hpc-mpi", data["hpc_mpi"]["extra"])
    hpc_vs_raw = h.ratios(data, "hpc_mpi", "raw_mpi")
    others = [
        (c.name, h.ratios(data, c.name, "hpc_mpi")["median"])
        for c in contenders
        if c.name not in ("hpc_mpi", "raw_mpi", "seq")
    ]
    others = [(k, r) for k, r in others if r is not None]
    worst = min(others, key=lambda kr: kr[1]) if others else None
    targets = [
        target("hpc-curator mpiexec / raw mpi4py loop <= 1.03", hpc_vs_raw["median"], 1.03, "x"),
        rss_target(data, "hpc_mpi", "raw_mpi", "W1"),
    ]
    if worst:
        t = target(
            f"hpc-curator mpiexec ahead of every other (closest: {worst[0]})",
            worst[1],
            1.0,
            "x",
            better="higher",
        )
        t["measured"] = f"{worst[0]} takes {worst[1]:.3f}x hpc-mpi's time"
        targets.append(t)
    rows += memory_rows(data)
    return {
        "title": f"throughput (W1, {n:,} indices, {workers} workers)",
        "description": (
            "W1 = SyntheticSource 64x64x16 float32 -> Smooth(passes=4, ~5 ms) -> FieldStats -> "
            "HDF5Sink (atomic, fsynced) per index. Whole-command wall times, start-up included; "
            "every contender reduces the same statistics and writes the same files (verified). "
            "Ratios are per-repetition pairs."
        ),
        "rows": rows,
        "targets": targets,
    }
