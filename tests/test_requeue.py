"""Requeue on a time limit: rank 0's request and the job script lines that act on it.

The shell tests run the rendered script with bash, with stand-in ``srun`` and ``scontrol``
commands on PATH that record how they were called; the real thing on a Slurm cluster is
tests/slurm/test_submit.py::test_time_limit_requeues_and_completes.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from hpc_curator.slurm.options import SlurmOptions
from hpc_curator.slurm.requeue import (
    MAX_REQUEUES_ENV,
    REQUEUE_DIR_ENV,
    flag_path,
    request_requeue,
)
from hpc_curator.slurm.submit import dry_run
from hpc_curator.store.rundir import RunDir


def job_env(tmp_path: Path, restarts: int = 0, allowed: int = 3) -> dict[str, str]:
    return {
        "SLURM_JOB_ID": "4242",
        "SLURM_RESTART_COUNT": str(restarts),
        REQUEUE_DIR_ENV: str(tmp_path / "slurm"),
        MAX_REQUEUES_ENV: str(allowed),
    }


def test_request_leaves_a_flag_for_this_job(tmp_path: Path) -> None:
    assert request_requeue(job_env(tmp_path, restarts=2))
    record = json.loads(flag_path(tmp_path / "slurm", "4242").read_text())
    assert record["job_id"] == "4242" and record["restart"] == 2


@pytest.mark.parametrize(
    "change",
    [
        {"SLURM_RESTART_COUNT": "3"},  # restarts used up
        {MAX_REQUEUES_ENV: "0"},
        {REQUEUE_DIR_ENV: ""},  # a hand-written script: nobody would act on it
        {"SLURM_JOB_ID": ""},
        {MAX_REQUEUES_ENV: "three"},
    ],
)
def test_no_request_when_it_would_not_or_must_not_requeue(
    tmp_path: Path, change: dict[str, str]
) -> None:
    assert not request_requeue({**job_env(tmp_path), **change})
    assert not (tmp_path / "slurm").exists()


def _fake_bin(tmp_path: Path, srun_body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for name, body in {
        "srun": f'echo "srun" >> {calls}\n{srun_body}',
        "scontrol": f'echo "scontrol $*" >> {calls}',
    }.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def run_script(tmp_path: Path, srun_body: str, opts: SlurmOptions) -> tuple[int, list[str]]:
    rd = RunDir(tmp_path / "run")
    script = tmp_path / "job.sbatch"
    script.write_text(dry_run(opts, rd))
    bin_dir = _fake_bin(tmp_path, srun_body)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    proc = subprocess.run(
        ["bash", str(script)], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    calls = tmp_path / "calls"
    return proc.returncode, calls.read_text().splitlines() if calls.exists() else []


# what rank 0 does (request_requeue), in the run's slurm/ directory even when not told where
ASK = 'd="$PWD/run/slurm"; mkdir -p "$d"; touch "$d/requeue-$SLURM_JOB_ID"'


def test_script_requeues_after_srun_when_rank0_asked(tmp_path: Path) -> None:
    code, calls = run_script(tmp_path, f"{ASK}\nexit 3", SlurmOptions())
    assert calls == ["srun", "scontrol requeue 4242"]
    assert code == 0
    assert not flag_path(tmp_path / "run" / "slurm", "4242").exists()


def test_script_passes_srun_status_through_without_a_request(tmp_path: Path) -> None:
    code, calls = run_script(tmp_path, "exit 3", SlurmOptions())
    assert calls == ["srun"]
    assert code == 3


def test_a_stale_request_from_an_earlier_run_is_dropped(tmp_path: Path) -> None:
    stale = flag_path(tmp_path / "run" / "slurm", "4242")
    stale.parent.mkdir(parents=True)
    stale.write_text("{}\n")
    code, calls = run_script(tmp_path, "exit 0", SlurmOptions())
    assert calls == ["srun"] and code == 0


def test_no_requeue_lines_when_requeues_are_off(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run")
    for opts in (SlurmOptions(requeue=False), SlurmOptions(max_requeues=0)):
        text = dry_run(opts, rd)
        assert "scontrol requeue" not in text and REQUEUE_DIR_ENV not in text
    code, calls = run_script(tmp_path, f"{ASK}\nexit 3", SlurmOptions(requeue=False))
    assert calls == ["srun"] and code == 3
