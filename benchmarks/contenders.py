"""The contenders: the same per-index work run by the tools users would pick instead.

Each contender is one command, timed from the outside by the harness (whole command wall time,
interpreter start-up and imports included, exactly like ``hpc-curate run``)::

    python -m benchmarks.contenders seq        --workload w1 --n 1000 --out DIR
    mpiexec -n 2 python -m benchmarks.contenders raw-mpi --workload w1 --n 1000 --out DIR
    python -m benchmarks.contenders joblib     --workload w1 --n 1000 --out DIR --workers 2
    python -m benchmarks.contenders dask       --workload w1 --n 1000 --out DIR --workers 2
    mpiexec -n 3 python -m mpi4py.futures -m benchmarks.contenders mpi-futures --workload w1 ...
    python -m benchmarks.contenders datatrove  --workload w1 --n 1000 --out DIR --workers 2
    python -m benchmarks.contenders hpc-pool   --workload w1 --n 1000 --out DIR --workers 2

Every contender runs the plain callables of :mod:`benchmarks.workloads` (same source, transform
and sink objects as the hpc-curator pipeline), reduces W1's per-index moments into one
FieldStats-format file (``DIR/stats.h5``) and prints one line ``RESULT {json}`` with the number
of indices done and the reduced count, which the harness checks. ``hpc-pool`` is hpc-curator's
Python API (``run_pipeline(..., backend="process_pool")``), journaling included.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

T_START = time.perf_counter()


def make_work(args: argparse.Namespace) -> Any:
    from benchmarks import workloads as w

    if args.workload == "w0":
        return w.W0Work(args.n)
    if args.workload == "w1":
        return w.W1Work(args.n, str(Path(args.out) / "fields"))
    if args.workload == "w2":
        return w.W2Work(args.n)
    raise SystemExit(f"unknown workload {args.workload}")


def finish(args: argparse.Namespace, results: list[Any], extra: dict[str, Any] | None = None):
    """Reduce W1 moments into DIR/stats.h5 and print the RESULT line."""
    out: dict[str, Any] = {"contender": args.name, "done": len(results)}
    if args.workload == "w1":
        from benchmarks.workloads import reduce_moments, write_stats

        m = reduce_moments(r[1] for r in results)
        write_stats(m, str(Path(args.out) / "stats.h5"))
        out["count"] = m.count
        out["mean"] = m.mean
    out["inner_s"] = time.perf_counter() - T_START
    out.update(extra or {})
    print("RESULT " + json.dumps(out), flush=True)


# -- contenders ----------------------------------------------------------------------------
def run_seq(args: argparse.Namespace) -> None:
    work = make_work(args)
    finish(args, [work(i) for i in range(args.n)])


def run_raw_mpi(args: argparse.Namespace) -> None:
    """A raw mpi4py strided loop: rank r does range(r, n, size); gather results on rank 0."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    work = make_work(args)
    done, moments = 0, []
    for i in range(rank, args.n, size):
        result = work(i)
        done += 1
        if args.workload == "w1":
            moments.append(result[1])
    local: Any = None
    if args.workload == "w1":
        from benchmarks.workloads import reduce_moments

        local = reduce_moments(moments)
    parts = comm.gather((done, local), root=0)
    if rank != 0:
        return
    assert parts is not None
    out: dict[str, Any] = {"contender": args.name, "done": sum(p[0] for p in parts), "ranks": size}
    if args.workload == "w1":
        from benchmarks.workloads import reduce_moments, write_stats

        total = reduce_moments(p[1] for p in parts)
        write_stats(total, str(Path(args.out) / "stats.h5"))
        out.update(count=total.count, mean=total.mean)
    out["inner_s"] = time.perf_counter() - T_START
    print("RESULT " + json.dumps(out), flush=True)


def run_joblib(args: argparse.Namespace) -> None:
    from joblib import Parallel, delayed

    work = make_work(args)
    results = Parallel(n_jobs=args.workers, backend="loky")(delayed(work)(i) for i in range(args.n))
    finish(args, list(results))


def run_dask(args: argparse.Namespace) -> None:
    import dask.bag as db

    work = make_work(args)
    bag = db.from_sequence(range(args.n), npartitions=args.workers * 8).map(work)
    finish(args, list(bag.compute(scheduler="processes", num_workers=args.workers)))


def run_mpi_futures(args: argparse.Namespace) -> None:
    """Rank 0 of ``mpiexec -n W+1 python -m mpi4py.futures -m benchmarks.contenders ...``."""
    from mpi4py.futures import MPIPoolExecutor

    work = make_work(args)
    with MPIPoolExecutor() as pool:
        results = list(pool.map(work, range(args.n), chunksize=args.chunksize))
    finish(args, results)


class DatatroveStep:
    """A datatrove pipeline step (callable form): task ``rank`` runs its strided share."""

    def __init__(self, work: Any, n: int, out: str) -> None:
        self.work, self.n, self.out = work, n, out

    def __call__(self, data: Any, rank: int = 0, world_size: int = 1) -> None:
        results = [self.work(i) for i in range(rank, self.n, world_size)]
        moments = [r[1] for r in results] if results and isinstance(results[0], tuple) else []
        Path(self.out, f"task-{rank:05d}.json").write_text(
            json.dumps({"done": len(results), "moments": moments})
        )


def run_datatrove(args: argparse.Namespace) -> None:
    import logging

    from datatrove.executor import LocalPipelineExecutor

    logging.getLogger().setLevel(logging.WARNING)
    try:  # datatrove logs every task through loguru; keep stderr readable
        from loguru import logger

        logger.remove()
    except Exception:
        pass
    work = make_work(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    executor = LocalPipelineExecutor(
        pipeline=[DatatroveStep(work, args.n, args.out)],
        tasks=args.workers,
        workers=args.workers,
        logging_dir=str(Path(args.out) / "datatrove-logs"),
        skip_completed=False,
    )
    executor.run()
    results: list[Any] = []
    for p in sorted(Path(args.out).glob("task-*.json")):
        doc = json.loads(p.read_text())
        if doc["moments"]:
            results.extend((None, m) for m in doc["moments"])
        else:
            results.extend([None] * doc["done"])
    finish(args, results)


def run_hpc_pool(args: argparse.Namespace) -> None:
    """hpc-curator's Python API with the process_pool backend (journaling on)."""
    from benchmarks import workloads as w
    from hpc_curator import run_pipeline

    if args.workload == "w1":
        pipeline = w.w1(str(args.n), out=str(Path(args.out) / "fields"))
    elif args.workload == "w0":
        pipeline = w.w0(str(args.n))
    else:
        pipeline = w.w2(str(args.n))
    outs = run_pipeline(
        pipeline, n_jobs=args.workers, backend="process_pool", run_dir=str(Path(args.out) / "run")
    )
    res = outs.result
    extra: dict[str, Any] = {"exit_code": res.exit_code, "status": res.status}
    if args.workload == "w1":
        from hpc_curator.components import read_fieldstats

        stats = read_fieldstats(res.manifest["outputs"]["stats"]["path"])["u"]
        extra.update(count=stats["count"], mean=stats["mean"])
    print(
        "RESULT "
        + json.dumps(
            {
                "contender": args.name,
                "done": res.counts.get("ok", 0),
                "inner_s": time.perf_counter() - T_START,
                **extra,
            }
        ),
        flush=True,
    )


CONTENDERS = {
    "seq": run_seq,
    "raw-mpi": run_raw_mpi,
    "joblib": run_joblib,
    "dask": run_dask,
    "mpi-futures": run_mpi_futures,
    "datatrove": run_datatrove,
    "hpc-pool": run_hpc_pool,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.contenders")
    parser.add_argument("name", choices=sorted(CONTENDERS))
    parser.add_argument("--workload", default="w1", choices=["w0", "w1", "w2"])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--out", default="bench-out")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunksize", type=int, default=4)
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    CONTENDERS[args.name](args)


if __name__ == "__main__":
    main(sys.argv[1:])
