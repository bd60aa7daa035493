"""Peak RSS of a whole process tree, sampled from ``/proc`` while a timed command runs.

``wait4`` gives the peak RSS of the tree's *largest* process; a launcher's cost on a node is
what all of its processes hold at once (parent, ``mpiexec``, its proxy, every rank or pool
worker). :class:`TreeSampler` walks the tree below a pid every ``interval`` seconds (children
from ``/proc/<pid>/task/<tid>/children``, every thread's, since pools start workers from
helper threads) and sums their resident pages (``/proc/<pid>/statm``); the peak of those sums
is the figure. Shared pages (the same ``libarrow`` mapped by two ranks) count in each process,
as ``ps`` and ``top`` count them. A tree that lives less than one interval is sampled once
(right after start): its figure is a lower bound.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_pids(root: int) -> list[int]:
    """``root`` and every live descendant (empty when ``root`` is gone)."""
    out: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        out.append(pid)
        for tid in tasks:
            try:
                text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            except OSError:
                continue
            todo.extend(int(c) for c in text.split())
    return out


def tree_rss(root: int) -> int:
    """Bytes resident in ``root``'s tree now (sum over its processes)."""
    total = 0
    for pid in tree_pids(root):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue  # exited between the walk and the read
    return total


def supported() -> bool:
    """Whether this kernel lists children in ``/proc`` (``CONFIG_PROC_CHILDREN``)."""
    return Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists()


class TreeSampler:
    """Sample :func:`tree_rss` of ``root`` in a thread until :meth:`stop`; keep the peak."""

    def __init__(self, root: int, interval: float = 0.02) -> None:
        self.root = root
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            rss = tree_rss(self.root)
            self.samples += 1
            self.peak = max(self.peak, rss)
            if self._done.wait(self.interval):
                return

    def stop(self) -> float:
        """Stop sampling; the peak tree RSS in MiB."""
        self._done.set()
        self._thread.join()
        return self.peak / 2**20
