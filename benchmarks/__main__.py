"""``python -m benchmarks [--quick] [--case P2 ...] [--reps N] [--out DIR]``."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks import harness as h
from benchmarks.cases import CASES, DEFAULT_CASES, Config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="hpc-curator benchmarks (issue 6): P1 overhead, P2 throughput, P3 merge/"
        "manifest/scan scale, P4 CLI latency, P5 imbalance, P6 64-rank scale, P7 component "
        "timing; only by name: P8 job array vs MPI job on a local Slurm cluster, P9 start-up "
        "metadata operations (strace).",
    )
    parser.add_argument("--quick", action="store_true", help="~1 minute smoke run (CI).")
    parser.add_argument(
        "--case",
        action="append",
        type=str.upper,
        choices=sorted(CASES),
        help="Run only this case (repeatable; default all).",
    )
    parser.add_argument("--reps", type=int, default=None, help="Repetitions (default 5; quick 2).")
    parser.add_argument(
        "--out",
        default=str(h.ROOT / "benchmarks" / "results"),
        help="Directory for <date>-<host>.json and .md (default benchmarks/results).",
    )
    parser.add_argument("--work-dir", default=None, help="Scratch directory (default: a temp dir).")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch directory.")
    parser.add_argument(
        "--blas-threads",
        default="1",
        help="OPENBLAS/OMP/MKL_NUM_THREADS for every timed command ('default' leaves them "
        "unset; default 1, what joblib/loky does for its workers).",
    )
    parser.add_argument(
        "--no-pyc-cache",
        action="store_true",
        help="Leave PYTHONDONTWRITEBYTECODE as it is (default: bytecode cache on, kept outside "
        "the repository via PYTHONPYCACHEPREFIX, like an installed package).",
    )
    parser.add_argument(
        "--snapshot",
        action="store_true",
        help="Benchmark the committed package (git HEAD, extracted to the scratch dir and put "
        "first on PYTHONPATH) instead of the working tree, e.g. while others edit it.",
    )
    args = parser.parse_args(argv)
    reps = args.reps or (1 if args.quick else 5)
    if reps < 1:
        parser.error("--reps must be >= 1")
    blas = None if args.blas_threads == "default" else args.blas_threads
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="hpc-curator-bench-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    snapshot = None
    src = None
    if args.snapshot:
        if "hpc_curator" in sys.modules:
            parser.error("--snapshot must be set before hpc_curator is imported")
        src = work / "src"
        snapshot = h.snapshot_head(src)
        sys.path.insert(0, str(src))
    cfg = Config(
        quick=args.quick,
        reps=reps,
        work=work,
        blas_threads=blas,
        log=lambda s: print(s, file=sys.stderr, flush=True),
        env=h.bench_env(blas, None if args.no_pyc_cache else h.PYCACHE, src),
    )
    selected = args.case or DEFAULT_CASES
    started = time.perf_counter()
    results = {
        "format": "hpc-curator.benchmarks/1",
        "date": h.today(),
        "quick": args.quick,
        "machine": h.machine(),
        "settings": {
            "reps": reps,
            "blas_threads": args.blas_threads,
            "pyc_cache": "off (environment as is)"
            if args.no_pyc_cache
            else f"on (PYTHONPYCACHEPREFIX={h.PYCACHE})",
            "cases": selected,
            "snapshot": snapshot,
        },
        "cases": {},
    }
    failed = False
    try:
        for key in selected:
            name, fn = CASES[key]
            cfg.log(f"{key} ({name}) ...")
            t0 = time.perf_counter()
            load0 = os.getloadavg()[0]
            try:
                case = fn(cfg)
            except Exception as exc:
                failed = True
                traceback.print_exc()
                case = {"title": name, "error": f"{type(exc).__name__}: {exc}", "rows": []}
            if args.quick:
                for t in case.get("targets", []):
                    if t.get("pass") is not None:
                        t["pass"] = None
                        t["by"] = "(quick mode: sizes below the target's, not judged)"
            case["elapsed_s"] = time.perf_counter() - t0
            case["load_average"] = [load0, os.getloadavg()[0]]
            results["cases"][key] = case
            cfg.log(f"{key} done in {case['elapsed_s']:.0f} s")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["elapsed_s"] = time.perf_counter() - started
    print(h.render_console(results))
    js, md = h.write_results(results, Path(args.out))
    print(f"\nresults: {js}\n         {md}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
