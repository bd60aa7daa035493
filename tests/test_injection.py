"""Nothing a user types reaches a job script unquoted; a script bash would reject is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, cli


@pytest.mark.parametrize("command", ["sbatch-script", "submit"])
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--run-dir", "runs/x\nid > pwned #"), "--run-dir value"),
        (("--run-dir", "runs/x\r#SBATCH --mem=1"), "control character"),
        (("--run-dir", "r", "--setup", "echo 'unbalanced"), "bash -n says"),
        (("--run-dir", "r", "--setup", "  #SBATCH --mem=4G"), "is an #SBATCH directive"),
        (("--run-dir", "r", "--setup", "ok\nid"), "newline"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(
    tmp_path: Path, command: str, args: tuple[str, ...], needle: str
) -> None:
    extra = ("--dry-run",) if command == "submit" else ()
    proc = cli(command, EXAMPLE, *args, *extra, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not proc.stdout  # no script printed
    assert list(tmp_path.iterdir()) == []  # and nothing created


def test_percent_in_a_path_is_literal_for_slurm(tmp_path: Path) -> None:
    d = tmp_path / "50%done"
    proc = cli("sbatch-script", EXAMPLE, "--run-dir", str(d), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    output = next(ln for ln in lines if ln.startswith("#SBATCH --output="))
    assert output == f"#SBATCH --output={str(d).replace('%', '%%')}/logs/slurm-%j_0.out"
    srun = next(ln for ln in lines if ln.lstrip().startswith("srun "))
    assert f"--output {str(d).replace('%', '%%')}/logs/slurm-%j_%t.out" in srun
    assert f"--run-dir {d}" in srun or f"--run-dir '{d}'" in srun  # the rank gets the real path
