"""Index lists in a run directory: how ``run.json`` and revision records hold them, and the
append-only revisions ``extend`` writes.

``run.json`` holds the index list as the run was created (inline ranges, or ``D/indices.npy``).
Every ``hpc-curate extend`` adds a record ``D/revisions/NNNN.json``, created exclusively and
never rewritten, naming the indices it adds and the list it was computed against; two extends
at once both land or one is refused, never lost. :func:`fold_revisions` reads them in order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpc_curator.errors import RunDirError
from hpc_curator.store.atomic import atomic_path

if TYPE_CHECKING:  # numpy only where index lists are read or written (a light launcher)
    import numpy as np

    from hpc_curator.store.rundir import RunDir

MAX_INLINE_RANGES = 1024


def write_index_list(rd: RunDir, indices: np.ndarray, npy: Path) -> dict[str, Any]:
    """The ``run.json`` (or revision record) entry of an index list: inline ranges, or ``npy``
    (inside the run dir) written first and named relative to the run dir."""
    import numpy as np

    from hpc_curator.model.partition import to_ranges  # (numpy)

    ranges = to_ranges(indices)
    if len(ranges) <= MAX_INLINE_RANGES:
        return {"kind": "ranges", "ranges": ranges}
    with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(indices, dtype=np.int64))
    return {"kind": "npy", "file": npy.relative_to(rd.path).as_posix()}


def read_index_list(rd: RunDir, entry: dict[str, Any]) -> np.ndarray:
    """The index list a :func:`write_index_list` entry describes."""
    import numpy as np

    from hpc_curator.model.partition import from_ranges

    if entry["kind"] == "ranges":
        return from_ranges(entry["ranges"])
    return np.asarray(np.load(rd.path / entry["file"]), dtype=np.int64)


def hash_indices(indices: np.ndarray) -> str:
    """The identity of an index list (order matters)."""
    import hashlib

    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()


REVISION_FORMAT = "hpc-curator.revision/1"


def revisions_dir(rd: RunDir) -> Path:
    """``D/revisions``: one ``NNNN.json`` per revision of the index list after the first."""
    return Path(rd.revisions_dir)


def revision_records(rd: RunDir) -> list[tuple[int, Path]]:
    """``(revision, path)`` of every revision record, in order."""
    folder = revisions_dir(rd)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        stem = p.name.removesuffix(".json")
        if p.name.endswith(".json") and stem.isdigit() and stem.isascii():
            found.append((int(stem), p))
    return sorted(found)


def fold_revisions(
    rd: RunDir, indices: np.ndarray, meta: dict[str, Any]
) -> tuple[np.ndarray, dict[str, Any]]:
    """``run.json``'s index list and meta with every revision record folded in, in order.

    Revisions recorded inside ``run.json`` (by versions that rewrote it) are already part of
    its list; records are numbered on from them. Each record adds its indices that the list
    does not hold yet and must have been computed against the list before it.

    Raises
    ------
    RunDirError
        A record is unreadable, missing from the sequence, or written against another list.
    """
    records = revision_records(rd)
    if not records:
        return indices, meta
    import numpy as np

    from hpc_curator.store.nofollow import open_read

    revisions = list(meta.get("revisions", []))
    for number, path in records:
        expect = len(revisions) + 2  # revision 1 is the run as created
        if number != expect:
            raise RunDirError(
                f"revision record {path} follows revision {expect - 1}: revision {expect} of "
                "the index list is missing",
                "restore it, or remove the later revision records",
            )
        try:
            with open_read(path) as fh:  # a planted link is refused (ELOOP), not read
                doc = json.loads(fh.read())
            added = read_index_list(rd, doc["added"])
            ok = doc.get("format") == REVISION_FORMAT and doc["base_count"] == len(indices)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunDirError(f"cannot read revision record {path}: {exc}") from exc
        if not ok:
            raise RunDirError(
                f"revision record {path} was not written against revision {expect - 1} "
                f"({doc.get('base_count')} indices, the list has {len(indices)})",
                "restore the run's revision records as they were written",
            )
        fresh = added[~np.isin(added, indices)]
        revisions.append(
            {
                "revision": number,
                "time": doc.get("time"),
                "added": doc["added"].get("ranges", doc["added"].get("file")),
                "count_before": len(indices),
                "count": len(indices) + len(fresh),
                "argv": doc.get("argv"),
                "record": path.relative_to(rd.path).as_posix(),
            }
        )
        indices = np.concatenate([indices, fresh])
    folded = {**meta, "revisions": revisions, "indices_hash": hash_indices(indices)}
    return indices, folded
