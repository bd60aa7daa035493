"""A normal (non-editable) install works: the wheel ships its template and runs a pipeline.

The wheel test builds the project's wheel, installs it with its dependencies into a fresh
venv (no editable install, no source tree on sys.path), and from a directory outside the
checkout renders job scripts and runs 2 MPI ranks, the way a user meets the tool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PIPELINE = textwrap.dedent(
    """
    from hpc_curator import Filter, Pipeline
    from hpc_curator.components import FieldStats, SyntheticSource


    class Twice(Filter):
        def __call__(self, items):
            for item in items:
                yield {**item, "u": item["u"] * 2}


    def build(n: str = "20") -> Pipeline:
        src = SyntheticSource(n=int(n), shape=(3, 3), fields=("u",))
        return Pipeline(src).filter(Twice()).filter(FieldStats(name="stats"))
    """
)


def test_the_user_facing_template_is_the_packaged_one() -> None:
    packaged = ROOT / "hpc_curator" / "slurm" / "templates" / "mpi.sbatch"
    user_copy = ROOT / "slurm_templates" / "mpi.sbatch"
    assert not packaged.is_symlink() and packaged.is_file()
    assert user_copy.read_bytes() == packaged.read_bytes(), (
        "slurm_templates/mpi.sbatch must equal hpc_curator/slurm/templates/mpi.sbatch "
        "(the package's copy is the source: copy it over)"
    )
    from hpc_curator.slurm.script import template_text

    assert template_text() == packaged.read_text()


def run(cmd: list[str], cwd: Path, timeout: float = 600, **env: str) -> str:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    full.pop("HPC_CURATOR_EXPECTED_SIZE", None)
    # the installed venv first on PATH, the development venv not at all
    dev_bin = str(Path(sys.executable).parent)
    path = [p for p in full.get("PATH", "").split(os.pathsep) if p and p != dev_bin]
    full["PATH"] = os.pathsep.join([str(Path(cmd[0]).parent), *path])
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**full, **env}
    )
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel (and its dependencies) installed; returns its bin/."""
    tmp = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp), str(ROOT)], tmp)
    (wheel,) = tmp.glob("hpc_curator-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp)
    run([str(venv / "bin" / "pip"), "install", "-q", str(wheel), "mpich"], tmp)
    return venv / "bin"


@pytest.mark.mpi
@pytest.mark.timeout(900)
def test_a_wheel_install_renders_submits_and_runs(installed: Path, tmp_path: Path) -> None:
    where = run(
        [str(installed / "python"), "-c", "import hpc_curator; print(hpc_curator.__file__)"],
        tmp_path,
    )
    assert where.startswith(str(installed.parent)) and str(ROOT) not in where
    (tmp_path / "pipe.py").write_text(PIPELINE)
    cli = str(installed / "hpc-curate")
    script = run(
        [cli, "sbatch-script", "pipe.py:build", "--run-dir", "d1", "--nodes", "2"], tmp_path
    )
    assert "#SBATCH --nodes=2" in script and "srun --unbuffered --mpi=pmi2" in script
    dry = run([cli, "submit", "pipe.py:build", "--run-dir", "d2", "--dry-run"], tmp_path)
    assert "#SBATCH --signal=USR2@90" in dry and "submitit.core._submit" in dry
    run([cli, "run", "pipe.py:build", "--ranks", "2", "--run-dir", "d3", "-q"], tmp_path)
    doc = json.loads((tmp_path / "d3" / "manifest.json").read_text())
    assert doc["status"] == "complete" and doc["world_size"] == 2
    assert doc["counts"] == {"total": 20, "ok": 20, "failed": 0, "pending": 0}
    assert doc["outputs"]["stats"]["segments"] >= 2
