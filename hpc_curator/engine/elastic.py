"""Elastic runs: independent tasks (a Slurm job array, or local processes) claim work.

No MPI and no collectives: every task is a world of one that claims *chunks* of the
attempt's pending indices through the run directory, so a task that starts late still gets
work, an early one takes more, and a dead one costs only its unfinished chunk.

``D/claims/aNNNN/`` holds, for attempt ``NNNN``:

- ``plan.pkl`` -- the attempt's plan (written by whoever began the attempt: ``submit``
  on the login node, or the parent of ``run --elastic``), and ``chunks.npy``: chunk ``c`` is
  ``plan.pending[chunks[c]:chunks[c + 1]]`` (whole index groups, never split);
- ``cCCCCCC.g0`` -- the claim of chunk ``c``, created exclusively (temporary file + ``link``:
  safe on Lustre, GPFS and NFS; no locks, no database), naming the task; ``cCCCCCC.gK`` is the
  K-th reclaim of a chunk whose claimer died: its process is gone from this host, or its
  heartbeat is late (older than :data:`SUSPECT_BEATS` beats) and Slurm says its job is no
  longer running (one ``squeue`` per suspect job, at most every :data:`SUSPECT_RECHECK_S`),
  or its heartbeat is older than ``HPC_CURATOR_CLAIM_STALE_S`` (default 300 s: a node that
  died while Slurm still lists its job);
- ``cCCCCCC.done`` -- the chunk is committed (its claimer commits at every chunk end);
- ``task-RRRRR.alive`` -- a task's heartbeat (touched every ``HPC_CURATOR_HEARTBEAT_S``,
  default 10 s);
- ``finisher`` -- created exclusively by the task that merges and writes the manifest: the
  first to see every chunk done.

A task with nothing left to claim stays while a claim of another task is suspect (its
heartbeat late), so that the claim of a task that died mid-chunk is reclaimed by a live task
rather than left to ``resume``. A reclaimer waits ``RECLAIM_GRACE_S`` after winning a
reclaim, then runs only the chunk's indices no journal has committed; a claimer checks,
before every commit, that its chunk was not reclaimed meanwhile, and drops the batch if it
was: an index is never committed twice.
Each task journals as rank ``task + n_tasks * restart`` (a requeued task gets a new journal).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hpc_curator.engine import beats
from hpc_curator.engine.values import Plan
from hpc_curator.model import partition
from hpc_curator.runtime.world import hostname
from hpc_curator.slurm.env import slurm_env
from hpc_curator.store import journal, rundir
from hpc_curator.store.atomic import atomic_path, create_exclusive

STALE_ENV = "HPC_CURATOR_CLAIM_STALE_S"
DEFAULT_STALE_S = 300.0
HEARTBEAT_ENV = beats.ENV
HEARTBEAT_S = beats.DEFAULT_S
heartbeat = beats.heartbeat
heartbeat_interval = beats.interval
#: a heartbeat older than this many beats makes its claims suspect (Slurm is asked)
SUSPECT_BEATS = 3.0
SUSPECT_RECHECK_S = 30.0
RECLAIM_GRACE_S = 2.0
#: claim files per run the default chunk size aims at (the "low thousands")
TARGET_CHUNKS = 2000
#: chunks per task the default never goes below (with more tasks than TARGET_CHUNKS / 4, a
#: cap on the count alone would leave tasks without work: benchmarks/SCALE.md)
MIN_CHUNKS_PER_TASK = 4


def default_chunk_size(n_pending: int, n_tasks: int) -> int:
    """About 16 chunks per task, at most :data:`TARGET_CHUNKS` chunks in all unless that
    gives a task fewer than :data:`MIN_CHUNKS_PER_TASK`."""
    n_tasks = max(1, n_tasks)
    chunks = min(16 * n_tasks, max(TARGET_CHUNKS, MIN_CHUNKS_PER_TASK * n_tasks))
    return max(1, n_pending // chunks)  # rounded down: at least ``chunks`` chunks


def slurm_job_gone(job_id: str) -> bool:
    """Whether Slurm says job ``job_id`` runs no process any more (False when unsure)."""
    from hpc_curator.slurm import status

    row, not_queued = status.squeue_row(job_id)
    if row is None:
        return not_queued
    return row["state"] not in ("RUNNING", "SUSPENDED", "CONFIGURING", "SIGNALING")


class Board:
    """The claim directory of one elastic attempt.

    Parameters
    ----------
    rd, attempt
        The run directory and the attempt whose board this is.
    job_gone
        Asked, for a claim whose heartbeat is late, whether the claimer's Slurm job has
        ended (default: :func:`slurm_job_gone`, through ``squeue``).
    """

    def __init__(
        self,
        rd: rundir.RunDir,
        attempt: int,
        job_gone: Callable[[str], bool] = slurm_job_gone,
    ) -> None:
        self.rd = rd
        self.attempt = attempt
        self.paths = rd.board(attempt)
        self.dir = self.paths.dir
        self._job_gone = job_gone
        self._asked: dict[str, tuple[float, bool]] = {}
        self._cursor = 0  # chunks below it are known to be claimed

    # -- set-up (the process that began the attempt) ----------------------------------
    def publish(self, plan: Plan, n_tasks: int) -> int:
        """Write the plan and the chunk bounds; return the number of chunks."""
        self.dir.mkdir(parents=True, exist_ok=True)
        size = plan.settings.chunk_size or default_chunk_size(len(plan.pending), n_tasks)
        bounds = partition.dynamic_bounds(
            len(plan.pending), n_tasks, size, taper=False, units=plan.unit_bounds
        )
        with atomic_path(self.paths.chunks) as tmp, open(tmp, "wb") as fh:
            np.save(fh, bounds.astype(np.int64))
        with atomic_path(self.paths.plan) as tmp:
            tmp.write_bytes(pickle.dumps({"plan": plan, "tasks": n_tasks}))
        return len(bounds) - 1

    def load(self) -> tuple[Plan, np.ndarray, int]:
        """``(plan, chunk bounds, tasks)`` as published."""
        doc = pickle.loads((self.paths.plan).read_bytes())
        return doc["plan"], np.load(self.paths.chunks), int(doc["tasks"])

    # -- claims ------------------------------------------------------------------------
    def _listing(self) -> tuple[dict[int, list[str]], set[int]]:
        """Chunk -> its claim file names, and the chunks done, from one directory listing."""
        claims: dict[int, list[str]] = {}
        done: set[int] = set()
        if self.gone():
            return claims, done
        for name in os.listdir(self.dir):
            kind, chunk, _ = self.paths.parse(name)
            if kind == "claim":
                claims.setdefault(chunk, []).append(name)
            elif kind == "done":
                done.add(chunk)
        return claims, done

    def done(self, chunk: int) -> None:
        """Mark ``chunk`` committed (nothing once the board is gone: never recreated)."""
        if self.gone():
            return
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile: never recreated
            create_exclusive(
                self.paths.done(chunk), str(time.time()), durable=False, make_parent=False
            )

    def done_chunks(self) -> set[int]:
        """Chunks marked committed."""
        return self._listing()[1]

    def claim(self, task: int, n_chunks: int, n_tasks: int = 0) -> tuple[int, int] | None:
        """Claim the lowest unclaimed chunk, else reclaim a dead one: ``(chunk, generation)``.

        ``task`` is the claimer's rank (``array task + n_tasks * restart``): a claim of an
        earlier incarnation of the same array task (requeued) is dead at once. ``None``:
        nothing to take now (see :meth:`suspects` for whether to wait and ask again).
        """
        claims: dict[int, list[str]] | None = None
        for c in range(self._cursor, n_chunks):  # a task alone claims with one link() each
            if claims is not None and c in claims:
                continue
            if self._take(c, 0, task):
                self._cursor = c + 1
                return c, 0
            if claims is None:  # taken by another task: list once, skip what is taken
                claims = self._listing()[0]
        self._cursor = n_chunks
        claims, finished = self._listing()
        for c, latest, generation in self._open(claims, finished):
            if self._dead(latest, task, n_tasks) and self._take(c, generation + 1, task):
                time.sleep(RECLAIM_GRACE_S)  # a commit the dead claimer had begun lands first
                return c, generation + 1
        return None

    def suspects(self) -> int:
        """How many undone chunks are held by a task whose heartbeat is late."""
        claims, finished = self._listing()
        late = SUSPECT_BEATS * heartbeat_interval()
        count = 0
        for _, name, _ in self._open(claims, finished):
            doc = self._doc(name) or {}
            if _here(doc) and _pid_alive(doc.get("pid")):
                continue  # alive on this host, however late its beat
            count += self._beat_age(doc) > late
        return count

    @staticmethod
    def _open(claims: dict[int, list[str]], finished: set[int]) -> Iterator[tuple[int, str, int]]:
        """``(chunk, latest claim name, its generation)`` of every claimed, undone chunk."""
        for c, names in sorted(claims.items()):
            if c not in finished:
                latest = max(names, key=lambda n: rundir.BoardPaths.parse(n)[2])
                yield c, latest, rundir.BoardPaths.parse(latest)[2]

    def gone(self) -> bool:
        """Whether the claim board was removed (or replaced by a link) while tasks ran: it is
        never recreated, since a new board would hand out committed chunks again."""
        try:
            return not stat.S_ISDIR(os.lstat(self.dir).st_mode)
        except FileNotFoundError:
            return True

    def _take(self, chunk: int, generation: int, task: int) -> bool:
        if self.gone():
            return False
        doc = {
            "task": task,
            "host": hostname(),
            "pid": os.getpid(),
            "time": time.time(),
            "slurm_job": slurm_env().job_id,
        }
        name = self.paths.claim(chunk, generation)
        try:
            return create_exclusive(name, json.dumps(doc), durable=False, make_parent=False)
        except FileNotFoundError:  # the board was removed meanwhile: never recreated
            return False

    def still_mine(self, chunk: int, generation: int) -> bool:
        """Whether nobody reclaimed ``chunk`` since this task claimed it."""
        return not self.paths.claim(chunk, generation + 1).exists()

    def _doc(self, claim_name: str) -> dict[str, Any] | None:
        """The claim's record; ``{"time": mtime}`` if unreadable (written without fsync, it
        can be empty after a crash of the machine: it then ages out like a stale claim)."""
        path = self.dir / claim_name
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            with contextlib.suppress(OSError):
                return {"time": path.stat().st_mtime}
            return None
        except OSError:
            return None
        return doc if isinstance(doc, dict) else {"time": path.stat().st_mtime}

    def _beat_age(self, doc: dict[str, Any]) -> float:
        """Seconds since the claimer of claim ``doc`` last beat (the claim's age if never)."""
        try:
            return time.time() - self.heartbeat_path(int(doc.get("task", -1))).stat().st_mtime
        except FileNotFoundError:
            return time.time() - float(doc.get("time", 0))

    def _dead(self, claim_name: str, me: int, n_tasks: int) -> bool:
        doc = self._doc(claim_name)
        if doc is None:
            return False
        if _here(doc) and not _pid_alive(doc.get("pid")):
            return True
        owner = doc.get("task")
        if isinstance(owner, int) and n_tasks and owner != me and owner % n_tasks == me % n_tasks:
            return owner < me  # this very array task before its requeue
        age = self._beat_age(doc)
        if age > float(os.environ.get(STALE_ENV, DEFAULT_STALE_S)):
            return True
        job = doc.get("slurm_job")
        late = age > SUSPECT_BEATS * heartbeat_interval()
        return isinstance(job, str) and bool(job) and late and self._gone(job)

    def _gone(self, job: str) -> bool:
        """:func:`slurm_job_gone`, asked at most every :data:`SUSPECT_RECHECK_S` per job."""
        when, answer = self._asked.get(job, (-SUSPECT_RECHECK_S, False))
        if not answer and time.monotonic() - when >= SUSPECT_RECHECK_S:  # gone stays gone
            answer = self._job_gone(job)
            self._asked[job] = (time.monotonic(), answer)
        return answer

    def heartbeat_path(self, task: int) -> Path:
        """A task's heartbeat file."""
        return self.paths.heartbeat(task)

    def try_finish(self, task: int) -> bool:
        """Whether this task is the one to merge and write the manifest (``task`` -1: the
        launcher, once every task left; it alone ends an attempt whose board was removed)."""
        if self.gone():
            return task == -1
        try:
            return create_exclusive(
                self.paths.finisher, json.dumps({"task": task}), make_parent=False
            )
        except FileNotFoundError:  # removed meanwhile
            return task == -1


def _here(doc: dict[str, Any]) -> bool:
    """Whether claim ``doc`` was taken on this host (its pid can be checked here)."""
    return doc.get("host") == hostname()


def _pid_alive(pid: Any) -> bool:
    """Whether process ``pid`` of this host is running (a zombie is not: it died)."""
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, ValueError, TypeError, IndexError):
        return False


def committed_in(rd: rundir.RunDir, indices: np.ndarray) -> np.ndarray:
    """Which of ``indices`` some journal already records (before running a reclaimed chunk)."""
    scan = journal.scan(rd, with_outputs=False)
    return partition.sorted_unique(scan.idx[np.isin(scan.idx, indices)])
