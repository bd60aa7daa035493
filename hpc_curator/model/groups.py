"""Index groups: indices that must run on the same rank within an attempt.

A :class:`~hpc_curator.model.pipeline.Source` or :class:`~hpc_curator.model.pipeline.Sink` may
declare
``partition_indices(indices) -> list[list[int]] | None``: groups of indices one worker must
process together (a Zarr chunk spanning several samples along the index axis, which two ranks
writing at once would corrupt; one LMDB environment per process). The declarations of source
and sink combine as a *union* of "must be together" constraints: their connected components.

Each attempt arranges its pending indices in *units* (a group's pending members, or one index
alone) and every schedule hands out whole units:

- ``strided``: units largest first, each to the least loaded rank (ties: the lowest rank), so
  the groups spread out first and the single indices even the load out, round robin;
- ``block``: contiguous runs of units in index order, cut where the running count crosses
  ``k * total / size``;
- ``dynamic``: chunks of whole units (largest first), about ``chunk_size`` indices each; a
  unit larger than that is a chunk of its own.

A resume runs the pending members of a partly committed group together. Each index's group
is written to ``D/groups.npy`` (its component's smallest index) for the manifest. Runs whose
components declare nothing keep the plain (faster) slicing of :mod:`hpc_curator.model.partition`.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

import numpy as np

from hpc_curator.errors import CuratorError, IndexValueError
from hpc_curator.model.intcheck import integer_list, is_integer, short
from hpc_curator.model.pipeline import Sink, Source

#: the base classes' ``partition_indices`` (no groups): not called, so that a run without
#: groups never turns its index array into Python ints (10^8 indices: ~4 GB on rank 0)
_NO_GROUPS = (Source.partition_indices, Sink.partition_indices)


def declared(pipeline: Any, indices: np.ndarray) -> list[list[int]]:
    """The groups the pipeline's source and sink declare for ``indices`` (may be empty)."""
    out: list[list[int]] = []
    allowed: list[int] | None = None  # built only for a component that declares groups
    for part in (pipeline.source, pipeline.sink):
        hook = getattr(part, "partition_indices", None)
        if part is None or hook is None or getattr(hook, "__func__", None) in _NO_GROUPS:
            continue
        if allowed is None:
            allowed = indices.tolist()
        name = f"{type(part).__qualname__}.partition_indices"
        try:
            groups = hook(list(allowed))
        except CuratorError:
            raise
        except Exception as exc:  # user code: one line naming it, no traceback
            text = str(exc).strip().splitlines()
            raise IndexValueError(
                f"{name} raised {type(exc).__name__}" + (f": {text[0]}" if text else "")
            ) from exc
        if groups is None:
            continue
        out.extend(_checked_groups(groups, name))
    return out


def _checked_groups(groups: Any, name: str) -> list[list[int]]:
    """The groups a ``partition_indices`` returned, each a list of ints; nothing truncated."""
    if isinstance(groups, str | bytes | dict) or not hasattr(groups, "__iter__"):
        raise IndexValueError(
            f"{name} returned {type(groups).__name__}, not a list of lists of indices"
        )
    out: list[list[int]] = []
    for g in groups:
        if is_integer(g) or isinstance(g, str | bytes | dict) or not hasattr(g, "__iter__"):
            raise IndexValueError(
                f"{name} returned {type(groups).__name__} holding {short(g)}, not a list of lists "
                "of indices"
            )
        out.append(integer_list(g, f"{name} returned"))
    return out


def components(indices: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray | None:
    """Each index's component label: the smallest index it must run with (itself if alone).

    Indices named by a group but not in ``indices`` (not part of this run) are ignored.
    ``None`` when no two indices of ``indices`` are tied together.
    """
    if not groups:
        return None
    pos = {int(v): k for k, v in enumerate(indices.tolist())}
    parent = list(range(len(indices)))

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    tied = False
    for group in groups:
        members = [pos[i] for i in group if i in pos]
        if len(members) < 2:
            continue
        first = find(members[0])
        for m in members[1:]:
            r = find(m)
            if r != first:
                parent[r] = first
                tied = True
    if not tied:
        return None
    roots = np.fromiter((find(k) for k in range(len(indices))), dtype=np.int64, count=len(indices))
    # label = smallest index of the component
    smallest = np.full(len(indices), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, roots, indices)
    return smallest[roots]


def units(
    pending: np.ndarray, labels: np.ndarray, largest_first: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Reorder ``pending`` so each unit is contiguous; return ``(ordered, bounds)``.

    Unit ``u`` is ``ordered[bounds[u]:bounds[u + 1]]``; members keep their pending order.
    Units come largest first (ties: first appearance) or in order of first appearance.
    """
    uniq, first, inverse, counts = np.unique(
        labels, return_index=True, return_inverse=True, return_counts=True
    )
    unit_order = np.lexsort((first, -counts)) if largest_first else np.argsort(first)
    rank_of_unit = np.empty(len(uniq), dtype=np.int64)
    rank_of_unit[unit_order] = np.arange(len(uniq))
    order = np.lexsort((np.arange(len(pending)), rank_of_unit[inverse]))
    sizes = counts[unit_order]
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return pending[order], bounds


def share(
    ordered: np.ndarray, bounds: np.ndarray, rank: int, size: int, schedule: str
) -> np.ndarray:
    """Rank ``rank``'s indices under a static schedule, never splitting a unit."""
    sizes = np.diff(bounds)
    if schedule == "block":
        total = int(bounds[-1])
        cuts = np.searchsorted(bounds, [total * k / size for k in range(size + 1)], side="left")
        lo, hi = int(cuts[rank]), int(cuts[rank + 1]) if rank + 1 < size else len(sizes)
        return ordered[bounds[lo] : bounds[hi]]
    loads = [(0, r) for r in range(size)]
    mine: list[int] = []
    for u, n in enumerate(sizes.tolist()):
        load, r = heapq.heappop(loads)
        if r == rank:
            mine.append(u)
        heapq.heappush(loads, (load + n, r))
    if not mine:
        return ordered[:0]
    return np.concatenate([ordered[bounds[u] : bounds[u + 1]] for u in mine])


def plan_units(
    pending: np.ndarray,
    frozen: np.ndarray,
    labels: np.ndarray | None,
    schedule: str,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(pending reordered into units, unit bounds)``; ``(pending, None)`` without groups."""
    if labels is None or len(pending) == 0:
        return pending, None
    sorter = np.argsort(frozen, kind="stable")
    at = sorter[np.searchsorted(frozen, pending, sorter=sorter)]
    return units(pending, labels[at], largest_first=schedule != "block")


def mates(
    suspects: list[int], pending: np.ndarray, frozen: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """The pending indices sharing a group with any of ``suspects`` (they run with them)."""
    if not suspects or labels is None:
        return pending[:0]
    sorter = np.argsort(frozen, kind="stable")
    label_of = labels[sorter[np.searchsorted(frozen, np.asarray(suspects), sorter=sorter)]]
    at = sorter[np.searchsorted(frozen, pending, sorter=sorter)]
    return pending[np.isin(labels[at], label_of)]
