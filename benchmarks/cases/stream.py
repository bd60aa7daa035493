"""P10: the streamed manifest and resume scan (fold.py) at 10^6 .. 10^8 indices, 10^4 journals."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks import harness as h
from benchmarks.cases.common import Config, derived_row, rows_from, target
from benchmarks.harness import Contender, run_timed

#: sizes measured (``BENCH_P10_SIZES=1e6,1e7,1e8``); 10^8 needs ~12 GB of disk and ~15 min
SIZES_ENV = "BENCH_P10_SIZES"
JOURNALS = 10_000
#: the in-memory path (journal.scan) is measured up to this size (a peer: what it replaces)
IN_MEMORY_MAX = 10_000_000
LIMIT_MIB = 4096


def _sizes(cfg: Config) -> list[int]:
    raw = os.environ.get(SIZES_ENV)
    if raw:
        return [int(float(x)) for x in raw.split(",") if x.strip()]
    return [100_000, 1_000_000] if cfg.quick else [1_000_000, 10_000_000]


def p10(cfg: Config) -> dict[str, Any]:
    """Manifest (fold + summarize + write) and resume scan, streamed vs in memory, by size."""
    from benchmarks import probe

    rows: list[dict[str, Any]] = []
    targets = []
    per_index: dict[str, list[float]] = {"fold_manifest": [], "fold_scan": []}
    sizes = _sizes(cfg)
    for n in sizes:
        d = cfg.fresh(f"p10-{n}")
        t0 = time.perf_counter()
        probe.build_journal_run(d, n, JOURNALS, per_commit=min(1000, max(1, n // JOURNALS)))
        cfg.log(f"    built {n:,} indices in {JOURNALS:,} journals in "
                f"{time.perf_counter() - t0:.0f} s")  # fmt: skip

        def measure(what: str, run_dir: Path = d):
            def fn(rep: int) -> tuple[float, dict[str, Any]]:
                cmd = [h.PYTHON, "-m", "benchmarks.probe", what, str(run_dir)]
                r = run_timed(cmd, env=cfg.env)
                return r.result["seconds"], r.result

            return fn

        contenders = [
            Contender(f"fold_manifest_{n}", measure("fold_manifest"),
                      label=f"manifest, streamed (fold.py), {n:,} indices"),
            Contender(f"fold_scan_{n}", measure("fold_scan"),
                      label=f"resume scan, streamed (fold.status), {n:,} indices"),
        ]  # fmt: skip
        if n <= IN_MEMORY_MAX:
            contenders += [
                Contender(f"manifest_{n}", measure("manifest"),
                          label=f"  peer: manifest in memory (journal.scan), {n:,}"),
                Contender(f"scan_{n}", measure("scan"),
                          label=f"  peer: resume scan in memory (journal.scan), {n:,}"),
            ]  # fmt: skip
        for c in contenders[:2]:
            c.required = True  # hpc-curator's own: a failure fails the case
        reps = cfg.reps if n <= 1_000_000 else 1
        data = h.interleave(contenders, reps, warmup=False, log=cfg.log)
        rows += rows_from(data)
        for name, d_ in data.items():
            rss = [e["peak_rss_mib"] for e in d_["extra"]]
            if rss:
                rows.append(derived_row(f"{name}_rss", f"  {name}: peak RSS", rss, "MiB",
                                        "whole process"))  # fmt: skip
        for kind in per_index:
            med = data[f"{kind}_{n}"]["median"]
            per_index[kind].append(med / n * 1e6)
            peak = h.summary([e["peak_rss_mib"] for e in data[f"{kind}_{n}"]["extra"]])["max"]
            targets.append(target(f"{kind} {n:,} indices peak RSS <= 4 GiB", peak, LIMIT_MIB,
                                  "MiB"))  # fmt: skip
        shutil.rmtree(d, ignore_errors=True)
    for kind, us in per_index.items():  # linear time: flat across sizes
        note = " / ".join(f"{n:.0e}: {u:.2f}" for n, u in zip(sizes, us, strict=True))
        rows.append(derived_row(f"{kind}_us_per_index", f"{kind}: microseconds per index",
                                us, "us", note))  # fmt: skip
    return {
        "title": "streamed manifest and resume scan",
        "description": (
            "Synthetic finished runs (benchmarks/probe.py) of "
            f"{', '.join(f'{n:,}' for n in sizes)} "
            f"indices strided over {JOURNALS:,} journals, one output path per index, 100 failures "
            "with tracebacks. Streamed: fold.py with its default HPC_CURATOR_MANIFEST_ROWS "
            "(250,000 rows per part, at most 256 buckets; smaller runs take the in-memory path). "
            "Each measurement "
            "in a fresh process; peak RSS from getrusage."
        ),
        "rows": rows,
        "targets": targets,
    }
