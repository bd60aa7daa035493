"""P8: the same work as one MPI job and as an elastic job array, on the local Slurm cluster.

The case starts its own 4-node cluster (``tests/slurm/cluster.sh start``, stopped by the
same script afterwards: it ends exactly the daemons it recorded) and runs W2 (heavy-tailed
sleeps: no CPU contention on a small machine) with 4 workers both ways:

- ``mpi``: ``submit --nodes 2 --ntasks-per-node 2 --wait`` (one MPI world, gang-scheduled);
- ``array``: ``submit --array 4 --wait`` (4 independent tasks claiming chunks).

Each on an idle cluster and on a busy one (a 3-node ``--exclusive`` job of
:data:`BLOCKER_S` seconds submitted just before), where the MPI job waits for two free nodes
and the array's tasks start on the one that is free. Measured from outside: the whole
command, and from the run's own records the time from submission to the first rank (task)
loop start. The cost of claims is measured in-process on a synthetic board (every claim,
done mark and listing on the local disk) and counted per run (claim files).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import harness as h
from benchmarks.cases.common import (
    WORKLOADS,
    Config,
    check_complete,
    derived_row,
    rm,
    rows_from,
    target,
)
from benchmarks.harness import CommandFailed, Contender, run_timed

CLUSTER_SH = h.ROOT / "tests" / "slurm" / "cluster.sh"
BLOCKER_S = 20


def _free_ports(base: int, count: int) -> bool:
    for port in range(base, base + count):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


class Cluster:
    """A local Slurm cluster for the case (started and stopped with ``cluster.sh``)."""

    def __init__(self, work: Path) -> None:
        # short (unix sockets live below it), not yet there: cluster.sh makes it, world-readable
        self.dir = Path(f"/tmp/slb-{uuid.uuid4().hex[:8]}")
        self.log = work / "cluster.sh.log"
        base = next(
            (b for b in random.sample(range(30000, 40000, 100), 50) if _free_ports(b, 20)), 16817
        )
        self.env = {
            **os.environ,
            "SLC_NODES": "4",
            "SLC_CPUS": "4",
            "SLC_ACCOUNTING": "1",
            "SLC_PORT_BASE": str(base),
        }
        self.env.pop("SLURM_CONF", None)

    def script(self, cmd: str, timeout: float) -> int:
        with self.log.open("ab") as out:
            return subprocess.run(
                ["bash", str(CLUSTER_SH), cmd, str(self.dir)], env=self.env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout, check=False,
            ).returncode  # fmt: skip

    def __enter__(self) -> Cluster:
        if shutil.which("slurmctld") is None:
            raise RuntimeError("Slurm is not installed (bash tests/slurm/cluster.sh install)")
        if self.script("start", 300) != 0:
            self.script("stop", 120)
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"cluster.sh start failed:\n{tail}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.script("stop", 120) == 0:
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def conf(self) -> str:
        return str(self.dir / "etc" / "slurm.conf")


def _first_loop_start(run_dir: Path) -> float:
    doc = json.loads((run_dir / "manifest.json").read_text())
    return min(r["started"] for r in doc["ranks"])


def p8(cfg: Config) -> dict[str, Any]:
    """Array vs MPI job of the same W2 work, idle and busy cluster (local Slurm)."""
    n, mean_ms = (400, 5.0) if cfg.quick else (4000, 5.0)
    spec = f"{WORKLOADS}:w2"
    with Cluster(cfg.work) as cluster:
        env = {**cfg.env, "SLURM_CONF": cluster.conf}

        def slurm(*argv: str) -> str:
            proc = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
            return proc.stdout.strip()

        def run(mode: str, busy: bool):
            shape = (
                ["--nodes", "2", "--ntasks-per-node", "2"] if mode == "mpi" else ["--array", "4"]
            )

            def fn(rep: int) -> tuple[float, dict[str, Any]]:
                d = cfg.fresh(f"p8-{mode}-{'busy' if busy else 'idle'}")
                blocker = None
                if busy:
                    blocker = slurm("sbatch", "--parsable", "--nodes", "3", "--exclusive",
                                    "--time", "2", "--output", "/dev/null",
                                    "--wrap", f"sleep {BLOCKER_S}")  # fmt: skip
                    time.sleep(1.0)  # the blocker is running before the run is submitted
                argv = [*h.hpc_curate(), "submit", spec, "-p", f"n={n}", "-p", f"mean_ms={mean_ms}",
                        "--run-dir", str(d), "--time", "10", *shape, "--wait"]  # fmt: skip
                t0 = time.time()
                try:
                    r = run_timed(argv, env=env, timeout=600)
                except CommandFailed as exc:
                    if "MPI_Init" not in str(exc) and "pmi" not in str(exc).lower():
                        raise
                    # the PyPI MPICH wheel under Slurm 22.05 pmi2 fails MPI_Init now and then
                    # (PMI lines longer than 1,024 bytes, see the README): once more
                    rm(d)
                    t0 = time.time()
                    r = run_timed(argv, env=env, timeout=600)
                finally:
                    if blocker:
                        subprocess.run(["scancel", blocker], env=env, capture_output=True)
                check_complete(d, n)
                extra = {"first_loop_s": _first_loop_start(d) - t0}
                claims = d / "claims" / "a0001"
                if claims.is_dir():
                    extra["claim_files"] = len(list(claims.iterdir()))
                rm(d)
                return r.seconds, extra

            return fn

        contenders = [
            Contender(f"{m}_{s}", run(m, s == "busy"), label=f"{label}, {s} cluster")
            for s in ("idle", "busy")
            for m, label in (("mpi", "MPI job 2 nodes x 2 ranks"), ("array", "job array of 4"))
        ]
        for c in contenders:
            c.required = True
        data = h.interleave(contenders, max(1, min(cfg.reps, 3)), warmup=False, log=cfg.log)
    rows = rows_from(data)
    first: dict[str, float | None] = {}
    for c in contenders:
        vals = [e["first_loop_s"] for e in data[c.name]["extra"]]
        row = derived_row(f"{c.name}_first", f"  {c.label}: submission to first loop", vals, "s")
        rows.append(row)
        first[c.name] = row["median"]
    files = [e["claim_files"] for c in ("array_idle", "array_busy")
             for e in data[c]["extra"] if "claim_files" in e]  # fmt: skip
    rows.append(derived_row("claim_files", "  claim-board files per array run", files, ""))
    rows += _claim_cost(cfg)
    targets = []
    if first.get("array_busy") is not None and first.get("mpi_busy") is not None:
        targets.append(
            target(
                "busy cluster: the array's first task starts before the MPI job (ratio <= 0.5)",
                first["array_busy"] / max(first["mpi_busy"], 1e-9),
                0.5,
                "x",
            )
        )
    return {
        "title": "Job array vs MPI job (local Slurm)",
        "description": f"W2 {n} indices, mean {mean_ms} ms (sleeps), 4 workers; busy = a "
        f"3-node exclusive job of {BLOCKER_S} s submitted 1 s before. Whole command "
        "(submit --wait) and submission to first rank/task loop start.",
        "rows": rows,
        "targets": targets,
    }


def _claim_cost(cfg: Config) -> list[dict[str, Any]]:
    """Seconds per claim (claim + done mark) on a synthetic board of 2,000 chunks."""
    import numpy as np

    from hpc_curator.engine.elastic import Board
    from hpc_curator.store import rundir

    d = cfg.fresh("p8-board")
    board = Board(rundir.RunDir(d), 1)
    board.dir.mkdir(parents=True)
    chunks = 200 if cfg.quick else 2000
    t0 = time.perf_counter()
    got = 0
    while (c := board.claim(0, chunks, 1)) is not None:
        board.done(c[0])
        got += 1
    per_claim = (time.perf_counter() - t0) / max(got, 1)
    np.testing.assert_equal(got, chunks)
    rm(d)
    return [
        derived_row(
            "claim_s",
            f"  one claim + done mark, board of {chunks} chunks (local disk)",
            [per_claim],
            "s",
        )
    ]
