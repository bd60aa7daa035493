"""Real mpiexec runs: world sizes, resume after SIGKILL with other sizes, failures, schedules."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
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

SPEC = f"{FIXTURE_PIPELINES}:stats"
N = 96


@pytest.fixture(scope="module")
def sequential_reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("seq") / "run"
    cli("run", SPEC, "-p", f"n={N}", "--run-dir", str(d), "-q", check=True)
    return stats(d)


@pytest.mark.parametrize("ranks", [1, 2, 4, 8])
def test_world_sizes_give_identical_stats(
    tmp_path: Path, ranks: int, sequential_reference: dict
) -> None:
    d = tmp_path / "run"
    proc = cli(
        "run",
        SPEC,
        "-p",
        f"n={N}",
        "--ranks",
        str(ranks),
        "--run-dir",
        str(d),
        "--commit-every",
        "1",  # 96 segments: enough for the ranks to merge them in a tree (gather.merge_tree)
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    doc = read_manifest(d)
    assert doc["status"] == "complete" and doc["world_size"] == ranks
    assert doc["outputs"]["stats"]["segments"] == N
    assert doc["outputs"]["stats"]["partial_merges"] == (ranks if ranks > 1 else 0)
    assert not list((d / "shards").rglob(".partial-*"))  # the tree's partial merges are gone
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(N))
    assert {r["rank"] for r in rows} == set(range(ranks))
    # strided: index i ran on rank i % ranks
    assert all(r["rank"] == r["index"] % ranks for r in rows)
    assert len({r["pid"] for r in rows}) == ranks
    assert_stats_equal(stats(d), sequential_reference)
    segments = list((d / "shards" / "stats").glob("stats.rank*.a0001-*.h5"))
    assert {int(p.name.split(".rank")[1][:5]) for p in segments} == set(range(ranks))


def test_rank_entry_point_under_plain_mpiexec(tmp_path: Path, sequential_reference: dict) -> None:
    """`mpiexec -n 3 hpc-curate rank --spec ... --run-dir D`: rank 0 creates the run dir."""
    from hpc_curator.backends.mpi import find_mpiexec

    d = tmp_path / "run"
    proc = subprocess.run(
        [
            find_mpiexec(),
            "-n",
            "3",
            sys.executable,
            "-m",
            "hpc_curator",
            "rank",
            "--spec",
            SPEC,
            "-p",
            f"n={N}",
            "--run-dir",
            str(d),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("complete:") == 1  # only rank 0 reports
    assert read_manifest(d)["world_size"] == 3
    assert_stats_equal(stats(d), sequential_reference)


def _start(d: Path, ranks: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpc_curator",
            "run",
            SPEC,
            "-p",
            f"n={N}",
            "-p",
            "sleep=0.03",
            "--ranks",
            str(ranks),
            "--run-dir",
            str(d),
            "--commit-every",
            "2",
            "-q",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _rank_pids(d: Path) -> dict[int, int]:
    pids = {}
    for path in (d / "journal").glob("a*-rank*.jsonl"):
        first = path.read_text().splitlines()[:1]
        if first:
            rec = json.loads(first[0])
            pids[rec["rank"]] = rec["pid"]
    return pids


@pytest.mark.parametrize("resume_ranks", [2, 3])
def test_sigkill_one_rank_then_resume_with_other_world_size(
    tmp_path: Path, resume_ranks: int, sequential_reference: dict
) -> None:
    d = tmp_path / "run"
    proc = _start(d, 4)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(_rank_pids(d)) < 4:
            time.sleep(0.1)
        # kill once the run is under way (a few commits), not after a fixed delay: on a
        # loaded machine the ranks may not even have started working after one
        while time.time() < deadline and commit_count(d) < 4:
            time.sleep(0.02)
        victim = _rank_pids(d)[2]
        os.kill(victim, signal.SIGKILL)
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (d / "manifest.json").exists()
    partial = json.loads(cli("manifest", str(d), "--json").stdout)["counts"]
    assert partial["ok"] > 0 and partial["pending"] > 0 and partial["failed"] == 0
    again = cli(
        "run",
        SPEC,
        "-p",
        f"n={N}",
        "-p",
        "sleep=0.03",
        "--ranks",
        str(resume_ranks),
        "--run-dir",
        str(d),
        "-q",
    )
    assert again.returncode == 0, again.stderr
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(N))  # each index exactly once
    assert {r["attempt"] for r in rows} == {1, 2}
    assert {r["rank"] for r in rows if r["attempt"] == 2} <= set(range(resume_ranks))
    assert_stats_equal(stats(d), sequential_reference)
    attempts = read_manifest(d)["attempts"]
    assert attempts[0]["reason"].startswith("running or crashed")


def test_failure_on_rank_3_is_recorded_with_placement(tmp_path: Path) -> None:
    d = tmp_path / "run"
    proc = cli(
        "run", SPEC, "-p", "n=40", "-p", "fail=7,11", "--ranks", "4", "--run-dir", str(d), "-q"
    )
    assert proc.returncode == 1
    assert "38/40 ok, 2 failed" in proc.stderr
    failures = {f["index"]: f for f in read_manifest(d)["failures"]}
    assert failures[7]["rank"] == 3 and failures[11]["rank"] == 3
    assert failures[7]["host"] == os.uname().nodename
    assert "Traceback" in failures[7]["traceback"]
    assert failures[7]["pid"] != os.getpid()


def test_global_failure_budget_stops_every_rank(tmp_path: Path) -> None:
    d = tmp_path / "run"
    fails = ",".join(str(i) for i in range(0, 400, 4))  # every rank fails often
    proc = cli(
        "run",
        SPEC,
        "-p",
        "n=400",
        "-p",
        f"fail={fails}",
        "-p",
        "sleep=0.005",
        "--ranks",
        "4",
        "--max-failures",
        "5",
        "--commit-every",
        "2",
        "--run-dir",
        str(d),
        "-q",
    )
    assert proc.returncode == 1
    doc = read_manifest(d)
    assert doc["counts"]["pending"] > 100
    assert 5 < doc["counts"]["failed"] <= 5 + 4 * 3
    assert {r["reason"] for r in doc["ranks"]} == {"max_failures"}


def test_dynamic_schedule_is_complete_and_resumable(
    tmp_path: Path, sequential_reference: dict
) -> None:
    d = tmp_path / "run"
    proc = cli(
        "run",
        SPEC,
        "-p",
        f"n={N}",
        "--ranks",
        "4",
        "--schedule",
        "dynamic",
        "--chunk-size",
        "3",
        "--run-dir",
        str(d),
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(N))
    assert len({r["rank"] for r in rows}) >= 2
    assert_stats_equal(stats(d), sequential_reference)


def test_block_schedule(tmp_path: Path, sequential_reference: dict) -> None:
    d = tmp_path / "run"
    cli(
        "run",
        SPEC,
        "-p",
        f"n={N}",
        "--ranks",
        "2",
        "--schedule",
        "block",
        "--run-dir",
        str(d),
        "-q",
        check=True,
    )
    rows = manifest_rows(d)
    assert all(r["rank"] == (0 if r["index"] < N // 2 else 1) for r in rows)
    assert_stats_equal(stats(d), sequential_reference)


def test_singleton_world_is_refused_before_any_index(tmp_path: Path) -> None:
    """Ranks that come up as MPI singletons (srun without --mpi) fail at once."""
    d = tmp_path / "run"
    proc = cli("rank", "--spec", SPEC, "--run-dir", str(d), env={"SLURM_STEP_NUM_TASKS": "4"})
    assert proc.returncode == 5
    assert "MPI world size is 1 but 4 ranks were launched" in proc.stderr
    assert "--mpi pmi2" in proc.stderr
    assert not d.exists()


@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM])
def test_stop_signal_commits_and_resume_finishes(
    tmp_path: Path, sig: signal.Signals, sequential_reference: dict
) -> None:
    """A pre-timeout/pre-emption signal to every rank: commit, manifest, exit 3; then resume."""
    d = tmp_path / "run"
    proc = _start(d, 2)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(_rank_pids(d)) < 2:
            time.sleep(0.1)
        while time.time() < deadline and commit_count(d) < 4:
            time.sleep(0.02)
        for pid in _rank_pids(d).values():
            os.kill(pid, sig)
        assert proc.wait(timeout=60) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    doc = read_manifest(d)
    assert doc["status"] == "incomplete" and 0 < doc["counts"]["ok"] < N
    assert {r["reason"] for r in doc["ranks"]} == {sig.name}
    assert doc["attempts"][0]["reason"] == sig.name
    again = cli(
        "run", SPEC, "-p", f"n={N}", "-p", "sleep=0.03", "--ranks", "2", "--run-dir", str(d), "-q"
    )
    assert again.returncode == 0, again.stderr
    assert [r["index"] for r in manifest_rows(d)] == list(range(N))
    assert_stats_equal(stats(d), sequential_reference)


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["-p", "bogus=1"], "rejected its parameters"), (["--indices", "999"], "out of range")],
)
def test_quiet_mpi_run_reports_bad_input_once_from_rank_0(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    """With -q the parent does not build the pipeline: rank 0 validates it, one line, no state."""
    d = tmp_path / "run"
    proc = cli("run", SPEC, *args, "--ranks", "2", "--run-dir", str(d), "-q")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], lines
    assert not d.exists()


def test_a_corrupt_segment_in_another_ranks_share_fails_cleanly(tmp_path: Path) -> None:
    """The tree merge: rank 1's share holds a corrupt segment; every rank exits, none hangs."""
    d = tmp_path / "run"
    args = ("run", SPEC, "-p", f"n={N}", "--ranks", "2", "--run-dir", str(d), "--commit-every", "1")
    cli(*args, "-q", check=True)
    names = sorted(p.name for p in (d / "shards" / "stats").glob("stats.rank*.h5"))
    victim = d / "shards" / "stats" / names[1]  # sorted share of rank 1: names[1::2]
    victim.write_bytes(b"not an HDF5 file")
    proc = cli(*args, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    # caught by its recorded checksum before HDF5 reads it
    assert "modified after its commit" in proc.stderr and victim.name in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((d / "shards").rglob(".partial-*"))


def test_user_exit_handlers_run_in_every_rank(tmp_path: Path) -> None:
    # ranks end without the interpreter's teardown (world.exit_process); what user code
    # registered with atexit must still run, while MPI is still up
    pipe = tmp_path / "pipe.py"
    pipe.write_text(
        "import atexit, os\n"
        "from mpi4py import MPI\n"
        "from hpc_curator import Pipeline\n"
        "from hpc_curator.components import SyntheticSource\n"
        "def flush():\n"
        f"    open(os.path.join({str(tmp_path)!r}, 'flushed-%d' % MPI.COMM_WORLD.Get_rank()), 'w')"
        ".write(str(MPI.Is_finalized()))\n"
        "def build(n='8'):\n"
        "    atexit.register(flush)\n"
        "    return Pipeline(SyntheticSource(n=int(n), shape=(2, 2), fields=('u',)))\n"
    )
    proc = cli("run", f"{pipe}:build", "--ranks", "2", "--run-dir", str(tmp_path / "r"), "-q")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.glob("flushed-*")) == ["flushed-0", "flushed-1"]
    assert {p.read_text() for p in tmp_path.glob("flushed-*")} == {"False"}


def test_run_ranks_launches_light_processes(tmp_path: Path) -> None:
    """``run --ranks``: the parent starts mpiexec before importing numpy, and the ranks run
    the rank program from its JSON command line (:mod:`hpc_curator.engine.rankprog`) without
    click."""
    user = tmp_path / "user.py"
    user.write_text(
        "import sys\n"
        "from hpc_curator import Pipeline, Sink\n"
        "from hpc_curator.components import SyntheticSource\n"
        "class Records(Sink):\n"
        "    def __init__(self, out):\n"
        "        self.out = out\n"
        "    def __call__(self, items, index):\n"
        "        for _ in items:\n"
        "            pass\n"
        "        heavy = sorted(m for m in ('click', 'hpc_curator.cli') if m in sys.modules)\n"
        "        with open(f'{self.out}/{index}.txt', 'w') as fh:\n"
        "            fh.write(repr(heavy))\n"
        "        return []\n"
        "def build(out):\n"
        "    src = SyntheticSource(n=6, shape=(2,), fields=('u',))\n"
        "    return Pipeline(src).write(Records(out))\n"
    )
    out = tmp_path / "seen"
    out.mkdir()
    code = (
        "import subprocess, sys\n"
        "real = subprocess.Popen.__init__\n"
        "def popen(self, args, *a, **k):\n"
        "    if '-n' in args:\n"
        "        print('numpy before mpiexec:', 'numpy' in sys.modules, flush=True)\n"
        "    return real(self, args, *a, **k)\n"
        "subprocess.Popen.__init__ = popen\n"
        "from hpc_curator.cli import main\n"
        f"main(['run', {str(user) + ':build'!r}, '-p', 'out={out}', '--ranks', '2',\n"
        f"      '--run-dir', {str(tmp_path / 'run')!r}, '-q'])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "numpy before mpiexec: False" in proc.stdout, proc.stdout
    seen = sorted(p.read_text() for p in out.glob("*.txt"))
    assert seen == ["[]"] * 6, seen


def test_the_end_reads_rank_journals_apart_and_gets_what_one_scan_gets(tmp_path: Path) -> None:
    """Each rank reads its own journal after its loop (gather.own_journal) and rank 0 joins
    them with the journals of earlier attempts: the manifest is what a plain scan says."""
    import numpy as np

    from hpc_curator.store import journal
    from hpc_curator.store.rundir import RunDir

    d, out = tmp_path / "run", tmp_path / "out"
    base = ["run", SPEC, "-p", "n=45", "-p", "fail=4,17", "-p", f"out={out}"]
    # 2 ranks: no more than this machine's CPUs (own_journal skips an oversubscribed node)
    first = cli(*base, "--ranks", "2", "--run-dir", str(d), "--commit-every", "4", "-q")
    assert first.returncode == 1, first.stderr  # two failures
    again = cli(*base, "--ranks", "2", "--run-dir", str(d), "--retry-failed", "-q")
    assert again.returncode == 1, again.stderr  # they fail again, in attempt 2
    scan = journal.scan(RunDir(d))
    pos = scan.latest()
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == scan.idx[pos].tolist() == list(range(45))
    assert [r["status"] == "ok" for r in rows] == (scan.ok[pos] == 1).tolist()
    assert [r["attempt"] for r in rows] == scan.attempt[pos].tolist()
    assert [r["rank"] for r in rows] == scan.rank[pos].tolist()
    assert [r["outputs"] for r in rows] == [scan.outputs[p] for p in pos.tolist()]
    assert np.array_equal([r["wall_s"] for r in rows], scan.wall[pos])
    doc = read_manifest(d)
    assert doc["counts"]["failed"] == 2 and doc["counts"]["ok"] == 43
    assert sorted(f["index"] for f in doc["failures"]) == [4, 17]
    assert {f["attempt"] for f in doc["failures"]} == {2}
    for f in doc["failures"]:
        assert f["message"] == f"injected failure at index {f['index']}", f
    messages = {r["index"]: r["error_message"] for r in rows if r["status"] == "failed"}
    assert messages == {i: f"injected failure at index {i}" for i in (4, 17)}
    pids = [scan.worker_info[w]["pid"] for w in scan.worker[pos].tolist()]
    assert [r["pid"] for r in rows] == pids
    assert len(set(pids)) > 1  # written by several ranks and attempts
    assert doc["outputs"]["stats"]["segments"] == len(
        [s for segs in scan.segments.values() for s in segs]
    )


def test_a_selection_too_long_for_a_command_line_reaches_the_ranks(tmp_path: Path) -> None:
    """30,000 scattered indices (~200 KB as text; Linux refuses an argument over 128 KiB):
    the launcher hands the ranks their argument in a file, and removes it afterwards."""
    import random

    import numpy as np

    from benchmarks.workloads import w0
    from hpc_curator import Run, run_pipeline
    from hpc_curator.backends import mpi
    from hpc_curator.model.partition import format_indices

    chosen = sorted(random.Random(7).sample(range(1_000_000), 30_000))
    assert len(format_indices(chosen)) > 4 * mpi.ARGUMENT_LIMIT
    before = set(Path(tempfile.gettempdir()).glob("hpc-curator-*"))
    out = run_pipeline(w0(n="1000000"), indices=chosen, backend="mpi", n_jobs=2,
                       run_dir=tmp_path / "run")  # fmt: skip
    assert len(out) == len(chosen)
    run = Run(tmp_path / "run")
    assert run.status == "complete" and run.completed == chosen
    assert np.array_equal(np.asarray(run.info.indices), chosen)
    assert set(Path(tempfile.gettempdir()).glob("hpc-curator-*")) == before
