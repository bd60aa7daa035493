"""The benchmark cases P1..P6 of issue 6 (sizes, contenders, derived numbers, targets)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness as h
from benchmarks.harness import Contender, fmt, run_timed

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
}  # fmt: skip


def interleave(contenders: list[Contender], reps: int, *, warmup: bool, log: Any):
    """:func:`harness.interleave` with hpc-curator's own contenders marked required."""
    for c in contenders:
        c.required = c.name in REQUIRED
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


def derived_row(name: str, label: str, values: list[float], unit: str, note: str = ""):
    s = h.summary(values)
    return {"name": name, "label": label, "unit": unit, "values": values, "note": note, **s}


def ratio_text(r: dict[str, Any], ref: str) -> str:
    if r.get("median") is None:
        return ""
    return f"{r['median']:.3f}x {ref} ({r['min']:.3f}-{r['max']:.3f})"


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
        ],
    }


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
        target("hpc-curator mpiexec / raw mpi4py loop <= 1.03", hpc_vs_raw["median"], 1.03, "x")
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


# -- P4 ------------------------------------------------------------------------------------
HEAVY = ("numpy", "h5py", "mpi4py", "submitit", "pyarrow")


def p4(cfg: Config) -> dict[str, Any]:
    """CLI latency: hpc-curate --help and submit --dry-run (whole command, console script)."""
    hc = h.hpc_curate()
    d = cfg.work / "p4-never-created"

    def cmd(argv: list[str]):
        def fn(rep: int) -> tuple[float, dict[str, Any]]:
            return run_timed(argv, env=cfg.env).seconds, {}

        return fn

    dry = [*hc, "submit", str(h.ROOT / "examples" / "synthetic.py") + ":build", "--run-dir", str(d)]
    contenders = [
        Contender("python", cmd([h.PYTHON, "-c", "pass"]), label="python -c pass (floor)"),
        Contender("help", cmd([*hc, "--help"]), label="hpc-curate --help"),
        Contender(
            "dry_run", cmd([*dry, "--nodes", "2", "--dry-run"]), label="hpc-curate submit --dry-run"
        ),
    ]
    data = interleave(contenders, 3 if cfg.quick else max(cfg.reps, 10), warmup=True, log=cfg.log)
    imported = {}
    for name, argv in (("help", [h.PYTHON, "-X", "importtime", "-m", "hpc_curator", "--help"]),):
        r = run_timed(argv, env=cfg.env)
        mods = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}
        imported[name] = sorted(m for m in HEAVY if m in mods)
    rows = rows_from(data)
    rows.append(
        {
            "name": "help_heavy_imports",
            "label": "heavy modules imported by --help",
            "median": None,
            "n": 0,
            "unit": "",
            "note": ", ".join(imported["help"]) or "none (lazy imports hold)",
        }
    )
    if d.exists():
        rows[-1]["note"] += "; WARNING: --dry-run created the run dir"
    med = {k: v["median"] for k, v in data.items()}
    return {
        "title": "CLI latency",
        "description": "Whole-command wall time of the console script next to the interpreter.",
        "rows": rows,
        "targets": [
            target("hpc-curate --help <= 0.3 s", med["help"], 0.3, "s"),
            target("hpc-curate submit --dry-run <= 0.5 s", med["dry_run"], 0.5, "s"),
        ],
    }


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


CASES: dict[str, tuple[str, Callable[[Config], dict[str, Any]]]] = {
    "P1": ("overhead", p1),
    "P2": ("throughput", p2),
    "P3": ("merge and manifest", p3),
    "P4": ("CLI latency", p4),
    "P5": ("imbalance", p5),
    "P6": ("scale", p6),
}
