"""Shard segment naming and atomic writing.

A *segment* is the delta of one stateful filter's state between two commits of one rank::

    shards/<filter>/<filter>.rank<RRRRR>.a<AAAA>-w<TOKEN>-<SSSSSS><suffix>

``RRRRR`` is the global rank (or worker slot — never a PID), ``AAAA`` the attempt number,
``TOKEN`` the writing process's token (:func:`hpc_curator.store.rundir.writer_token`) and ``SSSSSS``
the commit sequence within that writer's journal, so names never collide across ranks, nodes,
attempts, world sizes or two processes that both think they are the same rank (a requeue
race), and a segment is never rewritten. A segment counts only when a
journal commit record names it; files that no record names (a crash between writing the segment
and committing it) are orphans and are ignored by merges.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpc_curator.store.atomic import atomic_path


def segment_name(
    filter_name: str, rank: int, attempt: int, seq: int, suffix: str = ".h5", writer: str = ""
) -> str:
    """Return the file name of a segment (``writer``: the writing process's token)."""
    token = f"w{writer}-" if writer else ""
    return f"{filter_name}.rank{rank:05d}.a{attempt:04d}-{token}{seq:06d}{suffix}"


def write_segment(
    filt: Any, directory: Path, rank: int, attempt: int, seq: int, writer: str = ""
) -> str | None:
    """Flush ``filt``'s delta to a new segment atomically; return its name (None if no delta)."""
    if not filt.has_delta:
        return None
    name = segment_name(filt.name, rank, attempt, seq, filt.suffix, writer)
    with atomic_path(directory / name) as tmp:
        filt.flush(str(tmp))
    return name
