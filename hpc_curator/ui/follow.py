"""Incremental reading of a run's journals (progress displays, ``status --watch``, the pool
launchers' ``on_commit``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hpc_curator.store.records import parse_line
from hpc_curator.store.rundir import RunDir

_attempt_rank = RunDir.parse_journal_name
#: A start record is well below this (identity, stage names, shared-memory segments).
_START_BYTES = 1 << 16


class JournalFollower:
    """Read new journal records incrementally (remembers each file's offset).

    Used by progress displays and ``status --watch``: each :meth:`poll` reads only bytes
    appended since the previous poll, so its cost is flat as the run grows. A partial last line
    is left for the next poll.
    """

    def __init__(self, rd: RunDir) -> None:
        self.rd = rd
        self._offsets: dict[Path, int] = {}
        self.last_poll = 0.0

    def skip_existing(self) -> None:
        """Start after what the journals hold now (earlier attempts), without reading it."""
        if not self.rd.journal_dir.is_dir():
            return
        for path in self.rd.journal_files():
            try:
                self._offsets[path] = path.stat().st_size
            except FileNotFoundError:
                continue

    def poll(self, *, starts_only: bool = False) -> list[tuple[tuple[int, int], dict[str, Any]]]:
        """Return ``((attempt, rank), record)`` for every record appended since last poll.

        ``starts_only``: only each journal's first record (its start record); the rest of a
        journal is never read, so a launcher that shows nothing spends no CPU on the commits.
        """
        out: list[tuple[tuple[int, int], dict[str, Any]]] = []
        for path in self.rd.journal_files():
            offset = self._offsets.get(path, 0)
            if starts_only and offset:
                continue
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size <= offset:
                continue
            if starts_only:
                size = min(size, offset + _START_BYTES)
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read(size - offset)
            end = (data.find(b"\n") if starts_only else data.rfind(b"\n")) + 1
            self._offsets[path] = offset + end
            key = _attempt_rank(path)
            for line in data[:end].splitlines(keepends=True):
                rec = parse_line(line)
                if rec is not None:
                    out.append((key, rec))
        self.last_poll = time.time()
        return out
