"""The original system's traps are not kept: n_jobs without a backend, silent replacement."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_curator import Pipeline, RunBackend, register_backend
from hpc_curator.api import run_pipeline
from hpc_curator.backends import _REGISTERED
from hpc_curator.components import FieldStats, SyntheticSource
from hpc_curator.errors import BackendError
from tests.conftest import FIXTURE_PIPELINES, cli, read_manifest


def test_n_jobs_without_a_backend_runs_in_parallel(tmp_path: Path) -> None:
    d = tmp_path / "cli"
    proc = cli("run", f"{FIXTURE_PIPELINES}:stats", "-p", "n=12", "-j", "2", "--run-dir", str(d))
    assert proc.returncode == 0, proc.stderr
    doc = read_manifest(d)
    assert doc["attempts"][0]["launcher"] == "process_pool" and doc["world_size"] == 2
    pipe = Pipeline(SyntheticSource(n=8, shape=(2, 2), fields=("u",))).filter(FieldStats())
    out = run_pipeline(pipe, n_jobs=2, run_dir=tmp_path / "api", progress=False)
    assert out.result.manifest["attempts"][0]["launcher"] == "process_pool"
    alone = run_pipeline(pipe, run_dir=tmp_path / "one", progress=False)
    assert alone.result.manifest["attempts"][0]["launcher"] == "sequential"


def test_registering_under_a_taken_name_needs_replace() -> None:
    class Mine(RunBackend):
        name = "sequential"

        def launch(self, launch, *, stop=None, on_commit=None):  # type: ignore[no-untyped-def]
            raise AssertionError("not called")

    with pytest.raises(BackendError, match="exists already"):
        register_backend(Mine)
    assert "sequential" not in _REGISTERED
    try:
        assert register_backend(Mine, replace=True) is Mine
        assert _REGISTERED["sequential"] is Mine
        assert register_backend(Mine) is Mine  # the same class again is not a conflict
    finally:
        _REGISTERED.pop("sequential", None)
