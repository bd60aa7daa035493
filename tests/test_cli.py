"""The CLI: one-line errors, no partial state, exit codes, lazy imports, listing commands."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, FIXTURE_PIPELINES, cli, read_manifest

SPEC = f"{FIXTURE_PIPELINES}:stats"


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "nope/missing.py:build"], "does not exist"),
        (["run", f"{FIXTURE_PIPELINES}:nope"], "has no attribute 'nope'"),
        (["run", "no_such_module_xyz:build"], "cannot import module"),
        (["run", "justtext"], "is not FILE.py:FUNCTION"),
        (["run", SPEC, "-p", "n"], "is not key=value"),
        (["run", SPEC, "-p", "bogus=1"], "rejected its parameters"),
        (["run", SPEC, "-p", "n=abc"], "rejected its parameters"),
        (["run", SPEC, "--indices", "-3"], "negative"),
        (["run", SPEC, "-p", "n=10", "--indices", "5:20"], "goes past"),
        (["run", SPEC, "-p", "n=10", "--indices", "12"], "out of range"),
        (["run", SPEC, "--indices", "1,1"], "twice"),
        (["run", SPEC, "--indices", "a:b"], "cannot parse"),
        (["run", SPEC, "--backend", "nosuch"], "unknown backend 'nosuch'"),
        (["run", SPEC, "--ranks", "2", "--backend", "loky"], "--ranks"),
        (["run", SPEC, "--ranks", "2", "--mpiexec", "/nonexistent/mpiexec"], "no mpiexec"),
    ],
)
def test_bad_input_gives_one_line_and_leaves_no_state(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    d = tmp_path / "run"
    proc = cli(*args, "--run-dir", str(d), cwd=tmp_path)
    assert proc.returncode == 2 or proc.returncode == 5
    line = error_line(proc)
    assert line.startswith("Error: ") and needle in line
    assert not d.exists()
    assert not (tmp_path / "hpc-curator-runs").exists()


def test_click_usage_errors_exit_2(tmp_path: Path) -> None:
    proc = cli("run", SPEC, "--ranks", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "--ranks" in proc.stderr
    proc = cli("run", SPEC, "--max-failures", "lots", cwd=tmp_path)
    assert proc.returncode == 2 and "lots" in proc.stderr


def test_conflicting_relaunch_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "run"
    cli("run", SPEC, "--run-dir", str(d), "-p", "n=10", "-q", check=True)
    before = sorted(p.name for p in d.rglob("*"))
    other = cli("run", SPEC, "--run-dir", str(d), "-p", "n=11", "-q")
    assert other.returncode == 4
    assert "different pipeline" in error_line(other)
    idx = cli("run", SPEC, "--run-dir", str(d), "-p", "n=10", "--indices", "0:5", "-q")
    assert idx.returncode == 4 and "different index list" in error_line(idx)
    assert sorted(p.name for p in d.rglob("*")) == before
    same = cli("run", SPEC, "--run-dir", str(d), "-p", "n=10", "-q")
    assert same.returncode == 0
    assert len(read_manifest(d)["attempts"]) == 2


def test_live_attempt_blocks_a_second_launch(tmp_path: Path) -> None:
    d = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "hpc_curator",
        "run",
        SPEC,
        "--run-dir",
        str(d),
        "-p",
        "n=400",
        "-p",
        "sleep=0.02",
        "-q",
    ]
    first = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if (d / "journal").is_dir() and any((d / "journal").iterdir()):
                break
            time.sleep(0.1)
        second = cli("run", SPEC, "--run-dir", str(d), "-p", "n=400", "-p", "sleep=0.02", "-q")
        assert second.returncode == 4
        assert "in use by attempt 1" in error_line(second)
        assert f"pid {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait()


def test_run_reports_run_dir_and_default_location(tmp_path: Path) -> None:
    proc = cli("run", SPEC, "-p", "n=5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = list((tmp_path / "hpc-curator-runs").iterdir())
    assert len(runs) == 1 and str(runs[0]) in proc.stderr
    assert "complete: 5/5 ok" in proc.stderr


def test_plain_progress_lines_when_not_a_tty(tmp_path: Path) -> None:
    proc = cli(
        "run",
        EXAMPLE,
        "-p",
        "n=30",
        "-p",
        f"out={tmp_path}/o",
        "--run-dir",
        str(tmp_path / "d"),
        "--commit-every",
        "10",
    )
    assert proc.returncode == 0
    progress = [line for line in proc.stderr.splitlines() if "sequential:" in line]
    assert progress and progress[-1].endswith("eta 0s")
    assert progress[0][:4].isdigit()  # timestamped


def test_example_writes_outputs_stats_and_manifest(tmp_path: Path) -> None:
    d = tmp_path / "demo"
    cli(
        "run",
        EXAMPLE,
        "-p",
        "n=12",
        "-p",
        f"out={tmp_path}/fields",
        "--run-dir",
        str(d),
        check=True,
    )
    doc = read_manifest(d)
    assert doc["status"] == "complete" and doc["index_outputs"] == 12
    assert len(list((tmp_path / "fields").glob("*.h5"))) == 12
    out = doc["outputs"]["stats"]
    assert Path(out["path"]).exists() and len(out["sha256"]) == 64
    shown = cli("manifest", str(d))
    assert shown.returncode == 0 and "complete" in shown.stdout


def test_backends_command_lists_every_backend() -> None:
    proc = cli("backends", "--json", check=True)
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert {"sequential", "process_pool", "loky", "dask", "mpi"} <= rows.keys()
    assert rows["sequential"]["available"] is True
    table = cli("backends", check=True)
    assert "process_pool" in table.stdout


def test_version_and_help() -> None:
    assert "hpc-curate, version" in cli("--version", check=True).stdout
    for cmd in ("run", "rank", "manifest", "backends"):
        assert "Usage:" in cli(cmd, "--help", check=True).stdout


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from hpc_curator.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = {'numpy','h5py','pyarrow','mpi4py','submitit','rich','dask','joblib'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_manifest_of_missing_run_dir_is_one_line(tmp_path: Path) -> None:
    proc = cli("manifest", str(tmp_path / "nothing"))
    assert proc.returncode == 4
    assert "not a run directory" in error_line(proc)


def test_status_of_a_finished_run_and_watch_returns(tmp_path: Path) -> None:
    d = tmp_path / "run"
    cli("run", SPEC, "-p", "n=8", "-p", "fail=2", "--run-dir", str(d), "-q")
    doc = json.loads(cli("status", str(d), "--json", check=True).stdout)
    assert doc["counts"]["failed"] == 1 and not doc["live"]
    assert [r["done"] for r in doc["rank_progress"]] == [8]
    watch = cli("status", str(d), "--watch", "--interval", "0.2", timeout=60)
    assert watch.returncode == 0
    # the plain line of a non-TTY watch: counts of this run, not any "7" (a timestamp has them)
    assert "8/8 done (7 ok, 1 failed, 0 pending)" in watch.stdout + watch.stderr
    assert "attempt 1 ended" in watch.stdout + watch.stderr
    failed = cli("failed", str(d))
    assert failed.returncode == 1 and "index 2" in failed.stdout


def test_every_command_is_found_lazily_in_its_module() -> None:
    """The command -> module map the group imports from lists exactly what the modules define."""
    import importlib

    import click

    from hpc_curator.cli import COMMAND_MODULES

    for module in set(COMMAND_MODULES.values()):
        group = click.Group()
        importlib.import_module(f"hpc_curator.cli.{module}").register(group)
        mapped = {name for name, m in COMMAND_MODULES.items() if m == module}
        assert set(group.commands) == mapped, module


def test_the_rank_program_imports_no_other_command_module(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from hpc_curator.cli import main\n"
        "try:\n"
        "    main(['rank', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('hpc_curator.cli.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (
        out.stdout.strip().splitlines()[-1] == "['hpc_curator.cli.options', 'hpc_curator.cli.run']"
    )
