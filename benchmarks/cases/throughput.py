"""P2: W1 throughput of hpc-curator (mpiexec, process_pool) against the other tools."""

from __future__ import annotations

import time
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
from benchmarks.cases.peers import peer_contenders
from benchmarks.harness import Contender, run_timed


# -- P2 ------------------------------------------------------------------------------------
def p2(cfg: Config) -> dict[str, Any]:
    """W1 throughput: hpc-curator (mpiexec, process_pool) vs the other tools, 2 workers."""
    n = 40 if cfg.quick else 1000
    workers = 2
    spec = f"{WORKLOADS}:w1"

    def size(rep: int) -> int:
        return n if rep >= 0 else min(n, 20)  # warm-up: small (bytecode and page caches)

    def check(result: dict[str, Any], d: Path, k: int, name: str) -> None:
        if result.get("count") != k * W1_ELEMENTS:
            raise RuntimeError(f"{name} statistics count {result.get('count')} is wrong")
        n_files = len(list((d / "fields").glob("*.h5")))
        if n_files != k:
            raise RuntimeError(f"{name} wrote {n_files} of {k} files")

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

    contenders = [
        Contender("hpc_mpi", hpc_mpi, label="hpc-curator: hpc-curate run --ranks 2"),
        *peer_contenders(cfg, "w1", size, "p2", check),
    ]
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
