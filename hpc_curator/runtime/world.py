"""Who am I and who else is here: rank, size, host, Slurm ids, and the collectives.

The environment is read once into a :class:`World`. Under ``mpiexec`` or ``srun --mpi=...`` the
world is MPI ``COMM_WORLD``; alone it is a world of size 1 with no-op collectives. Launchers
tell the ranks how many of them there should be (``HPC_CURATOR_EXPECTED_SIZE``; under ``srun``
also ``SLURM_STEP_NUM_TASKS``), so ranks that came up as MPI singletons — ``srun`` without
``--mpi`` — fail at once, before any index runs, instead of each silently doing all the work.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from hpc_curator.errors import WorldError
from hpc_curator.slurm.env import slurm_env


def hostname() -> str:
    """This host's name (``gethostname``; read from ``uname``: no ``socket`` import)."""
    return os.uname().nodename


EXPECTED_SIZE_ENV = "HPC_CURATOR_EXPECTED_SIZE"
NO_MPI_ENV = "HPC_CURATOR_NO_MPI"


class Counter(Protocol):
    """A global integer shared by every rank (failure budget, dynamic schedule)."""

    def add(self, n: int) -> int:
        """Atomically add ``n`` and return the new total."""
        ...

    def free(self) -> None:
        """Release resources (collective for MPI)."""
        ...


class LocalCounter:
    """A counter for a world of one process."""

    def __init__(self, initial: int = 0) -> None:
        self.value = initial

    def add(self, n: int) -> int:
        self.value += n
        return self.value

    def free(self) -> None:
        return None


class RMACounter:
    """A counter in an MPI window on rank 0, updated with ``Fetch_and_op`` (no master rank).

    One passive-target epoch (``Lock_all``) stays open for the counter's life and each update
    is ``Fetch_and_op`` + ``Flush``: a lock/unlock pair per update would need rank 0 to enter
    MPI before it completes, so a busy rank 0 would stall every claim (measured: ~1 s per
    claim with 8 ranks on 2 cores, against ~10 µs with the open epoch).
    """

    def __init__(self, comm: Any, initial: int = 0) -> None:
        import numpy as np
        from mpi4py import MPI

        self._mpi = MPI
        rank = comm.Get_rank()
        self.win = MPI.Win.Allocate(8 if rank == 0 else 0, 8, comm=comm)
        if rank == 0:
            memory: Any = self.win.tomemory()  # mpi4py.MPI.buffer (buffer protocol)
            np.frombuffer(memory, dtype=np.int64)[0] = initial
        comm.Barrier()
        self.win.Lock_all(MPI.MODE_NOCHECK)
        self._one = np.zeros(1, dtype=np.int64)
        self._res = np.zeros(1, dtype=np.int64)

    def add(self, n: int) -> int:
        self._one[0] = n
        self.win.Fetch_and_op(self._one, self._res, 0, 0, self._mpi.SUM)
        self.win.Flush(0)
        return int(self._res[0]) + n

    def free(self) -> None:
        self.win.Unlock_all()
        self.win.Free()


@dataclass
class World:
    """The rank's view of the run: identity, placement and collectives.

    Attributes
    ----------
    rank, size
        Global MPI rank and world size (0 and 1 without MPI).
    host
        ``socket.gethostname()``.
    node
        Slurm node name (``SLURMD_NODENAME``), else the host.
    job_id, step_id
        Slurm job and step ids when running under Slurm.
    pid
        Process id.
    """

    rank: int = 0
    size: int = 1
    host: str = field(default_factory=hostname)
    node: str = ""
    job_id: str | None = None
    step_id: str | None = None
    pid: int = field(default_factory=os.getpid)
    gpus: list[str] | None = None
    mpi: dict[str, Any] | None = None
    comm: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        slurm = slurm_env()
        if not self.node:
            self.node = slurm.node or self.host
        if self.job_id is None:
            self.job_id = slurm.job_id
        if self.step_id is None:
            self.step_id = slurm.step_id

    @property
    def is_root(self) -> bool:
        """Whether this is rank 0, which prepares and finishes the run."""
        return self.rank == 0

    def identity(self) -> dict[str, Any]:
        """JSON-able placement record (journals, manifest)."""
        return {
            "rank": self.rank,
            "size": self.size,
            "host": self.host,
            "node": self.node,
            "job_id": self.job_id,
            "step_id": self.step_id,
            "pid": self.pid,
            **({"gpus": self.gpus} if self.gpus is not None else {}),
            **({"mpi": self.mpi} if self.mpi is not None else {}),
            **_array_ids(),
        }

    # -- collectives (no-ops for size 1) ---------------------------------------------------
    def idle_barrier(self, poll: float = 0.005) -> None:
        """Wait for every rank *sleeping*, not spinning.

        MPI implementations busy-poll inside blocking collectives. When some ranks wait for a
        long time (rank 0 merging and writing the manifest, early finishers waiting for the
        slowest rank) on oversubscribed or shared cores, their spinning steals the CPU from
        the ranks doing the work. A non-blocking barrier tested at growing intervals (50 µs,
        doubling up to ``poll`` seconds) costs nothing while it waits and notices a barrier
        that completes at once within microseconds, not a whole ``poll`` later: a run passes
        four of them, the last rank to arrive at each on the critical path.
        """
        if self.comm is None:
            return
        request = self.comm.Ibarrier()
        wait = 5e-5
        while not request.Test():
            time.sleep(wait)
            wait = min(poll, wait * 2)

    def bcast(self, obj: Any) -> Any:
        """Broadcast ``obj`` from rank 0."""
        return self.comm.bcast(obj, root=0) if self.comm is not None else obj

    def gather(self, obj: Any) -> list[Any] | None:
        """Gather one object per rank on rank 0 (``None`` elsewhere)."""
        return self.comm.gather(obj, root=0) if self.comm is not None else [obj]

    def counter(self, initial: int = 0) -> Counter:
        """Create a global counter (collective under MPI)."""
        if self.comm is not None:
            return RMACounter(self.comm, initial)
        return LocalCounter(initial)


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _array_ids() -> dict[str, Any]:
    """The Slurm job array and task of this process, if it is an array task."""
    env = slurm_env()
    if env.array_task_id is None:
        return {}
    return {"array_job_id": env.array_job_id, "array_task_id": env.array_task_id}


def thread_limits(threads: int) -> dict[str, str]:
    """BLAS/OpenMP thread caps for one rank: without them every rank starts one thread per
    core and N ranks oversubscribe the node N-fold (measured: numpy reductions 10x slower)."""
    return dict.fromkeys(THREAD_VARS, str(max(1, threads)))


def tune_malloc(mmap_mib: int = 4, trim_mib: int = 16) -> bool:
    """Keep freed buffers in the heap of a rank process (glibc only; returns whether applied).

    Pipelines allocate and free the same multi-MiB numpy buffers for every index. With
    glibc's adaptive thresholds, a lazy source -> filter -> sink chain made it hand the heap
    top back to the OS and fault it in again on every index (measured: ~450 page faults and
    ~15% of the time per index of the W1 benchmark). Fixed thresholds stop that for the cost
    of keeping up to ``trim_mib`` of free memory. Applied only in processes hpc-curator
    owns (ranks, pool workers), never when the user set ``MALLOC_*_THRESHOLD_`` themselves.
    """
    if any(v in os.environ for v in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(
            libc.mallopt(m_mmap_threshold, mmap_mib << 20)
            and libc.mallopt(m_trim_threshold, trim_mib << 20)
        )
    except (OSError, AttributeError):
        return False


#: MPICH's variables that pick the network module (``ch4:ucx`` or ``ch4:ofi``)
NETMOD_VARS = ("MPIR_CVAR_CH4_NETMOD", "MPICH_CH4_NETMOD")
#: libfabric: any provider but ``sockets`` (see :func:`srun_netmod`)
NO_SOCKETS = {"FI_PROVIDER": "^sockets"}


def srun_netmod(library: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables that make MPICH start on OFI, or ``{}`` to leave MPICH's choice.

    Under ``srun --mpi=pmi2`` an MPICH built with both UCX and OFI (the PyPI ``mpich`` wheel:
    ``MPICH Device: ch4:ucx ofi``) picks UCX, whose start-up allgather is 9 PMI-1 ``put``
    lines of up to the 1,024-byte value limit *plus* the command text; bytes the buffer never
    had written (leftover heap) do not compress, and Slurm 22.05's pmi2 plugin reads a longer
    line as two requests: ``MPI_Init`` dies or hangs (pmodels/mpich#6924). Measured here: put
    lines of 516-1,083 bytes. OFI's exchange is one 73-byte line. libfabric's ``sockets``
    provider, which OFI picks first on a host without a fabric, sends a message only while
    the sender is inside MPI: the other ranks waited for rank 0's whole share before they
    could start (4 ranks: started 1.2-2.3 s after rank 0), so it is excluded (with it
    excluded: all four start together, as under UCX). Only that build, only under the pmi2
    plugin, never when the user chose a netmod; a provider the user chose is kept.
    """
    env = os.environ if environ is None else environ
    if env.get("SLURM_MPI_TYPE") != "pmi2" or any(v in env for v in NETMOD_VARS):
        return {}
    for line in library.splitlines():
        if line.startswith("MPICH Device:"):
            device = line.split(":", 1)[1]
            if "ucx" in device and "ofi" in device:
                return {NETMOD_VARS[0]: "ofi", **({} if "FI_PROVIDER" in env else NO_SOCKETS)}
            return {}
    return {}


def exit_process(code: int) -> NoReturn:
    """End a rank process now: flush, ``MPI_Finalize``, then the C library's ``exit``.

    Everything durable is on disk before this (journals fsynced at each commit, the manifest
    written and renamed by rank 0); what remains is the interpreter's teardown, which frees
    every object of numpy, pyarrow and h5py one by one: ~20-40 ms per rank (measured), paid
    again by every requeue. ``exit(3)`` still runs the C libraries' own exit handlers (the
    MPI library's among them); ``os._exit`` skipped them too, and Hydra then killed a rank
    now and then (4 ranks: "BAD TERMINATION ... signal 9" in 1 run of 3; none in 24 with
    ``exit``). Only for the process of a command (the rank program, ``run``), never in a
    library call.

    The functions user code registered with :mod:`atexit` still run, first (newest first, as
    at a normal exit: MPI is still up for them): a component that flushes something at exit
    must not lose it silently.
    """
    import ctypes

    try:
        atexit._run_exitfuncs()  # logging's shutdown and mpi4py's finaliser are among them
    except Exception as exc:  # what the interpreter would print at exit, and go on
        print(f"hpc-curator: an exit handler failed: {exc!r}", file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None:
        _finalize(mpi)
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # no C library to call: the interpreter's own exit
        sys.exit(code)
    libc.exit(code)
    os._exit(code)  # not reached


def _finalize(mpi: Any) -> None:
    """``MPI_Finalize`` if MPI was started and not finalised yet."""
    if mpi.Is_initialized() and not mpi.Is_finalized():
        mpi.Finalize()


def start_mpi() -> Any:
    """Initialise MPI (thread level ``multiple``, finalised at exit); return ``mpi4py.MPI``.

    MPI is not started by the import but after a look at the library, so that
    :func:`srun_netmod` can choose MPICH's network module first.
    """
    import mpi4py

    imported = "mpi4py.MPI" in sys.modules
    if not imported:
        mpi4py.rc.initialize = False
        mpi4py.rc.finalize = True  # read once, at import
    from mpi4py import MPI

    if not MPI.Is_initialized():
        os.environ.update(srun_netmod(str(MPI.Get_library_version())))
        MPI.Init_thread(MPI.THREAD_MULTIPLE)
        if imported and mpi4py.rc.finalize is False:  # imported only to read the version
            atexit.register(_finalize, MPI)
    return MPI


def expected_size() -> int | None:
    """World size the launcher promised, from our variable or the Slurm step."""
    value = os.environ.get(EXPECTED_SIZE_ENV)
    if value and value.isdigit():
        return int(value)
    return slurm_env().step_tasks


def vendor_of(library: str) -> str | None:
    """``MPICH``, ``Intel MPI`` or ``Open MPI`` from ``MPI_Get_library_version`` text (or
    from an ``mpiexec --version``: Open MPI 4 says OpenRTE, Open MPI 5 PRRTE or ``(Open
    MPI)``, Intel ``Intel(R) MPI Library``, MPICH's Hydra ``HYDRA``)."""
    if "Open MPI" in library or "OpenRTE" in library or "PRRTE" in library:
        return "Open MPI"
    if "Intel" in library:
        return "Intel MPI"
    if "MPICH" in library or "MVAPICH" in library or "HYDRA" in library:
        return "MPICH"
    return None


def mpi_description(mpi: Any) -> dict[str, Any]:
    """Which MPI library this rank runs (vendor, version, ABI) and the srun plugin, if any."""
    name, version = mpi.get_vendor()
    # Open MPI's text ends in a NUL byte
    library = str(mpi.Get_library_version()).replace("\x00", "").strip().splitlines()
    text = library[0] if library else ""
    netmods = [os.environ[v] for v in NETMOD_VARS if v in os.environ]
    return {
        "vendor": vendor_of(text) or name,
        "version": ".".join(map(str, version)),
        "standard": ".".join(map(str, mpi.Get_version())),
        "library": text[:200],
        "srun_plugin": os.environ.get("SLURM_MPI_TYPE"),
        **({"netmod": netmods[0]} if netmods else {}),
    }


def detect_world(use_mpi: bool = True) -> World:
    """Read the environment once and return the :class:`World`.

    Parameters
    ----------
    use_mpi
        Try ``mpi4py``. When MPI cannot initialise the world falls back to size 1 with a
        warning — unless the launcher promised more ranks, then :class:`WorldError`.

    Raises
    ------
    WorldError
        When the world size differs from what the launcher promised (e.g. singletons).
    """
    expected = expected_size()
    if not use_mpi or os.environ.get(NO_MPI_ENV):
        world = World()
    else:
        try:
            if "mpi4py.MPI" not in sys.modules:  # importing it runs MPI_Init
                from hpc_curator.slurm.stale_shm import clear_stale_segments

                clear_stale_segments()
            MPI = start_mpi()
            comm = MPI.COMM_WORLD
            size = comm.Get_size()
            if size == 1:
                from hpc_curator.slurm.stale_shm import unlink_singleton_segments

                unlink_singleton_segments()
            world = World(rank=comm.Get_rank(), size=size, comm=comm if size > 1 else None)
            world.mpi = mpi_description(MPI)
        except (ImportError, RuntimeError, OSError) as exc:
            if expected and expected > 1:
                raise WorldError(
                    f"MPI could not start ({exc}) but {expected} ranks were launched",
                    "install mpi4py with an MPI library (pip install 'hpc-curator[local-mpi]')",
                ) from exc
            warnings.warn(f"MPI unavailable ({exc}); running as a single rank", stacklevel=2)
            world = World()
    if expected is not None and world.size != expected:
        plugin = {"Open MPI": "pmix"}.get((world.mpi or {}).get("vendor", ""), "pmi2")
        vendor = (world.mpi or {}).get("vendor", "your MPI")
        hint = (
            f"under srun pass the plugin {vendor} speaks: hpc-curate submit --mpi {plugin} "
            f"(or --mpi auto), or srun --mpi={plugin}"
            if world.size == 1
            else "launch with as many ranks as the job asks for"
        )
        raise WorldError(
            f"MPI world size is {world.size} but {expected} ranks were launched"
            + (" (every rank is an MPI singleton)" if world.size == 1 else ""),
            hint,
        )
    return world
