"""P11, P12 (issue 14): short no-op runs (W0) and heavy-tailed runs (W2) against every peer.

The same contenders as P2 (W1) on the two workloads where a fixed cost or a poor schedule
shows: W0 at 1,000 and 100,000 indices (start-up, then start-up plus the per-index path) and
W2 at 1,000 heavy-tailed indices, both hpc-curator schedules included. Every command is timed
from outside and reaped with ``wait4`` (peak RSS of its largest process).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import harness as h
from benchmarks.cases.common import (
    WORKLOADS,
    Config,
    check_complete,
    interleave,
    memory_rows,
    peak_rss,
    phase_rows,
    phases,
    ratio_text,
    rm,
    rows_from,
    rss_target,
    target,
)
from benchmarks.harness import Contender, run_timed

WORKERS = 2


#: A peer's run check: ``check(result, out_dir, k, name)`` raises if the run is wrong.
Check = Callable[[dict[str, Any], Path, int, str], None]


def peer_contenders(
    cfg: Config,
    workload: str,
    sizes: Callable[[int], int],
    tag: str,
    check: Check | None = None,
) -> list[Contender]:
    """Every peer of hpc-curator's MPI launcher on ``workload`` (P2, P11, P12): the raw
    mpi4py loop, ``run_pipeline`` process_pool, joblib, dask, mpi4py.futures, datatrove and
    (not ``--quick``) a sequential loop, each one command run in ``cfg.work/<tag>-<name>``.

    ``sizes(rep)`` is the index count of repetition ``rep`` (``-1``: the warm-up); every run
    must report every index done, then pass ``check``.
    """
    mpx = h.mpiexec()

    def peer(argv_fn: Callable[[Path, int], list[str]], name: str):
        def fn(rep: int) -> tuple[float, dict[str, Any]]:
            k = sizes(rep)
            d = cfg.fresh(f"{tag}-{name}")
            d.mkdir(parents=True)
            r = run_timed(argv_fn(d, k), env=cfg.env)
            if r.result.get("done") != k:
                raise RuntimeError(f"{name} did {r.result.get('done')} of {k} indices")
            if check is not None:
                check(r.result, d, k, name)
            rm(d)
            return r.seconds, {"inner_s": r.result.get("inner_s")}

        return fn

    def mod(name: str) -> Callable[[Path, int], list[str]]:
        return lambda d, k: [
            h.PYTHON, "-m", "benchmarks.contenders", name, "--workload", workload,
            "--n", str(k), "--out", str(d), "--workers", str(WORKERS),
        ]  # fmt: skip

    def raw_argv(d: Path, k: int) -> list[str]:
        return [mpx, "-n", str(WORKERS), *mod("raw-mpi")(d, k)]

    def fut_argv(d: Path, k: int) -> list[str]:
        return [mpx, "-n", str(WORKERS + 1), h.PYTHON, "-m", "mpi4py.futures",
                *mod("mpi-futures")(d, k)[1:]]  # fmt: skip

    missing = None
    if importlib.util.find_spec("datatrove") is None:
        missing = "datatrove is not installed (pip install datatrove)"
    peers = [
        ("raw_mpi", raw_argv, "raw mpi4py strided loop (mpiexec -n 2)", None),
        ("hpc_pool", mod("hpc-pool"), "hpc-curator: run_pipeline process_pool, 2", None),
        ("joblib", mod("joblib"), "joblib Parallel(loky, 2)", None),
        ("dask", mod("dask"), "dask.bag processes, 2 workers", None),
        ("mpi_futures", fut_argv, "mpi4py.futures MPIPoolExecutor (2 workers)", None),
        ("datatrove", mod("datatrove"), "datatrove LocalPipelineExecutor (2)", missing),
    ]
    out = [
        Contender(name, peer(argv, name), label=label, unavailable=why)
        for name, argv, label, why in peers
    ]
    if not cfg.quick:
        out.append(Contender("seq", peer(mod("seq"), "seq"), label="sequential loop (1 process)"))
    return out


def _contenders(
    cfg: Config, workload: str, n: int, schedules: tuple[str, ...], tag: str
) -> list[Contender]:
    """hpc-curator (one contender per schedule) and every peer, on ``workload`` x ``n``."""
    spec = f"{WORKLOADS}:{workload}"

    def size(rep: int) -> int:
        return n if rep >= 0 else min(n, 100)  # warm-up: small

    def hpc(schedule: str) -> Callable[[int], tuple[float, dict[str, Any]]]:
        def fn(rep: int) -> tuple[float, dict[str, Any]]:
            k = size(rep)
            d = cfg.fresh(f"{tag}-hpc-{schedule}")
            cmd = [*h.hpc_curate(), "run", spec, "-p", f"n={k}", "--ranks", str(WORKERS)]
            cmd += ["--schedule", schedule, "--run-dir", str(d / "run"), "-q"]
            t_launch = time.time()
            r = run_timed(cmd, env=cfg.env)
            check_complete(d / "run", k)
            extra = phases(d / "run", t_launch, r.seconds)
            rm(d)
            return r.seconds, extra

        return fn

    ours = [
        Contender(f"hpc_{s}", hpc(s), label=f"hpc-curator: run --ranks 2 --schedule {s}")
        for s in schedules
    ]
    return ours + peer_contenders(cfg, workload, size, tag)


def _table(data: dict[str, Any], ours: list[str]) -> list[dict[str, Any]]:
    """Rows with each contender's ratio to the raw loop and to hpc-curator's first schedule."""
    rows = rows_from(data)
    for r in rows:
        parts = []
        if r["name"] != "raw_mpi":
            parts.append(ratio_text(h.ratios(data, r["name"], "raw_mpi"), "raw"))
        if r["name"] != ours[0]:
            rr = h.ratios(data, r["name"], ours[0])
            if rr["median"] is not None:
                parts.append(f"{rr['median']:.3f}x {ours[0]}")
        r["ratio"] = "; ".join(p for p in parts if p)
    return rows


def _ahead(data: dict[str, Any], ours: str, label: str) -> dict[str, Any] | None:
    """Target: every peer takes longer than ``ours`` (closest peer named)."""
    others = [
        (k, h.ratios(data, k, ours)["median"])
        for k in data
        if not k.startswith("hpc_") or k == "hpc_pool"
    ]
    others = [(k, r) for k, r in others if k not in ("raw_mpi", "seq") and r is not None]
    if not others:
        return None
    name, ratio = min(others, key=lambda kr: kr[1])
    t = target(f"{label}: ahead of every peer (closest: {name})", ratio, 1.0, "x", "higher")
    t["measured"] = f"{name} takes {ratio:.3f}x hpc-curator's time"
    return t


def p11(cfg: Config) -> dict[str, Any]:
    """W0 no-op at 1,000 and 100,000 indices, 2 workers: hpc-curator vs every peer."""
    sizes = (200, 2000) if cfg.quick else (1000, 100_000)
    contenders: list[Contender] = []
    for n in sizes:
        for c in _contenders(cfg, "w0", n, ("strided",), f"p11-{n}"):
            c.name, c.label = f"{c.name}@{n}", f"{c.label}, {n:,}"
            contenders.append(c)
    data = interleave(contenders, cfg.reps, warmup=not cfg.quick, log=cfg.log)
    rows: list[dict[str, Any]] = []
    targets = []
    for n in sizes:
        part = {k.split("@")[0]: v for k, v in data.items() if k.endswith(f"@{n}")}
        rows += [{**r, "name": f"{r['name']}@{n}"} for r in _table(part, ["hpc_strided"])]
        rows += phase_rows(f"hpc@{n}", f"hpc {n:,}", part["hpc_strided"]["extra"])
        ratio = h.ratios(part, "hpc_strided", "raw_mpi")["median"]
        what = "start-up" if n == sizes[0] else "whole command"
        targets.append(target(f"T1 W0 {n:,}: {what} <= 2.0x raw", ratio, 2.0, "x"))
        ahead = _ahead(part, "hpc_strided", f"T1 W0 {n:,}")
        if ahead:
            targets.append(ahead)
        targets.append(rss_target(part, "hpc_strided", "raw_mpi", f"W0 {n:,}"))
        rows += memory_rows({f"{k}@{n}": v for k, v in part.items()})
    return {
        "title": f"W0 no-op against every peer ({' and '.join(f'{n:,}' for n in sizes)} indices)",
        "description": (
            "W0 = NoopSource -> NullSink, 2 workers. Whole-command wall times (interpreter, "
            "imports, MPI start-up and teardown included); hpc-curator journals and fsyncs "
            "every commit (1,000 indices) and writes its manifest. Ratios are per-repetition "
            "pairs."
        ),
        "rows": rows,
        "targets": targets,
    }


def p12(cfg: Config) -> dict[str, Any]:
    """W2 heavy-tailed, 1,000 indices, 2 workers: both schedules vs every peer."""
    n = 100 if cfg.quick else 1000
    ours = ["hpc_dynamic", "hpc_strided"]
    data = interleave(
        _contenders(cfg, "w2", n, ("dynamic", "strided"), "p12"),
        cfg.reps,
        warmup=not cfg.quick,
        log=cfg.log,
    )
    rows = _table(data, ours)
    for s in ours:
        rows += phase_rows(s, s.replace("_", " "), data[s]["extra"])
    rows += memory_rows(data)
    best = min(ours, key=lambda s: data[s]["median"] or float("inf"))
    ratio = h.ratios(data, best, "raw_mpi")["median"]
    dyn = h.ratios(data, "hpc_dynamic", "hpc_strided")["median"]
    targets = [
        target(f"T2 W2 {n:,}: best schedule ({best}) <= 1.08x raw", ratio, 1.08, "x"),
        target(f"T2 W2 {n:,}: dynamic / strided <= 1.0", dyn, 1.0, "x"),
    ]
    ahead = _ahead(data, best, f"W2 {n:,}")
    if ahead:
        targets.append(ahead)
    if peak_rss(data, "hpc_dynamic") and peak_rss(data, "raw_mpi"):
        targets.append(rss_target(data, "hpc_dynamic", "raw_mpi", f"W2 {n:,}"))
    return {
        "title": f"W2 heavy-tailed against every peer ({n:,} indices, {WORKERS} workers)",
        "description": (
            "W2 = ParetoSource (sleep cost ~ Pareto(alpha=1.5), mean 4 ms, seed 0) -> NullSink. "
            "Whole-command wall times; the peers schedule as they do by default (joblib and "
            "dask in batches, mpi4py.futures one task at a time, the raw loop strided)."
        ),
        "rows": rows,
        "targets": targets,
    }
