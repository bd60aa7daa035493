"""Correcting a run after the fact: invalidate indices, extend the index list.

Both are durable, explicit records, never silent edits of what ranks wrote (journals stay
append-only, one writer each):

- :func:`invalidate` writes ``D/invalidations/NNNN.json`` naming every commit record that
  holds one of the indices (``(attempt, rank, seq)``). Those records then count for nothing
  (:func:`hpc_curator.store.journal.dropped_records`): all their indices are pending again and their
  stateful segments are left out of every later merge, so the counts stay exact. A commit
  record is the unit because one stateful segment holds the state of its whole batch; the
  other indices of those batches re-run too (the call says how many).
- :func:`extend` appends indices to the frozen list as a new revision record
  ``D/revisions/NNNN.json`` (created exclusively: when, what, the revision it was computed
  against); ``run.json`` is never rewritten, :func:`hpc_curator.store.rundir.load` folds the records
  in. Two concurrent calls both land (the second adds what the first did not).

Neither runs while an attempt is alive. The manifest is rewritten at once, so it never claims
a completeness the run no longer has.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from hpc_curator.errors import UsageError
from hpc_curator.model import partition
from hpc_curator.store import attempt_records, fold, journal, revisions, rundir
from hpc_curator.store.atomic import create_exclusive, remove
from hpc_curator.store.nofollow import ensure_dir


def invalidate(rd: rundir.RunDir, indices: np.ndarray) -> np.ndarray:
    """Make ``indices`` pending again; return every index that now is (sorted).

    Raises
    ------
    UsageError
        An index is not in the run.
    RunBusyError
        An attempt is running.
    """
    attempt_records.check_not_busy(rd)
    info = rundir.load(rd)
    want = np.asarray(indices, dtype=np.int64)
    outside = want[~np.isin(want, info.indices)]
    if len(outside):
        raise UsageError(f"index {int(outside[0])} is not one of the run's indices")
    wanted = set(want.tolist())
    drops = journal.dropped_records(rd)
    records: list[list[Any]] = []
    again: set[int] = set()
    for path in rd.journal_files():
        recs, _ = journal.read_records(path, with_outputs=False)
        for rec in recs:
            if rec.get("t") != "commit" or (path.name, rec.get("seq")) in drops:
                continue
            if wanted.intersection(rec.get("idx", ())):
                records.append([path.name, int(rec["seq"])])
                again.update(int(i) for i in rec["idx"])
    if records:
        doc = {
            "time": rundir.now_iso(),
            "indices": partition.to_ranges(np.sort(want)),
            "records": records,
            "pending_again": len(again),
            "argv": sys.argv,
        }
        folder = rd.invalidations_dir
        number = len(list(folder.glob("*.json"))) + 1 if folder.is_dir() else 1
        while not create_exclusive(folder / f"{number:04d}.json", json.dumps(doc)):
            number += 1
        _rewrite_manifest(rd)
    return np.asarray(sorted(again), dtype=np.int64)


def extend(rd: rundir.RunDir, added: np.ndarray, source_length: int) -> rundir.RunInfo:
    """Append ``added`` to the run's frozen index list as a new revision record.

    The record ``D/revisions/NNNN.json`` is created exclusively (``O_EXCL`` semantics, see
    :func:`~hpc_curator.store.atomic.create_exclusive`) and names the revision it was computed
    against; ``run.json`` is never rewritten (:func:`hpc_curator.store.rundir.load` folds the
    records in). When another ``extend`` took the number first, the list is read again and
    what it does not hold yet is recorded under the next number: two concurrent calls both
    land, and an index both add is added once.

    Parameters
    ----------
    rd
        The run directory.
    added
        The indices to append (new ones only).
    source_length
        Number of items in the pipeline's source (valid indices are below it).

    Returns
    -------
    rundir.RunInfo
        The run with the extended list.

    Raises
    ------
    UsageError
        An index is out of the source's range or already in the run.
    RunBusyError
        An attempt is running.
    RunDirError
        A subdirectory of the run dir is a symbolic link.
    """
    rundir.check_layout(rd)
    attempt_records.check_not_busy(rd)
    info = rundir.load(rd)
    added = partition.check_indices(np.asarray(added, dtype=np.int64), source_length)
    again = added[np.isin(added, info.indices)]
    if len(again):
        raise UsageError(
            f"index {int(again[0])} is in the run already", "extend adds new indices only"
        )
    folder = ensure_dir(revisions.revisions_dir(rd), rd.path)
    while not _record_revision(rd, folder, info, added):
        info = rundir.load(rd)  # another extend took the number: add what it did not
        added = added[~np.isin(added, info.indices)]
        if not len(added):
            break
    _rewrite_manifest(rd)
    return rundir.load(rd)


def _record_revision(
    rd: rundir.RunDir, folder: Path, info: rundir.RunInfo, added: np.ndarray
) -> bool:
    """Create the revision record after ``info``'s last one; ``False`` if it exists."""
    number = len(info.meta.get("revisions", [])) + 2  # revision 1 is the run as created
    npy = folder / f"added-{number:04d}-{os.urandom(6).hex()}.npy"  # unique: never shared
    doc = {
        "format": revisions.REVISION_FORMAT,
        "revision": number,
        "base": number - 1,
        "base_count": info.n,
        "base_hash": info.meta["indices_hash"],
        "added": rundir.write_index_list(rd, added, npy),
        "time": rundir.now_iso(),
        "argv": sys.argv,
    }
    if create_exclusive(folder / f"{number:04d}.json", json.dumps(doc)):
        return True
    remove(npy)  # written for a record that lost the race (if the list needed a file)
    return False


def _rewrite_manifest(rd: rundir.RunDir) -> None:
    if not rd.manifest_json.exists():
        return
    folded = fold.fold(rd)
    attempts = attempt_records.list_attempts(rd)
    doc = fold.summarize(rd, folded)
    fold.write(rd, folded, doc, attempts[-1]["attempt"] if attempts else 0)
