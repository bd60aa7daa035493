"""Faults that used to hang a world, give a silent wrong result or a traceback.

Every multi-rank case runs 2 real MPI ranks with a hard timeout (a timeout is a hang and fails
the test) and checks the error is one line and the run dir is consistent.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import FIXTURE_PIPELINES, cli, journal_file, manifest_rows, read_manifest

SPEC = f"{FIXTURE_PIPELINES}:stats"

USER = textwrap.dedent(
    """
    import os, sys
    from hpc_curator import Pipeline, Sink
    from hpc_curator.components import FieldStats, SyntheticSource


    class OddSink(Sink):
        '''Index 2 exits, 4 raises KeyboardInterrupt, 5 returns a string, 6 a dict.'''

        def __call__(self, items, index):
            for _ in items:
                pass
            if index == 2:
                sys.exit(3)
            if index == 4:
                raise KeyboardInterrupt
            if index == 5:
                return "abc"
            if index == 6:
                return {"a": 1}
            return [f"/tmp/out-{index}"]


    class BadMerge(FieldStats):
        '''Reading a shard raises: the final merge fails.'''

        @classmethod
        def read_state(cls, path):
            raise RuntimeError("cannot read " + os.path.basename(path))


    def odd(n: str = "10") -> Pipeline:
        src = SyntheticSource(n=int(n), shape=(2, 2), fields=("u",))
        return Pipeline(src).filter(FieldStats(name="s")).write(OddSink())


    def one_rank_fails(n: str = "10") -> Pipeline:
        if os.environ.get("PMI_RANK") == "1":
            raise RuntimeError("rank 1 cannot build")
        return odd(n)


    def bad_merge(n: str = "10") -> Pipeline:
        src = SyntheticSource(n=int(n), shape=(2, 2), fields=("u",))
        return Pipeline(src).filter(BadMerge(name="s"))
    """
)


@pytest.fixture
def user(tmp_path: Path) -> Path:
    path = tmp_path / "user.py"
    path.write_text(USER)
    return path


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.mpi
@pytest.mark.timeout(90)
def test_exits_interrupts_and_bad_sink_values_are_index_failures(
    tmp_path: Path, user: Path
) -> None:
    d = tmp_path / "run"
    proc = cli("run", f"{user}:odd", "--ranks", "2", "--run-dir", str(d), "-q", timeout=80)
    assert proc.returncode == 1, proc.stderr
    rows = {r["index"]: r for r in manifest_rows(d)}
    assert len(rows) == 10
    assert rows[2]["error_type"] == "SystemExit" and rows[4]["error_type"] == "KeyboardInterrupt"
    assert rows[5]["error_type"] == "TypeError" and rows[6]["error_type"] == "TypeError"
    assert list(rows[5]["outputs"]) == []  # never ['a', 'b', 'c']
    failed = cli("failed", str(d)).stdout
    assert "OddSink returned a str, not a list of paths" in failed
    assert "OddSink returned a dict" in failed
    assert read_manifest(d)["counts"] == {"total": 10, "ok": 6, "failed": 4, "pending": 0}


@pytest.mark.mpi
@pytest.mark.timeout(90)
def test_a_factory_failing_on_one_rank_stops_every_rank(tmp_path: Path, user: Path) -> None:
    d = tmp_path / "run"
    proc = cli(
        "run", f"{user}:one_rank_fails", "--ranks", "2", "--run-dir", str(d), "-q", timeout=80
    )
    assert proc.returncode == 2, proc.stderr
    assert "rank 1 cannot build" in one_error_line(proc.stderr)
    attempts = read_manifest_free_attempts(d)
    assert attempts and attempts[-1]["reason"] == "error"  # ended, not "running"


def read_manifest_free_attempts(d: Path) -> list[dict]:
    import json

    return [json.loads(p.read_text()) for p in sorted((d / "attempts").glob("0*.json"))]


@pytest.mark.mpi
@pytest.mark.timeout(90)
def test_a_failing_final_merge_is_one_line_and_never_complete(tmp_path: Path, user: Path) -> None:
    d = tmp_path / "run"
    proc = cli("run", f"{user}:bad_merge", "--ranks", "2", "--run-dir", str(d), "-q", timeout=80)
    assert proc.returncode not in (0, 1), proc.stderr
    assert "cannot read" in one_error_line(proc.stderr)
    doc = cli("manifest", str(d), "--json", check=True).stdout
    assert '"status": "incomplete"' in doc and '"unmerged_outputs": [\n    "s"\n  ]' in doc


@pytest.mark.mpi
@pytest.mark.timeout(90)
@pytest.mark.parametrize("ranks", ["1", "2"])
def test_a_run_dir_that_is_a_file_is_one_line(tmp_path: Path, ranks: str) -> None:
    target = tmp_path / "afile"
    target.write_text("x")
    proc = cli("run", SPEC, "--ranks", ranks, "--run-dir", str(target), "-q", timeout=80)
    assert proc.returncode == 4, proc.stderr
    assert "is not a directory" in one_error_line(proc.stderr)
    assert target.read_text() == "x"


@pytest.mark.parametrize(
    ("budget", "stops"),
    [("100%", False), ("50%", False), ("20%", True), ("1", True), ("0.5", False)],
)
def test_percent_budgets_are_fractions_of_the_indices(
    tmp_path: Path, budget: str, stops: bool
) -> None:
    """4 of 10 indices fail: 100% and 50% never stop, 20% (2) and a count of 1 do."""
    d = tmp_path / "run"
    args = ("-p", "n=10", "-p", "fail=1,3,5,7", "--commit-every", "1", "--max-failures", budget)
    proc = cli("run", SPEC, *args, "--run-dir", str(d), "-q")
    assert proc.returncode == 1, proc.stderr
    counts = read_manifest(d)["counts"]
    if stops:
        assert counts["pending"] > 0 and "max_failures" in proc.stderr
    else:
        assert counts == {"total": 10, "ok": 6, "failed": 4, "pending": 0}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--max-failures", "nan"), "finite"),
        (("--max-failures", "inf"), "finite"),
        (("--max-failures", "150%"), "more than 100%"),
        (("--max-failures", "2.5"), "whole number"),
        (("--indices", "10:5"), "is empty"),
    ],
)
def test_bad_values_are_refused_in_one_line_before_anything_exists(
    tmp_path: Path, args: tuple[str, ...], needle: str
) -> None:
    d = tmp_path / "run"
    proc = cli("run", SPEC, *args, "--run-dir", str(d), "-q")
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not d.exists()


CODE = textwrap.dedent(
    """
    from hpc_curator import Filter, Pipeline
    from hpc_curator.components import FieldStats, SyntheticSource
    from helpers import OFFSET


    class Shift(Filter):
        def __call__(self, items):
            for item in items:
                yield {**item, "u": item["u"] + OFFSET}


    def build() -> Pipeline:
        src = SyntheticSource(n=20, shape=(2, 2), fields=("u",))
        return Pipeline(src).filter(Shift()).filter(FieldStats(name="s"))
    """
)


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_a_changed_pipeline_is_refused_unless_accepted(tmp_path: Path) -> None:
    """Editing the factory file or a module it imports refuses the resume, with the names."""
    (tmp_path / "pipe.py").write_text(CODE)
    (tmp_path / "helpers.py").write_text("OFFSET = 1.0\n")
    d = tmp_path / "run"
    env = {"PYTHONPATH": str(tmp_path)}

    def launch(*extra: str) -> tuple[int, str]:
        proc = cli("run", "pipe.py:build", "--ranks", "2", "--run-dir", str(d), "-q", *extra,
                   cwd=tmp_path, env=env, timeout=100)  # fmt: skip
        return proc.returncode, proc.stderr

    assert launch("--indices", "0:10")[0] == 0
    code = read_json(d / "run.json")["code"]
    assert {Path(p).name for p in code} == {"pipe.py"}  # the factory file (Shift is in it)
    (tmp_path / "helpers.py").write_text("OFFSET = 2.0\n")  # not a component module: allowed
    (tmp_path / "pipe.py").write_text(
        CODE.replace("yield {", "yield {  # edited\n                ")
    )
    rc, err = launch()
    assert rc == 4 and "pipe.py (edited)" in one_error_line(err)
    assert "--accept-code-change" in err
    rc, err = launch("--accept-code-change")
    assert rc == 0, err
    last = read_json(sorted((d / "attempts").glob("0*.json"))[-1])
    assert last["code_change_accepted"] == ["pipe.py (edited)"]
    assert launch()[0] == 0  # the accepted code is the reference now


def read_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


def wait_for_commits(d: Path, attempt: int, rank: int, n: int, timeout: float = 60.0) -> Path:
    """Wait until the journal of ``rank`` holds ``n`` commit records (well into its loop)."""
    import time

    deadline = time.monotonic() + timeout
    journal = journal_file(d, attempt, rank)
    while time.monotonic() < deadline and (
        not journal.exists() or journal.read_bytes().count(b'"t":"commit"') < n
    ):
        time.sleep(0.05)
        journal = journal_file(d, attempt, rank)
    return journal


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_a_killed_rank_is_named_exit_3_and_its_shared_memory_is_removed(tmp_path: Path) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys

    shm = Path("/dev/shm")
    before = {p.name for p in shm.iterdir()} if shm.is_dir() else set()
    d = tmp_path / "run"
    args = ["run", SPEC, "-p", "n=300", "-p", "sleep=0.02", "--commit-every", "2", "--ranks", "2"]
    args += ["--run-dir", str(d)]
    env = {k: v for k, v in os.environ.items() if k != "HPC_CURATOR_EXPECTED_SIZE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpc_curator", *args, "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        journal = wait_for_commits(d, 1, 1, 3)
        os.kill(json.loads(journal.read_text().splitlines()[0])["pid"], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err
    line = next(ln for ln in err.splitlines() if ln.startswith("incomplete:"))
    assert "rank(s)" in line and "1" in line and "SIGKILL" in line, line
    left = {p.name for p in shm.iterdir()} - before if shm.is_dir() else set()
    assert not [n for n in left if n.startswith("mpich_")], left
    again = cli(*args, "-q")
    assert again.returncode == 0, again.stderr
    assert [r["index"] for r in manifest_rows(d)] == list(range(300))


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_a_killed_singleton_rank_leaves_no_shared_memory(tmp_path: Path) -> None:
    # a rank started without a launcher (an array task, a script) is an MPI singleton: MPICH
    # gives it /dev/shm/mpich_shm_<pid in hex>_0, which only MPI_Finalize would unlink
    import json
    import os
    import signal
    import subprocess
    import sys

    d = tmp_path / "run"
    args = ["rank", "--spec", SPEC, "-p", "n=300", "-p", "sleep=0.02", "--commit-every", "2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_CURATOR_", "PMI"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpc_curator", *args, "--run-dir", str(d)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        journal = wait_for_commits(d, 1, 0, 2)
        start = json.loads(journal.read_text().splitlines()[0])
        assert start["pid"] == proc.pid and start["size"] == 1
        name = f"mpich_shm_{proc.pid:x}_0"
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert f"/dev/shm/{name} (deleted)" in maps  # MPICH made it; the rank unlinked it
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not Path("/dev/shm", name).exists()


POISON = textwrap.dedent(
    """
    import os, signal, time
    import numpy as np
    from hpc_curator import Pipeline, Source
    from hpc_curator.components import FieldStats


    class Src(Source):
        '''40 indices; index 7 kills its process, or (mode slow) 3 sleeps, 5 is stuck.'''

        def __init__(self, mode: str = "poison") -> None:
            self.mode = mode

        def __len__(self):
            return 40

        def __getitem__(self, index):
            if self.mode == "poison" and index == 7:
                os._exit(9)
            if self.mode == "slow" and index == 3:
                time.sleep(30)  # Python code: SIGALRM interrupts it
            if self.mode == "stuck" and index == 5:
                signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])  # as C code would
                time.sleep(60)
            time.sleep(0.01)
            yield {"u": np.full((2, 2), float(index))}


    def build(mode: str = "poison") -> Pipeline:
        return Pipeline(Src(mode)).filter(FieldStats(name="s"))
    """
)


def launches_until_done(args: list[str], cwd: Path, most: int) -> list[int]:
    codes: list[int] = []
    for _ in range(most):
        codes.append(cli(*args, cwd=cwd, timeout=100).returncode)
        if codes[-1] in (0, 1):
            break
    return codes


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "launch",
    [
        pytest.param(("--ranks", "2"), id="mpi", marks=pytest.mark.mpi),
        pytest.param(("--backend", "process_pool", "-j", "2"), id="process_pool"),
    ],
)
def test_a_poison_pill_is_failed_after_two_crashes_and_nothing_else_is(
    tmp_path: Path, launch: tuple[str, ...]
) -> None:
    """Index 7 kills its rank; mpiexec kills the other rank mid-index each time, yet only 7
    ends up failed (suspects run alone on rank 0 first), every other index exactly once."""
    (tmp_path / "poison.py").write_text(POISON)
    d = tmp_path / "run"
    args = ["run", "poison.py:build", *launch, "--run-dir", str(d), "-q"]
    codes = launches_until_done([*args, "--commit-every", "2"], tmp_path, 5)
    assert codes[-1] == 1 and codes[:-1] == [3, 3], codes
    rows = {r["index"]: r for r in manifest_rows(d)}
    assert sorted(rows) == list(range(40))
    assert [i for i, r in rows.items() if r["status"] != "ok"] == [7]
    assert rows[7]["error_type"] == "RankCrash"
    assert "killed its rank 2 times" in cli("failed", str(d)).stdout
    doc = read_manifest(d)
    assert doc["counts"] == {"total": 40, "ok": 39, "failed": 1, "pending": 0}
    # the merged statistics hold each of the 39 good indices exactly once
    from tests.conftest import stats

    assert stats(d, "s")["u"]["count"] == 39 * 4


@pytest.mark.timeout(240)
def test_index_timeout_fails_a_slow_index_and_ends_a_stuck_one(tmp_path: Path) -> None:
    (tmp_path / "poison.py").write_text(POISON)
    slow = tmp_path / "slow"
    proc = cli(
        "run", "poison.py:build", "-p", "mode=slow", "--index-timeout", "0.5",
        "--run-dir", str(slow), "-q", cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    rows = {r["index"]: r for r in manifest_rows(slow)}
    assert [i for i, r in rows.items() if r["status"] != "ok"] == [3]
    assert rows[3]["error_type"] == "IndexTimeout"
    stuck = tmp_path / "stuck"
    args = ["run", "poison.py:build", "-p", "mode=stuck", "--index-timeout", "0.5"]
    codes = launches_until_done([*args, "--run-dir", str(stuck), "-q"], tmp_path, 4)
    assert codes[-1] == 1 and len(codes) == 3, codes  # killed twice, then recorded
    rows = {r["index"]: r for r in manifest_rows(stuck)}
    assert [i for i, r in rows.items() if r["status"] != "ok"] == [5]
    assert rows[5]["error_type"] == "RankCrash"
