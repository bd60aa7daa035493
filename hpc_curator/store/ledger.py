"""The acceptance rule: which commit records count, decided from the records alone.

Launchers can be wrong about who is alive: a parent dies and its children go on, a node hangs
for minutes and wakes up, Slurm starts a requeued task while the old one still runs, someone
deletes the claims directory. Fencing (claim generations checked before a commit) shrinks
those windows but cannot close them on a shared filesystem without locks. So what is *done*
is decided here, by a rule no launcher, crash, stall or duplicate can break:

* Every commit record has a place in one deterministic total order, :func:`order_key`:
  newest attempt first, then highest claim generation (``"gen"``; 0 outside elastic runs),
  then rank (or task), then the writer token of its journal, then its sequence number.
  Newest first makes the records stable against late writers: an orphan of an earlier
  attempt or the loser of a reclaim (an older generation) that commits after the legitimate
  writer is rejected, it does not displace what was accepted.
* Walking that order, a commit is *accepted* unless one of its successful indices (``ok``)
  was already accepted from another commit; then it is *rejected whole*: none of its records
  count, its stateful segments are never merged, and its indices not accepted elsewhere are
  pending again, so the next launch runs them.

Failed entries never reject a commit (a retry that succeeds after a failure is the normal
case). Writers cannot collide (every journal, current-index file and segment name carries a
per-process writer token and is created with ``O_EXCL``), so the worst a zombie can do is add
a record this rule rejects.

Cost: a scan sorts the successful indices once to look for any index accepted twice
(:func:`has_conflicts`); only when there is one are the journals read again to decide
(:func:`rejected`), and the scan is repeated with the rejected commits dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc_curator.store.rundir import RunDir


def order_key(name: str, rec: dict[str, Any]) -> tuple[int, int, int, str, int]:
    """A commit record's place in the total order (smaller comes first, wins conflicts)."""
    attempt, rank = RunDir.parse_journal_name(name)
    gen = rec.get("gen", 0)
    return (-attempt, -int(gen), rank, RunDir.journal_writer(name), int(rec["seq"]))


def has_conflicts(idx: np.ndarray, ok: np.ndarray) -> bool:
    """Whether some index has a successful entry in two commit records (the records' ``idx``
    and ``ok`` columns, one entry per index per commit; a commit never names an index twice)."""
    good = idx[ok == 1] if len(ok) else idx[:0]
    if len(good) < 2:
        return False
    ordered = np.sort(good)
    return bool((ordered[1:] == ordered[:-1]).any())


@dataclass
class Verdict:
    """What :func:`rejected` decided: the rejected commits and why."""

    #: ``(journal file name, seq)`` of every rejected commit
    drops: set[tuple[str, int]] = field(default_factory=set)
    #: ``{"file", "line", "seq", "reason"}`` per rejected commit, in the total order
    report: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Commit:
    key: tuple[int, int, int, str, int]
    name: str
    line: int
    good: np.ndarray


def rejected(rd: RunDir, drops: set[tuple[str, int]]) -> Verdict:
    """Read every journal of ``rd`` and apply the acceptance rule.

    ``drops`` are commits that count for nothing already (invalidated). Only commits holding
    a contested index (successful in more than one commit) are walked in order; memory is
    the successful indices of the run (8 bytes each) while they are read.
    """
    commits = list(_commits(rd.journal_files(), drops))
    return decide(commits)


def decide(commits: list[_Commit]) -> Verdict:
    """The acceptance rule over ``commits`` (see the module docstring)."""
    verdict = Verdict()
    if not commits:
        return verdict
    every = np.concatenate([c.good for c in commits])
    values, counts = np.unique(every, return_counts=True)
    contested = values[counts > 1]
    if not len(contested):
        return verdict
    involved = []
    for c in commits:
        mine = c.good[np.isin(c.good, contested)]
        if len(mine):
            involved.append((c, mine))
    involved.sort(key=lambda item: item[0].key)
    owner: dict[int, _Commit] = {}
    for c, mine in involved:
        values_here = mine.tolist()
        clash = next((i for i in values_here if i in owner), None)
        if clash is None:
            owner.update(dict.fromkeys(values_here, c))
            continue
        winner = owner[clash]
        verdict.drops.add((c.name, c.key[-1]))
        verdict.report.append(
            {
                "file": c.name,
                "line": c.line,
                "seq": c.key[-1],
                "reason": (
                    f"index {clash} was accepted from {winner.name}:{winner.line}; "
                    "this commit is rejected whole"
                ),
            }
        )
    return verdict


def _commits(paths: Iterable[Path], drops: set[tuple[str, int]]) -> Iterable[_Commit]:
    from hpc_curator.store.journalread import LINE, Shared, journal_commits

    shared = Shared(drops=drops)
    for path in paths:
        for rec, _raw, _attempt, _rank, _code in journal_commits(path, shared, False):
            ok = np.asarray(rec["ok"], dtype=np.int8)
            good = np.asarray(rec["idx"], dtype=np.int64)[ok == 1]
            if len(good):
                yield _Commit(order_key(path.name, rec), path.name, int(rec.get(LINE, 0)), good)
