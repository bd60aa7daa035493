"""The elastic array's job scripts come from one renderer: the array and its finisher (a real
script with the same setup, modules and container), both shown by ``submit --dry-run``."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import FIXTURE_PIPELINES, cli


def test_dry_run_shows_the_array_and_its_finisher_with_the_same_setup(tmp_path: Path) -> None:
    d = tmp_path / "run"
    proc = cli("submit", f"{FIXTURE_PIPELINES}:stats", "--run-dir", str(d), "--array", "4",
               "--dry-run", "--setup", "module load hdf5", "--partition", "cpu",
               "--account", "proj")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    array, _, finisher = proc.stdout.partition("# ---- the finisher job")
    assert "#SBATCH --array=0-3" in array and "task --run-dir" in array
    assert "--finish" in finisher and "#SBATCH --array" not in finisher
    for script in (array, finisher.partition("\n")[2]):
        assert "module load hdf5" in script
        assert "#SBATCH --partition=cpu" in script and "#SBATCH --account=proj" in script
        assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert not d.exists()  # a dry run creates nothing
