"""Remove the MPI shared memory a requeued job's previous run left behind, before MPI starts.

MPICH (4.x and 5.x, including the PyPI ``mpich`` wheel) names a world's node-local shared
memory after the world::

    /dev/shm/mpich_shm_<W>_<node>    /dev/shm/mpich_vci_<W>_<node>

where ``W`` is the 32-bit FNV-1a hash of the PMI key-value-space name and ``<node>`` the node's
index in the world. Under ``srun --mpi=pmi2`` that name is ``"<jobid>.<stepid>"``. A requeued job
keeps its id and numbers its steps from 0 again, so its next run computes *the same file names*.
When the previous run was killed (``scontrol requeue``, pre-emption, a time limit: Slurm's
SIGKILL follows SIGTERM within ``KillWait`` seconds, and ``srun`` may force it sooner) before
``MPI_Finalize`` unlinked them, the files survive. MPICH then opens them as a segment some other
local rank already initialised, skips the initialisation and trusts what the dead run left
there: ``MPI_Init`` of the requeued run hangs or aborts (seen as ``FAILED 9:0`` in ``sacct``).

So every task of a *restarted* job (``SLURM_RESTART_COUNT`` >= 1) removes its node's two files
before ``MPI_Init`` -- but only files older than the task itself (minus a margin), so a segment
that a faster sibling task of this very run has already created is never touched. A previous
run's files are older by at least the requeue delay (Slurm's credential expiry, >= 5 s). The
names are unique to the job step, so nothing of another job is ever touched.

The other MPIs need nothing here (measured on the local Slurm cluster, ``scancel -s KILL`` of a
2x2 step): Open MPI 5 (PyPI wheel, ``--mpi=pmix``) maps ``sm_segment.<node>.<uid>.<job>.<local
rank>`` in /dev/shm and Slurm's PMIx server removes them when the step ends, killed or not;
Intel MPI (``impi-rt``, ``--mpi=pmi2``) creates nothing in /dev/shm. Locally (``mpiexec``), the
parent removes what its killed ranks had mapped (:func:`remove_leftovers`), and Open MPI's
session directory (:func:`session_dir`).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from hpc_curator.slurm.env import SlurmEnv

SHM_DIR = Path("/dev/shm")
MARGIN_S = 2.0


def fnv1a_32(text: str) -> int:
    """32-bit FNV-1a hash of ``text`` (MPICH's ``HASH_FNV`` of the KVS name)."""
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def segment_names(job_id: str, step_id: str, node_id: str) -> list[str]:
    """File names MPICH gives a Slurm job step's shared memory on one node.

    Covers the KVS names of srun's PMI-2 (``"J.S"``) and PMIx (``"slurm.pmix.J.S"``) plugins.
    """
    names = []
    for kvs in (f"{job_id}.{step_id}", f"slurm.pmix.{job_id}.{step_id}"):
        world = fnv1a_32(kvs)
        names += [f"mpich_shm_{world:x}_{node_id}", f"mpich_vci_{world:x}_{node_id}"]
    return names


def process_start_time(pid: int | str = "self") -> float | None:
    """Start time (epoch seconds, about 1 s accurate) of a process, from ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return None


def clear_stale_segments(
    env: os._Environ[str] | dict[str, str] | None = None, shm_dir: Path = SHM_DIR
) -> list[Path]:
    """Remove this node's stale MPICH segments of a restarted Slurm job step; return them.

    Does nothing outside a restarted Slurm job step. Files newer than this process's start
    minus :data:`MARGIN_S` belong to the current run and are kept.
    """
    slurm = SlurmEnv.read(env)
    job, step, node = slurm.job_id, slurm.step_id, slurm.node_id
    if not (job and step and node) or slurm.restart_count < 1:
        return []
    started = process_start_time()
    if started is None:
        return []
    removed = []
    for name in segment_names(job, step, node):
        path = shm_dir / name
        try:
            st = path.stat()
            if max(st.st_mtime, st.st_ctime) >= started - MARGIN_S:
                continue
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            note = f"hpc-curator: cannot remove stale MPI shared memory {path}: {exc}"
            print(note, file=sys.stderr)
            continue
        removed.append(path)
    if removed:
        listed = ", ".join(str(p) for p in removed)
        print(
            f"hpc-curator: removed MPI shared memory left by this job's previous run: {listed}",
            file=sys.stderr,
            flush=True,
        )
    return removed


#: Name prefixes of node-local shared memory MPI libraries create in /dev/shm.
SEGMENT_PREFIXES = ("mpich_", "psm2_", "vader_segment", "sm_segment", "ompi.", "shm-col-space")


def _mapped_anywhere(roots: tuple[str, ...] = ("/dev/shm/",)) -> set[str]:
    """Paths below ``roots`` that some live process has mapped or open."""
    used: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            with open(proc / "maps") as fh:
                for line in fh:
                    path = line.split()[-1]
                    if path.startswith(roots):
                        used.add(path)
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith(roots):
                    used.add(target)
        except OSError:
            continue
    return used


def descendants(root: int) -> list[int]:
    """PIDs of every live descendant of ``root`` (from /proc; the launcher's ranks)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(proc.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def session_dir(pid: int) -> Path | None:
    """Open MPI 5's session directory of a ``prterun`` with this PID, if it is ours.

    ``prterun`` keeps its PMIx rendezvous files and the ranks' ``pmix-gds-shmem2`` segments in
    ``$TMPDIR/ompi.<pid>/`` and removes it when it ends normally; when its ranks were killed
    (measured: SIGKILL of ``run --ranks 4``'s ranks) it stays behind, about 300 kB.
    """
    import tempfile

    path = Path(tempfile.gettempdir()) / f"ompi.{pid}"
    try:
        st = path.lstat()
    except OSError:
        return None
    return path if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() else None


def segments_of(pids: list[int]) -> set[str]:
    """MPI shared-memory files under /dev/shm that these processes have mapped, and the
    Open MPI session directories named after them (:func:`session_dir`)."""
    found: set[str] = set()
    for pid in pids:
        session = session_dir(pid)
        if session is not None:
            found.add(str(session))
        try:
            with open(f"/proc/{pid}/maps") as fh:
                for line in fh:
                    path = line.split()[-1]
                    if path.startswith("/dev/shm/") and Path(path).name.startswith(
                        SEGMENT_PREFIXES
                    ):
                        found.add(path)
        except OSError:
            continue
    return found


def unlink_singleton_segments() -> list[str]:
    """In an MPI world of one process: unlink the shared memory MPICH just created for it.

    A singleton (a rank started without a launcher: an array task, a script calling the API)
    still gets a ``/dev/shm/mpich_shm_<pid in hex>_0`` segment, which only ``MPI_Finalize``
    unlinks: a singleton that is killed leaks it, and nobody else knows it is there. No other
    process ever attaches to a singleton's segment, so the name can go at once; the mapping
    stays valid until the process exits, whatever kills it (MPICH's own unlink at finalize
    then finds nothing, silently).
    """
    removed = []
    for path in sorted(segments_of([os.getpid()])):
        if Path(path).name.startswith("mpich_"):
            try:
                os.unlink(path)
            except OSError:
                continue
            removed.append(path)
    return removed


def remove_leftovers(owned: set[str]) -> list[Path]:
    """After local ranks were killed: remove the segments they had mapped (``owned``, seen in
    their /proc maps while they ran) that still exist and that no live process uses. Files
    of anyone else -- another run, another user's MPI job on this node -- are never touched."""
    if not owned:
        return []
    import shutil

    dirs = tuple(name + "/" for name in owned if Path(name).is_dir())
    used = _mapped_anywhere(("/dev/shm/", *dirs))
    removed = []
    for name in sorted(owned):
        path = Path(name)
        if name in used or not path.exists():
            continue
        if name + "/" in dirs:
            if any(u.startswith(name + "/") for u in used):
                continue
            shutil.rmtree(path, ignore_errors=True)
            if path.exists():
                continue
        else:
            try:
                path.unlink()
            except OSError:
                continue
        removed.append(path)
    return removed
