"""Heartbeats of elastic tasks: how an attempt's liveness is judged without its launcher.

Each elastic task (an array task, or a process of ``run --elastic``) touches
``D/claims/aNNNN/task-RRRRR.alive`` every :func:`interval` seconds while it runs; the file
holds the task's host and pid. An attempt with a task whose heartbeat is fresh (younger than
:data:`LIVE_BEATS` beats) is alive, whatever became of the process that launched it: a
launcher killed with ``kill -9`` leaves its tasks working, and a relaunch must not run beside
them (:func:`hpc_curator.store.attempt_records.attempt_alive`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpc_curator.store.rundir import BoardPaths

ENV = "HPC_CURATOR_HEARTBEAT_S"
DEFAULT_S = 10.0
#: a heartbeat younger than this many beats is a live task
LIVE_BEATS = 3.0


def interval() -> float:
    """Seconds between heartbeats (``HPC_CURATOR_HEARTBEAT_S``, default 10)."""
    return float(os.environ.get(ENV, DEFAULT_S))


@contextlib.contextmanager
def heartbeat(path: Path) -> Iterator[None]:
    """Keep ``path`` fresh (rewritten every :func:`interval` seconds) while inside.

    The file names this process (host, pid) so a relaunch can say who is still working, and
    is replaced by rename, never written through a planted symlink.
    """
    stop = threading.Event()
    every = interval()
    doc = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}")

    def touch() -> None:
        with contextlib.suppress(OSError):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            try:
                os.write(fd, doc)
            finally:
                os.close(fd)
            os.replace(tmp, path)

    def beat() -> None:
        while not stop.wait(every):
            touch()

    touch()
    thread = threading.Thread(target=beat, name="hpc-curator-task-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(OSError):  # gone at once: a relaunch need not wait 3 beats
            os.unlink(path)


def live_tasks(board: BoardPaths, now: float | None = None) -> list[dict[str, Any]]:
    """Tasks of a claim board whose heartbeat is fresh: ``{"task", "age", "host", "pid"}``
    each (``[]`` when the board is gone)."""
    try:
        names = sorted(os.listdir(board.dir))
    except OSError:
        return []
    now = time.time() if now is None else now
    fresh = LIVE_BEATS * interval()
    out = []
    for name in names:
        kind, task, _ = board.parse(name)
        if kind != "task":
            continue
        path = board.heartbeat(task)
        try:
            age = now - os.lstat(path).st_mtime
            doc = json.loads(path.read_bytes() or b"{}") if age < fresh else None
        except (OSError, ValueError):
            continue
        if doc is None:
            continue
        out.append({"task": task, "age": age, **(doc if isinstance(doc, dict) else {})})
    return out
