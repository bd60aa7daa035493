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
  K-th reclaim of a chunk whose claimer died (its heartbeat is older than
  ``HPC_CURATOR_CLAIM_STALE_S``, default 300 s, or its process is gone from this host);
- ``cCCCCCC.done`` -- the chunk is committed (its claimer commits at every chunk end);
- ``task-RRRRR.alive`` -- a task's heartbeat (touched every 10 s);
- ``finisher`` -- created exclusively by the task that merges and writes the manifest: the
  first to see every chunk done.

A reclaimer waits ``RECLAIM_GRACE_S`` after winning a reclaim, then runs only the chunk's
indices no journal has committed; a claimer checks, before every commit, that its chunk was
not reclaimed meanwhile, and drops the batch if it was: an index is never committed twice.
Each task journals as rank ``task + n_tasks * restart`` (a requeued task gets a new journal).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hpc_curator import groups, journal, partition, rundir
from hpc_curator.atomic import atomic_path, create_exclusive
from hpc_curator.values import Plan

STALE_ENV = "HPC_CURATOR_CLAIM_STALE_S"
DEFAULT_STALE_S = 300.0
HEARTBEAT_S = 10.0
RECLAIM_GRACE_S = 2.0
#: claim files per run the default chunk size aims at (the "low thousands")
TARGET_CHUNKS = 2000


def default_chunk_size(n_pending: int, n_tasks: int) -> int:
    """About 16 chunks per task, at most :data:`TARGET_CHUNKS` chunks in all."""
    chunks = min(TARGET_CHUNKS, max(1, 16 * n_tasks))
    return max(1, -(-n_pending // chunks))


class Board:
    """The claim directory of one elastic attempt."""

    def __init__(self, rd: rundir.RunDir, attempt: int) -> None:
        self.rd = rd
        self.attempt = attempt
        self.dir = rd.path / "claims" / f"a{attempt:04d}"

    # -- set-up (the process that began the attempt) ----------------------------------
    def publish(self, plan: Plan, n_tasks: int) -> int:
        """Write the plan and the chunk bounds; return the number of chunks."""
        self.dir.mkdir(parents=True, exist_ok=True)
        size = plan.settings.chunk_size or default_chunk_size(len(plan.pending), n_tasks)
        if plan.unit_bounds is not None:
            bounds = groups.chunk_bounds(plan.unit_bounds, size)
        else:
            bounds = np.unique(np.append(np.arange(0, len(plan.pending), size), len(plan.pending)))
        with atomic_path(self.dir / "chunks.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, bounds.astype(np.int64))
        with atomic_path(self.dir / "plan.pkl") as tmp:
            tmp.write_bytes(pickle.dumps({"plan": plan, "tasks": n_tasks}))
        return len(bounds) - 1

    def load(self) -> tuple[Plan, np.ndarray, int]:
        """``(plan, chunk bounds, tasks)`` as published."""
        doc = pickle.loads((self.dir / "plan.pkl").read_bytes())
        return doc["plan"], np.load(self.dir / "chunks.npy"), int(doc["tasks"])

    # -- claims ------------------------------------------------------------------------
    def _claims(self) -> dict[int, list[str]]:
        """Chunk -> its claim file names, from one directory listing."""
        out: dict[int, list[str]] = {}
        for name in os.listdir(self.dir):
            if name.startswith("c") and ".g" in name:
                out.setdefault(int(name[1:8]), []).append(name)
        return out

    def done(self, chunk: int) -> None:
        """Mark ``chunk`` committed."""
        create_exclusive(self.dir / f"c{chunk:07d}.done", str(time.time()))

    def done_chunks(self) -> set[int]:
        """Chunks marked committed."""
        return {int(n[1:8]) for n in os.listdir(self.dir) if n.endswith(".done")}

    def claim(self, task: int, n_chunks: int, n_tasks: int = 0) -> tuple[int, int] | None:
        """Claim the lowest unclaimed chunk, else reclaim a dead one: ``(chunk, generation)``.

        ``task`` is the claimer's rank (``array task + n_tasks * restart``): a claim of an
        earlier incarnation of the same array task (requeued) is dead at once.
        """
        self._me = (task, n_tasks)
        claims = self._claims()
        for c in range(n_chunks):
            if c not in claims and self._take(c, 0, task):
                return c, 0
        finished = self.done_chunks()
        for c, names in sorted(claims.items()):
            if c in finished:
                continue
            latest = max(names, key=lambda n: int(n.split(".g")[1]))
            generation = int(latest.split(".g")[1])
            if self._dead(latest) and self._take(c, generation + 1, task):
                time.sleep(RECLAIM_GRACE_S)  # a commit the dead claimer had begun lands first
                return c, generation + 1
        return None

    def _take(self, chunk: int, generation: int, task: int) -> bool:
        doc = {"task": task, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        return create_exclusive(self.dir / f"c{chunk:07d}.g{generation}", json.dumps(doc))

    def still_mine(self, chunk: int, generation: int) -> bool:
        """Whether nobody reclaimed ``chunk`` since this task claimed it."""
        return not (self.dir / f"c{chunk:07d}.g{generation + 1}").exists()

    def _dead(self, claim_name: str) -> bool:
        try:
            doc = json.loads((self.dir / claim_name).read_text())
        except (OSError, ValueError):
            return False
        if doc.get("host") == socket.gethostname() and not _pid_alive(doc.get("pid")):
            return True
        me, n_tasks = getattr(self, "_me", (None, 0))
        owner = int(doc.get("task", -1))
        if me is not None and n_tasks and owner != me and owner % n_tasks == me % n_tasks:
            return owner < me  # this very array task before its requeue
        beat = self.heartbeat_path(int(doc.get("task", -1)))
        stale = float(os.environ.get(STALE_ENV, DEFAULT_STALE_S))
        try:
            return time.time() - beat.stat().st_mtime > stale
        except FileNotFoundError:
            return time.time() - float(doc.get("time", 0)) > stale

    def heartbeat_path(self, task: int) -> Path:
        """A task's heartbeat file."""
        return self.dir / f"task-{task:05d}.alive"

    def try_finish(self, task: int) -> bool:
        """Whether this task is the one to merge and write the manifest."""
        return create_exclusive(self.dir / "finisher", json.dumps({"task": task}))


def _pid_alive(pid: Any) -> bool:
    """Whether process ``pid`` of this host is running (a zombie is not: it died)."""
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, ValueError, TypeError, IndexError):
        return False


@contextlib.contextmanager
def heartbeat(path: Path) -> Iterator[None]:
    """Touch ``path`` every :data:`HEARTBEAT_S` seconds while inside."""
    stop = threading.Event()
    path.touch()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                path.touch()

    thread = threading.Thread(target=beat, name="hpc-curator-claim-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def committed_in(rd: rundir.RunDir, indices: np.ndarray) -> np.ndarray:
    """Which of ``indices`` some journal already records (before running a reclaimed chunk)."""
    scan = journal.scan(rd, with_outputs=False)
    return partition.sorted_unique(scan.idx[np.isin(scan.idx, indices)])
