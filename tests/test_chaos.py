"""Chaos: launchers killed, stopped, duplicated and relaunched at random points.

Every cycle starts one launcher on the same run dir (sequential, a process pool of 2-3, MPI
with 2-4 ranks, elastic with 2-4 tasks), then, at a random moment, does one of: nothing, kill
the launcher (SIGKILL or SIGTERM), kill a random process of its tree, stop one (SIGSTOP) for
a while, start a duplicate of an elastic task (a requeue race), or kill the launcher and
relaunch at once while its orphans still work. After every cycle the records must add up:
the accepted commits' segments hold exactly the accepted indices (each once) -- checked from
the files, whatever state the run is in. A run that completes is invalidated in part so the
next cycles have work. At the end a clean launch completes the run and the merged result must
equal a clean run's, every index once, and ``verify`` passes.

``HPC_CHAOS_CYCLES`` (default 50) and ``HPC_CHAOS_SEED`` (default: random, printed) control it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from hpc_curator.components import FieldStats
from hpc_curator.store import attempt_records, journal, rundir
from tests.conftest import (
    FIXTURE_PIPELINES,
    assert_stats_equal,
    cli,
    manifest_rows,
    read_manifest,
    start_cli,
)
from tests.conftest import stats as read_stats

N = 240
SPEC = f"{FIXTURE_PIPELINES}:plain_stats"
ENV = {"HPC_CURATOR_HEARTBEAT_S": "0.2", "HPC_CURATOR_CLAIM_STALE_S": "1"}
SHM = Path("/dev/shm")


def launch(d: Path, how: tuple[str, int], group: int | None = None) -> subprocess.Popen[str]:
    kind, k = how
    extra = {
        "sequential": (),
        "process_pool": ("-j", str(k), "--backend", "process_pool"),
        "mpi": ("--ranks", str(k)),
        "elastic": ("--elastic", str(k)),
    }[kind]
    args = ("run", SPEC, "-p", f"n={N}", "-p", "sleep=0.004", "--commit-every", "3",
            "--run-dir", str(d), "-q", *extra)  # fmt: skip
    return _start(args, group)


def _start(args: tuple[str, ...], group: int | None) -> subprocess.Popen[str]:
    return start_cli(*args, env=ENV, quiet=True, process_group=0 if group is None else group)


def group_pids(group: int) -> list[int]:
    """Live processes of a process group (orphans included: they keep the group)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) == group and stat[0] != "Z":
                out.append(int(entry))
    return out


def send(pid: int, sig: int) -> None:
    """Signal a process of the test's that may have ended meanwhile (the run finished)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def end_group(group: int) -> None:
    """Stop every process of a test's process group by pid (SIGCONT first: a stopped one)."""
    for _ in range(100):
        pids = group_pids(group)
        if not pids:
            return
        for pid in pids:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        time.sleep(0.05)
    raise AssertionError(f"processes of group {group} did not end: {group_pids(group)}")


def check_records(d: Path) -> int:
    """The accepted commits' segments hold exactly the accepted ok indices, each once."""
    rd = rundir.RunDir(d)
    if not rd.exists():
        return 0
    scan = journal.scan(rd, with_outputs=False)
    pos = scan.latest()
    ok = scan.idx[pos][scan.ok[pos] == 1]
    assert len(np.unique(ok)) == len(ok)
    every_ok = scan.idx[scan.ok == 1]
    assert len(every_ok) == len(ok), "an index has two accepted successful records"
    counted = sum(
        FieldStats.read_state(str(rd.shard_dir("stats") / seg))["u"].count
        for seg in scan.segments.get("stats", [])
    )
    assert counted == 64 * len(ok), f"segments count {counted / 64} indices, records {len(ok)}"
    return len(ok)


def busy_retry(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a command; while the run dir is in use (exit 4: the heartbeats of just killed
    elastic tasks are still fresh), wait and ask again."""
    for _ in range(60):
        done = cli(*args, "-q", env=ENV) if args[0] == "run" else cli(*args, env=ENV)
        if done.returncode != 4 or "in use" not in done.stderr:
            return done
        time.sleep(0.2)
    return done


def _wait(proc: subprocess.Popen[str], timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


@pytest.mark.mpi
@pytest.mark.timeout(900)
def test_chaos_every_launcher_kills_stops_duplicates_records_add_up(tmp_path: Path) -> None:
    seed = int(os.environ.get("HPC_CHAOS_SEED", random.randrange(1 << 30)))
    cycles = int(os.environ.get("HPC_CHAOS_CYCLES", "50"))
    rng = random.Random(seed)
    print(f"HPC_CHAOS_SEED={seed}")
    d = tmp_path / "run"
    shm_before = set(os.listdir(SHM)) if SHM.is_dir() else set()
    kinds = ["sequential", "process_pool", "mpi", "elastic"]
    log: list[str] = []
    try:
        for cycle in range(cycles):
            how = (rng.choice(kinds), rng.randint(2, 4))
            if how[0] == "process_pool":
                how = (how[0], min(how[1], 3))
            action = rng.choice(["none", "kill", "term", "kill-child", "stop-child",
                                 "duplicate", "relaunch"])  # fmt: skip
            delay = rng.uniform(0.05, 1.2)
            log.append(f"cycle {cycle}: {how} {action} after {delay:.2f}s")
            proc = launch(d, how)
            group = proc.pid
            groups = [group]
            try:
                time.sleep(delay)
                children = [p for p in group_pids(group) if p != proc.pid]
                if action == "kill":
                    send(proc.pid, signal.SIGKILL)
                elif action == "term":
                    send(proc.pid, signal.SIGTERM)
                elif action == "kill-child" and children:
                    send(rng.choice(children), signal.SIGKILL)
                elif action == "stop-child" and children:
                    victim = rng.choice(children)
                    send(victim, signal.SIGSTOP)
                    time.sleep(rng.uniform(0.3, 2.0))
                    send(victim, signal.SIGCONT)
                elif action == "duplicate" and how[0] == "elastic":
                    records = attempt_records.list_attempts(rundir.RunDir(d))
                    if records:  # (a launcher that was refused or has not begun: nothing)
                        twin = _start(("task", "--run-dir", str(d), "--attempt",
                                       str(records[-1]["attempt"]), "--task",
                                       str(rng.randrange(how[1]))), group)  # fmt: skip
                        _wait(twin, 60)
                elif action == "relaunch":
                    send(proc.pid, signal.SIGKILL)
                    again = launch(d, (rng.choice(kinds), 2))
                    groups.append(again.pid)
                    _wait(again, 60)
                _wait(proc, 60)
            finally:
                for g in groups:
                    end_group(g)
            done = check_records(d)
            log[-1] += f": {done} ok"
            if done == N:  # complete: take some back so later cycles have work
                picked = sorted(rng.sample(range(N), rng.randint(5, 40)))
                busy_retry("invalidate", str(d), "--indices", ",".join(map(str, picked)))
                assert check_records(d) <= N - len(picked)  # whole commits come back
        final = busy_retry("run", SPEC, "-p", f"n={N}", "-p", "sleep=0.004", "--run-dir", str(d))
        assert final.returncode == 0, final.stderr + "\n".join(log)
        doc = read_manifest(d)
        assert doc["status"] == "complete" and doc["counts"]["ok"] == N
        assert [r["index"] for r in manifest_rows(d)] == list(range(N))
        assert read_stats(d)["u"]["count"] == N * 64
        ref = tmp_path / "ref"
        cli("run", SPEC, "-p", f"n={N}", "--run-dir", str(ref), "-q", check=True)
        assert_stats_equal(read_stats(d), read_stats(ref))
        verified = cli("verify", str(d))
        assert verified.returncode == 0, verified.stderr
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nHPC_CHAOS_SEED={seed}\n" + "\n".join(log)) from None
    finally:
        if SHM.is_dir():  # MPICH segments of ranks this test killed
            for name in set(os.listdir(SHM)) - shm_before:
                if name.startswith("mpich"):
                    (SHM / name).unlink(missing_ok=True)
