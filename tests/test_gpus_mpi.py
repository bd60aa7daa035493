"""One GPU set per rank, mpiexec arguments, and which MPI library ran (in the manifest)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from hpc_curator.errors import WorldError
from hpc_curator.runtime.gpus import GPUS_PER_RANK_ENV, bind
from tests.conftest import cli, read_manifest

PROBE = textwrap.dedent(
    """
    import json, os
    from hpc_curator import Pipeline, Sink
    from hpc_curator.components import SyntheticSource


    class GpuSink(Sink):
        '''Writes what CUDA_VISIBLE_DEVICES the index saw, and by which PID.'''

        def __init__(self, out: str) -> None:
            self.out = out

        def __call__(self, items, index):
            for _ in items:
                pass
            os.makedirs(self.out, exist_ok=True)
            path = os.path.join(self.out, f"{index}.json")
            seen = {"gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}
            with open(path, "w") as fh:
                json.dump(seen, fh)
            return [path]


    def build(out: str) -> Pipeline:
        return Pipeline(SyntheticSource(n=8, shape=(2,), fields=("u",))).write(GpuSink(out))
    """
)


def test_bind_slices_the_nodes_devices_by_local_rank() -> None:
    env = {GPUS_PER_RANK_ENV: "2", "CUDA_VISIBLE_DEVICES": "4,5,6,7", "MPI_LOCALRANKID": "1"}
    assert bind(env) == ["6", "7"] and env["CUDA_VISIBLE_DEVICES"] == "6,7"
    env = {GPUS_PER_RANK_ENV: "1", "SLURM_LOCALID": "3"}  # nothing inherited: ids 0..
    assert bind(env) == ["3"]
    env = {GPUS_PER_RANK_ENV: "1", "CUDA_VISIBLE_DEVICES": "0", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}
    with pytest.raises(WorldError, match="needs 1 GPU"):
        bind(env)
    slurm = {GPUS_PER_RANK_ENV: "1", "CUDA_VISIBLE_DEVICES": "2", "SLURM_STEP_GPUS": "2"}
    assert bind({**slurm, "SLURM_GPUS_PER_TASK": "1", "SLURM_LOCALID": "1"}) == ["2"]  # kept
    assert bind({"CUDA_VISIBLE_DEVICES": "0,1"}) is None  # not asked for


@pytest.mark.mpi
@pytest.mark.parametrize(
    "launch",
    [
        pytest.param(("--ranks", "2", "--mpiexec-arg=-l"), id="mpi"),
        pytest.param(("--backend", "process_pool", "-j", "2"), id="process_pool"),
        pytest.param(("--elastic", "2", "--commit-every", "1"), id="elastic"),
    ],
)
def test_each_rank_sees_only_its_own_gpus(tmp_path: Path, launch: tuple[str, ...]) -> None:
    (tmp_path / "probe.py").write_text(PROBE)
    d, out = tmp_path / "run", tmp_path / "out"
    proc = cli(
        "run", "probe.py:build", "-p", f"out={out}", *launch, "--gpus-per-rank", "2",
        "--run-dir", str(d), "-q", cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": "4,5,6,7"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seen = [json.loads((out / f"{i}.json").read_text()) for i in range(8)]
    by_pid: dict[int, set[str]] = {}
    for s in seen:
        by_pid.setdefault(s["pid"], set()).add(s["gpus"])
    sets = sorted(g for gs in by_pid.values() for g in gs)  # one set per process
    if "--elastic" in launch:  # one task may claim every chunk before the other starts
        assert set(sets) <= {"4,5", "6,7"} and len(sets) == len(by_pid)
    else:
        assert sets == ["4,5", "6,7"]
    ranks = {r["rank"]: r.get("gpus") for r in read_manifest(d)["ranks"]}
    expected = {0: ["4", "5"], 1: ["6", "7"]}
    if "--elastic" in launch:  # the finisher lists the tasks that had ended by then
        assert ranks and all(expected[r] == g for r, g in ranks.items())
    else:
        assert ranks == expected


@pytest.mark.mpi
def test_the_manifest_says_which_mpi_library_ran(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE)
    d = tmp_path / "run"
    proc = cli(
        "run", "probe.py:build", "-p", f"out={tmp_path / 'o'}", "--ranks", "2",
        "--run-dir", str(d), "-q", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    mpi = read_manifest(d)["attempts"][0]["mpi"]
    assert mpi["vendor"] == "MPICH" and mpi["version"].count(".") >= 1 and mpi["library"]
