"""Correcting a run after the fact: invalidate indices, extend the index list.

Both are durable, explicit records, never silent edits of what ranks wrote (journals stay
append-only, one writer each):

- :func:`invalidate` writes ``D/invalidations/NNNN.json`` naming every commit record that
  holds one of the indices (``(attempt, rank, seq)``). Those records then count for nothing
  (:func:`hpc_curator.journal.dropped_records`): all their indices are pending again and their
  stateful segments are left out of every later merge, so the counts stay exact. A commit
  record is the unit because one stateful segment holds the state of its whole batch; the
  other indices of those batches re-run too (the call says how many).
- :func:`extend` appends indices to the frozen list as a new revision in ``run.json``
  (``revisions``: when, what, how many before); the index file of each revision is new, and
  ``run.json`` switches to it atomically.

Neither runs while an attempt is alive. The manifest is rewritten at once, so it never claims
a completeness the run no longer has.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from hpc_curator import fold, journal, partition, rundir
from hpc_curator.atomic import atomic_write, create_exclusive
from hpc_curator.errors import UsageError


def invalidate(rd: rundir.RunDir, indices: np.ndarray) -> np.ndarray:
    """Make ``indices`` pending again; return every index that now is (sorted).

    Raises
    ------
    UsageError
        An index is not in the run.
    RunBusyError
        An attempt is running.
    """
    rundir.check_not_busy(rd)
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
    """Append ``added`` to the run's frozen index list (a new revision in ``run.json``).

    Raises
    ------
    UsageError
        An index is out of the source's range or already in the run.
    """
    rundir.check_not_busy(rd)
    info = rundir.load(rd)
    added = partition.check_indices(np.asarray(added, dtype=np.int64), source_length)
    again = added[np.isin(added, info.indices)]
    if len(again):
        raise UsageError(
            f"index {int(again[0])} is in the run already", "extend adds new indices only"
        )
    meta: dict[str, Any] = dict(info.meta)
    revisions = list(meta.get("revisions", []))
    number = len(revisions) + 2  # revision 1 is the run as created
    new = np.concatenate([info.indices, added])
    entry = rundir.write_index_list(rd, new, rd.path / f"indices-r{number:04d}.npy")
    revisions.append(
        {
            "revision": number,
            "time": rundir.now_iso(),
            "added": partition.to_ranges(added),
            "count_before": info.n,
            "count": len(new),
            "argv": sys.argv,
        }
    )
    meta["indices"] = {**entry, "count": len(new)}
    meta["indices_hash"] = rundir.hash_indices(new)
    meta["revisions"] = revisions
    atomic_write(rd.run_json, json.dumps(meta, indent=2, default=repr))
    _rewrite_manifest(rd)
    return rundir.load(rd)


def _rewrite_manifest(rd: rundir.RunDir) -> None:
    if not rd.manifest_json.exists():
        return
    folded = fold.fold(rd)
    attempts = rundir.list_attempts(rd)
    doc = fold.summarize(rd, folded)
    fold.write(rd, folded, doc, attempts[-1]["attempt"] if attempts else 0)
