"""Every public name of ``hpc_curator`` imports (the lazy map points at real attributes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import hpc_curator


def test_every_name_in_all_resolves() -> None:
    for name in hpc_curator.__all__:
        value = getattr(hpc_curator, name)
        assert value is not None, name
        if name != "__version__":
            assert getattr(value, "__name__", name) == name, name


def test_star_import_in_a_fresh_interpreter() -> None:
    code = "from hpc_curator import *; print(RunSettings.__name__, RunResult.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["RunSettings", "RunResult"]


def test_two_calls_without_a_run_dir_never_share_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two run_pipeline calls in the same second: each runs its sink for every index."""
    from hpc_curator import Pipeline, run_pipeline
    from hpc_curator.components import HDF5Sink, SyntheticSource

    monkeypatch.chdir(tmp_path)
    outs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        pipe = Pipeline(SyntheticSource(n=3, shape=(2,), fields=("u",))).write(HDF5Sink(str(out)))
        outs.append(run_pipeline(pipe, progress=False))
    assert [len(o) for o in outs] == [3, 3] and all(len(p) == 1 for o in outs for p in o)
    for k in range(2):  # each call's sink ran for every index, into its own directory
        assert len(list((tmp_path / f"out{k}").iterdir())) == 3
        assert all(str(tmp_path / f"out{k}") in p[0] for p in outs[k])
    runs = sorted((tmp_path / "hpc-curator-runs").iterdir())
    assert len(runs) == 2
