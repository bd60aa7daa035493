"""A pending list as arithmetic runs: what the :class:`~hpc_curator.engine.values.Plan` carries.

Every rank receives the attempt's plan (MPI broadcast; array tasks read ``plan.pkl``), and a
plan that held the pending indices as one int64 array put 0.8 GB of it on every rank of a
10^8-index run (and 52 TB of ``plan.pkl`` reads across 65,536 array tasks: SCALE.md, change
4). A fresh run's pending list is one run (``0, 1, ..., n-1``), a resume's a few runs per rank
(each rank's strided share stopped somewhere): :class:`IndexRuns` keeps the runs, and each
rank expands only what it takes (its strided or block share, a dynamic chunk), in the same
order and with the same values as slicing the array would give.

:func:`compact` decides: runs when there are 16x fewer of them than indices, else the array
as it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: an array is kept as runs only when there are at least this many times fewer runs
MIN_GAIN = 16
#: indices :func:`compact` reads at a time
BLOCK = 1 << 22


class IndexRuns:
    """An index list as runs ``starts[j] + m * steps[j]`` for ``m < lengths[j]``, in order.

    Supports what the rank loop and the array tasks do with a pending list: ``len``, slices
    of positions (``runs[a:b]``, an array), :meth:`strided` (``array[rank::size]``) and
    :meth:`to_array`.
    """

    __slots__ = ("ends", "lengths", "offsets", "starts", "steps", "total")

    def __init__(self, starts: np.ndarray, steps: np.ndarray, lengths: np.ndarray) -> None:
        self.starts = np.asarray(starts, dtype=np.int64)
        self.steps = np.asarray(steps, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        #: position of each run's first index in the list, and one past its last
        self.ends = np.cumsum(self.lengths)
        self.offsets = self.ends - self.lengths
        self.total = int(self.ends[-1]) if len(self.ends) else 0

    def __len__(self) -> int:
        return self.total

    def __repr__(self) -> str:
        return f"IndexRuns({len(self)} indices in {len(self.starts)} runs)"

    def __reduce__(self) -> tuple[Any, ...]:
        return (IndexRuns, (self.starts, self.steps, self.lengths))

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("IndexRuns supports slices of consecutive positions only")
        a, b, _ = key.indices(len(self))
        return self._expand(a, max(a, b), 1)

    def strided(self, rank: int, size: int) -> np.ndarray:
        """The indices at positions ``rank, rank + size, ...`` (``array[rank::size]``)."""
        return self._expand(rank, len(self), size)

    def to_array(self) -> np.ndarray:
        """Every index, as one array."""
        return self._expand(0, len(self), 1)

    def _expand(self, first: int, stop: int, stride: int) -> np.ndarray:
        """Indices at positions ``first, first + stride, ... < stop``, vectorised over runs."""
        if first >= stop:
            return np.empty(0, dtype=np.int64)
        lo = int(np.searchsorted(self.ends, first, side="right"))
        hi = int(np.searchsorted(self.offsets, stop, side="left"))
        off, ln = self.offsets[lo:hi], self.lengths[lo:hi]
        begin = np.maximum(off, first)
        begin = begin + (first - begin) % stride  # the first wanted position of each run
        end = np.minimum(off + ln, stop)
        counts = np.maximum(0, -(-(end - begin) // stride))
        base = self.starts[lo:hi] + (begin - off) * self.steps[lo:hi]
        jump = self.steps[lo:hi] * stride
        total = int(counts.sum())
        first_of_run = np.repeat(np.cumsum(counts) - counts, counts)
        m = np.arange(total, dtype=np.int64) - first_of_run
        return np.repeat(base, counts) + m * np.repeat(jump, counts)


def compact(indices: np.ndarray, min_gain: int = MIN_GAIN) -> np.ndarray | IndexRuns:
    """``indices`` as :class:`IndexRuns` when there are ``min_gain`` times fewer runs than
    indices (24 bytes per run: at least ~5x fewer bytes with the default), else the array.

    Read in blocks of 4 M indices (a few MB of temporaries at a time) and given up as soon as
    there are too many runs.
    """
    a = np.asarray(indices, dtype=np.int64)
    n = len(a)
    if n < 2 or n < 2 * min_gain:
        return a
    limit = n // min_gain
    # a run of equal differences d[p:q] (d = diff(a)) makes the run of indices a[p:q]; a[q]
    # starts the next run, and the last run also takes the last index
    cuts: list[np.ndarray] = []
    found = 0
    for lo in range(0, n - 2, BLOCK):
        hi = min(lo + BLOCK, n - 2)
        d = np.diff(a[lo : hi + 2])  # d[lo..hi]
        cut = np.flatnonzero(d[1:] != d[:-1]) + (lo + 1)
        found += len(cut)
        if found + 1 > limit:
            return a
        cuts.append(cut)
    first = np.concatenate([np.zeros(1, dtype=np.int64), *cuts])
    lengths = np.diff(np.append(first, n))
    steps = a[np.minimum(first + 1, n - 1)] - a[first]
    return IndexRuns(a[first], steps, lengths)


def as_array(indices: np.ndarray | IndexRuns) -> np.ndarray:
    """Every index of ``indices`` as an array (either form)."""
    return indices.to_array() if isinstance(indices, IndexRuns) else indices
