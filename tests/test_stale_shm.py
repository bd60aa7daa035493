"""Removal of the MPICH shared memory a requeued job's killed run left behind.

The end-to-end case (a real requeue with planted segments, which made MPI_Init abort before the
fix) is tests/slurm/test_submit.py::test_scontrol_requeue_mid_run_resumes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hpc_curator.slurm import stale_shm
from hpc_curator.slurm.stale_shm import (
    MARGIN_S,
    clear_stale_segments,
    fnv1a_32,
    process_start_time,
    segment_names,
)

RESTARTED = {
    "SLURM_JOB_ID": "36952987",
    "SLURM_STEP_ID": "0",
    "SLURM_NODEID": "1",
    "SLURM_RESTART_COUNT": "1",
}


def test_names_match_what_mpich_created_for_a_real_job_step() -> None:
    # Observed under srun --mpi=pmi2 with the mpich 5.0.2 wheel: job 36952987, step 0,
    # two nodes -> /dev/shm/mpich_shm_17378d30_0 and _1.
    assert fnv1a_32("36952987.0") == 0x17378D30
    names = segment_names("36952987", "0", "1")
    assert names[:2] == ["mpich_shm_17378d30_1", "mpich_vci_17378d30_1"]
    assert len(names) == 4  # plus the PMIx KVS-name variant


def test_process_start_time_is_now_ish() -> None:
    started = process_start_time()
    assert started is not None
    assert time.time() - 24 * 3600 < started <= time.time() + 1


def _plant(path: Path, age_s: float) -> None:
    path.write_bytes(b"\xff" * 64)
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_old_segments_of_this_step_and_node_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = [tmp_path / n for n in segment_names("36952987", "0", "1")[:2]]
    other_node = tmp_path / segment_names("36952987", "0", "0")[0]
    other_job = tmp_path / segment_names("36952988", "0", "1")[0]
    for path in (*own, other_node, other_job):
        path.write_bytes(b"\xff" * 64)
    # A file's ctime cannot be set back, so let the task start well after the files instead.
    later = time.time() + MARGIN_S + 5
    monkeypatch.setattr(stale_shm, "process_start_time", lambda pid="self": later)
    removed = clear_stale_segments(RESTARTED, shm_dir=tmp_path)
    assert sorted(removed) == sorted(own)
    assert not any(p.exists() for p in own)
    assert other_node.exists() and other_job.exists()


def test_segments_newer_than_the_task_are_kept(tmp_path: Path) -> None:
    """A faster sibling task of this very run may already have created the segment."""
    fresh = tmp_path / segment_names("36952987", "0", "1")[0]
    fresh.write_bytes(b"\x00" * 64)
    assert clear_stale_segments(RESTARTED, shm_dir=tmp_path) == []
    assert fresh.exists()


def test_nothing_happens_outside_a_restarted_slurm_step(tmp_path: Path) -> None:
    path = tmp_path / segment_names("36952987", "0", "1")[0]
    _plant(path, 3600)
    first_run = {**RESTARTED, "SLURM_RESTART_COUNT": "0"}
    assert clear_stale_segments(first_run, shm_dir=tmp_path) == []
    assert clear_stale_segments({}, shm_dir=tmp_path) == []
    no_step = {k: v for k, v in RESTARTED.items() if k != "SLURM_STEP_ID"}
    assert clear_stale_segments(no_step, shm_dir=tmp_path) == []
    assert path.exists()
