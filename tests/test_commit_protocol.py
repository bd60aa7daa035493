"""The commit protocol under real SIGKILLs: resume never loses or double-counts an index."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import (
    FIXTURE_PIPELINES,
    assert_stats_equal,
    cli,
    commit_count,
    journal_file,
    manifest_rows,
    read_manifest,
    stats,
)

SPEC = f"{FIXTURE_PIPELINES}:stats"


def clean_run(tmp_path: Path, *params: str) -> Path:
    d = tmp_path / "clean"
    cli("run", SPEC, "--run-dir", str(d), *params, "-q", check=True)
    return d


def assert_complete_once(run_dir: Path, n: int) -> None:
    doc = read_manifest(run_dir)
    assert doc["status"] == "complete", doc["counts"]
    assert doc["counts"] == {"total": n, "ok": n, "failed": 0, "pending": 0}
    assert [r["index"] for r in manifest_rows(run_dir)] == list(range(n))


def test_random_sigkills_then_resume_match_a_clean_run(tmp_path: Path) -> None:
    """Kill the run at random moments several times; the resumed result equals a clean run."""
    params = ("-p", "n=150", "-p", "sleep=0.01", "--commit-every", "3")
    reference = stats(clean_run(tmp_path, *params))
    d = tmp_path / "crashy"
    rng = random.Random(1234)
    kills = 0
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpc_curator", "run", SPEC, "--run-dir", str(d), *params, "-q"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # kill after a random number of this launch's commits (not a wall-clock delay: on a
        # fast or a loaded machine alike, most launches die mid-run)
        target = commit_count(d) + rng.randint(1, 6)
        deadline = time.monotonic() + 60
        while proc.poll() is None and commit_count(d) < target and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.005, 0.05))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 3
    final = cli("run", SPEC, "--run-dir", str(d), *params, "-q")
    assert final.returncode == 0, final.stderr
    assert_complete_once(d, 150)
    assert_stats_equal(stats(d), reference)
    attempts = read_manifest(d)["attempts"]
    # one attempt per launch that got as far as claiming one (a kill can land earlier,
    # and a launch after the work was done still records a (no-op) attempt)
    assert 2 <= len(attempts) <= 6 + 1
    assert attempts[-1]["reason"] == "done"


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from hpc_curator.store import journal, shards, atomic
    point, nth = sys.argv[1], int(sys.argv[2])
    calls = {"n": 0}

    def maybe_die(where):
        if where == point:
            calls["n"] += 1
            if calls["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    orig_segment = shards.write_segment
    def write_segment(*a, **k):
        maybe_die("before-segment")
        name = orig_segment(*a, **k)
        maybe_die("after-segment")
        return name
    shards.write_segment = write_segment

    orig_append = journal.JournalWriter.append
    def append(self, record):
        if record.get("t") == "commit":
            maybe_die("before-journal")
            line = journal.dumps(record)  # what the writer writes
            if point == "torn-journal":
                calls["n"] += 1
                if calls["n"] == nth:
                    self._fh.write(line[: len(line) // 2]); self._fh.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
        orig_append(self, record)
        if record.get("t") == "commit":
            maybe_die("after-journal")
    journal.JournalWriter.append = append

    from hpc_curator.cli import main
    sys.argv = ["hpc-curate", *sys.argv[3:]]
    main()
    """
)


@pytest.mark.parametrize(
    "point", ["before-segment", "after-segment", "before-journal", "torn-journal", "after-journal"]
)
def test_crash_between_any_two_protocol_steps(tmp_path: Path, point: str) -> None:
    """SIGKILL exactly between the protocol's steps; resume gives the clean result."""
    params = ("-p", "n=40", "--commit-every", "4")
    reference = stats(clean_run(tmp_path, *params))
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    d = tmp_path / "run"
    args = ["run", SPEC, "--run-dir", str(d), *params, "-q"]
    proc = subprocess.run(
        [sys.executable, str(script), point, "3", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (d / "manifest.json").exists()
    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert_complete_once(d, 40)
    assert_stats_equal(stats(d), reference)
    doc = read_manifest(d)
    if point == "torn-journal":
        assert doc["journal_torn_lines"] == {journal_file(d, 1, 0).name: 1}
    if point == "after-segment":
        # the orphan segment exists on disk but no journal names it, so it was not merged
        on_disk = len(list((d / "shards" / "stats").glob("*.h5")))
        assert on_disk == doc["outputs"]["stats"]["segments"] + 1


def test_kill_mid_index_by_the_pipeline_itself(tmp_path: Path) -> None:
    """A process that dies inside an index (segfault-like) resumes to the exact clean result."""
    spec = f"{FIXTURE_PIPELINES}:killer"
    d = tmp_path / "k"
    first = cli("run", spec, "--run-dir", str(d), "--commit-every", "7", "-q")
    assert first.returncode == -signal.SIGKILL
    done_before = sum(
        len(json.loads(line)["idx"])
        for line in journal_file(d, 1, 0).read_text().splitlines()
        if '"t":"commit"' in line
    )
    assert done_before == 49  # 7 full commits before index 50; the 50th batch was lost
    again = cli("run", spec, "--run-dir", str(d), "-q", env={"HPC_TEST_NO_KILL": "1"})
    assert again.returncode == 0, again.stderr
    ref = tmp_path / "ref"
    cli("run", spec, "--run-dir", str(ref), "-q", env={"HPC_TEST_NO_KILL": "1"}, check=True)
    assert_complete_once(d, 120)
    assert_stats_equal(stats(d), stats(ref))
    assert stats(d)["u"]["count"] == 120 * 64


def test_truncated_last_journal_line_is_reported_not_fatal(tmp_path: Path) -> None:
    d = tmp_path / "t"
    cli("run", SPEC, "--run-dir", str(d), "-p", "n=10", "--commit-every", "4", "-q", check=True)
    path = journal_file(d, 1, 0)
    with open(path, "ab") as fh:
        fh.write(b'{"t":"commit","seq":9,"idx":[1,2')
    out = cli("manifest", str(d), "--json", check=True)
    doc = json.loads(out.stdout)
    assert doc["journal_torn_lines"] == {path.name: 1}
    assert doc["counts"]["ok"] == 10


def test_failures_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    d = tmp_path / "f"
    proc = cli("run", SPEC, "--run-dir", str(d), "-p", "n=30", "-p", "fail=3,17", "-q")
    assert proc.returncode == 1
    assert "28/30 ok, 2 failed" in proc.stderr
    assert "index 3" in proc.stderr and "RuntimeError" in proc.stderr
    rows = {r["index"]: r for r in manifest_rows(d)}
    assert rows[17]["status"] == "failed"
    assert rows[17]["error_type"] == "RuntimeError"
    assert "injected failure at index 17" in rows[17]["error_message"]
    assert "Traceback" in rows[17]["traceback"] and "transforms.py" in rows[17]["traceback"]
    assert rows[17]["rank"] == 0 and rows[17]["host"] == os.uname().nodename
    assert rows[4]["status"] == "ok"
    # failed indices contribute nothing to the statistics
    assert stats(d)["u"]["count"] == 28 * 64


def test_failure_budget_stops_early(tmp_path: Path) -> None:
    d = tmp_path / "b"
    fails = ",".join(str(i) for i in range(0, 100, 5))
    proc = cli(
        "run",
        SPEC,
        "--run-dir",
        str(d),
        "-p",
        "n=100",
        "-p",
        f"fail={fails}",
        "--max-failures",
        "2",
        "--commit-every",
        "1",
        "-q",
    )
    assert proc.returncode == 1
    assert "max_failures" in proc.stderr
    doc = read_manifest(d)
    assert doc["counts"]["failed"] == 3
    assert doc["counts"]["pending"] > 0


def test_retry_reruns_only_failed_indices(tmp_path: Path) -> None:
    d = tmp_path / "r"
    first = cli("run", SPEC, "--run-dir", str(d), "-p", "n=20", "-p", "fail=5", "-q")
    assert first.returncode == 1
    # same spec, so the failure persists: retry records it again but runs nothing else
    again = cli(
        "run", SPEC, "--run-dir", str(d), "-p", "n=20", "-p", "fail=5", "--retry-failed", "-q"
    )
    assert again.returncode == 1
    rows = manifest_rows(d)
    assert [r["attempt"] for r in rows if r["index"] == 5] == [2]
    assert {r["attempt"] for r in rows if r["index"] != 5} == {1}
    assert stats(d)["u"]["count"] == 19 * 64
