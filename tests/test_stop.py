"""Stopping a launch from its parent process: every backend honours stop.

SIGTERM to the ``hpc-curate run`` parent alone (a batch system's kill, ``kill PID``) must reach
the workers or ranks: they commit and leave, the manifest says incomplete, the exit code is 3,
and re-running the same command finishes exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import (
    FIXTURE_PIPELINES,
    assert_stats_equal,
    cli,
    commit_count,
    manifest_rows,
    read_manifest,
    stats,
)

N = 300
SPEC = f"{FIXTURE_PIPELINES}:stats"
PARAMS = ("-p", f"n={N}", "-p", "sleep=0.02", "--commit-every", "2")


def start_and_wait_for_commits(d: Path, launch: tuple[str, ...]) -> subprocess.Popen[str]:
    """Start ``hpc-curate run`` in the background; return once it committed a few times."""
    cmd = [sys.executable, "-m", "hpc_curator", "run", SPEC, *PARAMS, *launch, "--run-dir", str(d)]
    env = {k: v for k, v in os.environ.items() if k != "HPC_CURATOR_EXPECTED_SIZE"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while proc.poll() is None and commit_count(d) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    d = tmp_path_factory.mktemp("ref") / "run"
    cli("run", SPEC, "-p", f"n={N}", "--run-dir", str(d), "-q", check=True)
    return stats(d)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "launch",
    [
        pytest.param(("--backend", "process_pool", "-j", "2"), id="process_pool"),
        pytest.param(("--backend", "loky", "-j", "2"), id="loky"),
        pytest.param(("--ranks", "2"), id="mpi", marks=pytest.mark.mpi),
    ],
)
def test_sigterm_to_the_parent_alone_stops_the_workers(
    tmp_path: Path, launch: tuple[str, ...], reference: dict[str, dict[str, float]]
) -> None:
    if "loky" in launch:
        pytest.importorskip("joblib")
    d = tmp_path / "run"
    proc = start_and_wait_for_commits(d, launch)
    try:
        assert proc.poll() is None, "the run ended before it could be stopped"
        os.kill(proc.pid, signal.SIGTERM)  # the parent only, not its process group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err[-2000:]
    doc = read_manifest(d)
    assert doc["status"] == "incomplete" and 0 < doc["counts"]["ok"] < N
    assert {r["reason"] for r in doc["ranks"]} <= {"SIGTERM", "SIGINT"}
    assert "Traceback" not in err
    again = cli("run", SPEC, *PARAMS, *launch, "--run-dir", str(d), "-q")
    assert again.returncode == 0, again.stderr
    assert [r["index"] for r in manifest_rows(d)] == list(range(N))
    assert_stats_equal(stats(d), reference)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "launch",
    [
        pytest.param(("--backend", "process_pool", "-j", "2"), id="process_pool"),
        pytest.param(("--ranks", "2"), id="mpi", marks=pytest.mark.mpi),
    ],
)
def test_cancel_stops_a_local_run(tmp_path: Path, launch: tuple[str, ...]) -> None:
    d = tmp_path / "run"
    proc = start_and_wait_for_commits(d, launch)
    try:
        busy = cli("run", SPEC, *PARAMS, "--run-dir", str(d), "-q")
        assert busy.returncode == 4 and "hpc-curate cancel" in busy.stderr
        cancel = cli("cancel", str(d))
        assert cancel.returncode == 0, cancel.stderr
        assert "stopped local attempt 1" in cancel.stdout
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3
    assert read_manifest(d)["attempts"][0]["reason"] in ("SIGTERM", "SIGINT")
