"""Checksums of files the run keeps: shard segments (recorded at commit) and merged outputs.

A segment's size and SHA-256 go into the commit record that names it; every merge checks them,
so a segment edited, truncated or replaced after its commit is an error naming the file, never
merged silently. ``hpc-curate verify`` checks every recorded checksum without merging.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hpc_curator.errors import ShardError


def _tree(path: Path) -> list[Path]:
    """Every file below directory ``path``, in a fixed order (relative path, byte-wise)."""
    return sorted(
        (p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix()
    )


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, streamed; of a directory (a Zarr store), of its whole tree.

    A tree's digest covers each file's relative path and content, so a renamed, added,
    removed or edited chunk changes it.
    """
    import hashlib

    root = Path(path)
    if root.is_dir():
        h = hashlib.sha256(b"hpc-curator tree v1\0")
        for f in _tree(root):
            h.update(f.relative_to(root).as_posix().encode() + b"\0")
            h.update(file_digest(f).encode() + b"\0")
        return h.hexdigest()
    h = hashlib.sha256()
    with open(root, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def size_of(path: str | os.PathLike[str]) -> int:
    """Bytes of a file, or of every file below a directory."""

    root = Path(path)
    if root.is_dir():
        return sum(f.stat().st_size for f in _tree(root))
    return root.stat().st_size


def size_and_digest(path: str | os.PathLike[str]) -> list[Any]:
    """``[bytes, sha256]`` of a file or directory, as commit records store it."""
    return [size_of(path), file_digest(path)]


def mismatch(path: Path, recorded: list[Any], when: str = "when it was committed") -> str | None:
    """Why ``path`` does not match its recorded ``[bytes, sha256]`` (``None``: it matches)."""
    try:
        size = size_of(path)
    except FileNotFoundError:
        return "is missing"
    if size != recorded[0]:
        return f"has {size} bytes, {recorded[0]} were recorded {when}"
    if file_digest(path) != recorded[1]:
        return f"does not match the checksum recorded {when}"
    return None


def verify_segment(path: Path, recorded: list[Any] | None) -> None:
    """Raise :class:`ShardError` naming ``path`` when it differs from what was committed."""
    if recorded is None:
        return  # committed by a version that recorded no checksums
    problem = mismatch(path, recorded)
    if problem is not None:
        raise ShardError(
            f"shard segment {path} {problem}",
            "it was modified after its commit: restore it, or start a new run dir",
        )


def segment_set(names: list[str]) -> str:
    """A digest of a set of segment names: which commits a merged output holds (a count
    alone would not see one accepted commit replaced by another)."""
    import hashlib

    return hashlib.blake2b("\n".join(sorted(names)).encode(), digest_size=16).hexdigest()
