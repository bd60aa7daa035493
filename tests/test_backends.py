"""Backends: registry, the Python API, and identical results from every in-process pool."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hpc_curator import Pipeline, RunBackend, get_backend, list_backends, register_backend
from hpc_curator.api import run_pipeline
from hpc_curator.backends.base import available_cpus, resolve_n_jobs
from hpc_curator.components import FailOn, FieldStats, HDF5Sink, SyntheticSource
from hpc_curator.errors import BackendError, UsageError
from tests.conftest import assert_stats_equal, manifest_rows, read_manifest, stats
from tests.pipelines import ProbeSink, ThreadProbe


def make(tmp: Path, n: int = 40, fail: str = "") -> Pipeline:
    return (
        Pipeline(SyntheticSource(n=n, shape=(6, 5), fields=("u",)))
        .filter(FailOn(fail))
        .filter(FieldStats(name="stats"))
        .write(HDF5Sink(str(tmp / "out")))
    )


def comparable(run_dir: Path) -> tuple:
    doc = read_manifest(run_dir)
    rows = [
        (r["index"], r["status"], tuple(r["outputs"]), r["error_type"])
        for r in manifest_rows(run_dir)
    ]
    return doc["status"], doc["counts"], rows


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[str]]]:
    tmp = tmp_path_factory.mktemp("seq")
    out = run_pipeline(make(tmp, fail="3"), run_dir=tmp / "run", commit_every=4)
    return tmp / "run", out


@pytest.mark.parametrize("backend", ["process_pool", "loky", "dask"])
def test_pool_backends_match_sequential(
    tmp_path: Path, backend: str, sequential: tuple[Path, list[list[str]]]
) -> None:
    seq_dir, seq_out = sequential
    # same output dir as the sequential run so the recorded output paths compare equal
    out = run_pipeline(
        make(seq_dir.parent, fail="3"),
        n_jobs=2,
        backend=backend,
        run_dir=tmp_path / "run",
        commit_every=4,
    )
    assert out == seq_out
    assert out.result.exit_code == 1 and out.result.counts["failed"] == 1
    assert comparable(tmp_path / "run") == comparable(seq_dir)
    assert_stats_equal(stats(tmp_path / "run"), stats(seq_dir))
    ranks = {r["rank"] for r in manifest_rows(tmp_path / "run")}
    assert ranks == {0, 1}  # worker slots, not PIDs
    names = {p.name.split(".")[1] for p in (tmp_path / "run" / "shards" / "stats").iterdir()}
    assert names == {"rank00000", "rank00001"}


def test_run_pipeline_returns_outputs_in_input_order(tmp_path: Path) -> None:
    out = run_pipeline(
        make(tmp_path, n=20, fail="2"),
        n_jobs=2,
        backend="process_pool",
        indices=[9, 3, 2, 15],
        run_dir=tmp_path / "r",
    )
    assert [Path(p[0]).name if p else None for p in out] == [
        "00000009.h5",
        "00000003.h5",
        None,
        "00000015.h5",
    ]
    assert out.result.status == "failed"


def test_run_pipeline_default_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = run_pipeline(make(tmp_path, n=3))
    assert Path(out.run_dir).parent == tmp_path / "hpc-curator-runs"
    assert out.result.exit_code == 0


@pytest.mark.mpi
def test_mpi_backend_through_the_python_api(tmp_path: Path) -> None:
    pytest.importorskip("mpi4py")
    out = run_pipeline(make(tmp_path, n=12), n_jobs=2, backend="mpi", run_dir=tmp_path / "r")
    assert out.result.exit_code == 0 and all(len(p) == 1 for p in out)
    assert read_manifest(tmp_path / "r")["world_size"] == 2


def test_resume_through_the_api_runs_only_pending(tmp_path: Path) -> None:
    run_pipeline(make(tmp_path, n=10), indices="0:10", run_dir=tmp_path / "r")
    again = run_pipeline(make(tmp_path, n=10), indices="0:10", run_dir=tmp_path / "r")
    assert again.result.counts["ok"] == 10
    assert {r["attempt"] for r in manifest_rows(tmp_path / "r")} == {1}


def test_registry_lists_and_rejects() -> None:
    names = {b.name for b in list_backends()}
    assert {"sequential", "process_pool", "loky", "dask", "mpi"} <= names
    with pytest.raises(BackendError, match=r"unknown backend 'nope'.*sequential"):
        get_backend("nope")


def test_register_backend_adds_one_module_worth(tmp_path: Path) -> None:
    calls = []

    @register_backend
    class Recording(RunBackend):
        name = "recording-test"
        requires = ("definitely_not_installed_pkg",)

        def launch(self, launch, *, stop=None, on_commit=None):  # type: ignore[no-untyped-def]
            calls.append(launch)

    info = {b.name: b for b in list_backends()}["recording-test"]
    assert not info.available and info.missing == ("definitely_not_installed_pkg",)
    with pytest.raises(BackendError, match="needs definitely_not_installed_pkg"):
        get_backend("recording-test")


def test_n_jobs_minus_one_uses_affinity_and_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_n_jobs(-1) == len(os.sched_getaffinity(0))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert available_cpus() == 1
    with pytest.raises(UsageError):
        resolve_n_jobs(0)


def test_dynamic_schedule_needs_mpi(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="dynamic schedule needs MPI"):
        run_pipeline(
            make(tmp_path),
            n_jobs=2,
            backend="process_pool",
            schedule="dynamic",
            run_dir=tmp_path / "r",
        )
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("backend", ["process_pool", "dask"])
def test_pool_workers_get_their_share_of_blas_threads(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 workers: each gets cpus // 2 BLAS threads (here 1), like the mpi backend's ranks."""
    if backend == "dask":
        pytest.importorskip("dask")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    pipe = (
        Pipeline(SyntheticSource(n=6, shape=(4, 4), fields=("u",)))
        .filter(ThreadProbe())
        .write(ProbeSink(str(tmp_path / "probe")))
    )
    out = run_pipeline(pipe, n_jobs=2, backend=backend, run_dir=tmp_path / "run")
    expected = str(max(1, available_cpus() // 2))
    probes = [p for paths in out for p in json.loads(Path(paths[0]).read_text())]
    assert len(probes) == 6
    assert {p["OPENBLAS_NUM_THREADS"] for p in probes} == {expected}
    assert {p["OMP_NUM_THREADS"] for p in probes} == {expected}
    if backend == "process_pool" and expected == "1":
        # OpenBLAS read it at numpy's import: no BLAS threads besides the main one
        assert {p["threads"] for p in probes} == {1}
    assert "OPENBLAS_NUM_THREADS" not in os.environ  # the parent's environment is restored
