"""Index selection and slicing (pure functions, no I/O).

The frozen index list of a run is fixed at creation. Every launch computes
``pending = frozen - recorded`` from the journals and gives rank ``r`` of ``P`` its slice:

- ``strided`` (default): ``pending[r::P]`` — neighbouring indices go to different ranks, which
  balances costs that drift smoothly with the index.
- ``block``: contiguous blocks of ``ceil(len/P)`` — good locality when neighbouring indices share
  input files.
- ``dynamic``: ranks claim chunks from a shared counter while they run (see ``rank.py``).

Because the slice is taken of ``pending`` and not of the frozen list, a resume with a different
world size is correct (nothing done is redone) and balanced.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hpc_curator.engine.values import SCHEDULES as SCHEDULES
from hpc_curator.errors import UsageError
from hpc_curator.model.indexruns import IndexRuns
from hpc_curator.model.intcheck import integer_indices


def parse_indices(text: str | Sequence[int] | np.ndarray | None, n: int) -> np.ndarray:
    """Parse an index selection like ``"0:100,150,200:300:2"`` against ``n`` indices.

    ``None`` or ``""`` selects every index. Python slice syntax (``start:stop[:step]``, stop
    exclusive, open ends allowed) and single integers may be mixed, separated by commas.

    Raises
    ------
    UsageError
        For negative, out-of-range, duplicate or malformed entries.
    """
    if text is not None and not isinstance(text, str):
        return check_indices(integer_indices(text, "the index list holds"), n)
    if text is None or not text.strip():
        return np.arange(n, dtype=np.int64)
    parts: list[np.ndarray] = []
    for raw in text.split(","):
        token = raw.strip()
        try:
            if ":" in token:
                fields = [int(f) if f.strip() else None for f in token.split(":")]
                if len(fields) > 3:
                    raise ValueError
                start, stop, step = [*fields, None, None][:3]
                if any(v is not None and v < 0 for v in (start, stop)) or (
                    step is not None and step <= 0
                ):
                    raise UsageError(
                        f"index range {token!r} has a negative bound or step",
                        "use non-negative start:stop[:step], e.g. 0:1000",
                    )
                stop = n if stop is None else stop
                if stop > n or (start or 0) >= n:
                    raise UsageError(
                        f"index range {token!r} goes past the source's {n} indices",
                        f"valid indices are 0..{n - 1}",
                    )
                if stop <= (start or 0):
                    raise UsageError(
                        f"index range {token!r} is empty (stop must be greater than start)",
                        "e.g. 5:10 selects 5..9",
                    )
                parts.append(np.arange(start or 0, stop, step or 1, dtype=np.int64))
            else:
                value = int(token)
                if value < 0:
                    raise UsageError(f"index {value} is negative", "indices start at 0")
                if value >= n:
                    raise UsageError(
                        f"index {value} is out of range", f"valid indices are 0..{n - 1}"
                    )
                parts.append(np.array([value], dtype=np.int64))
        except ValueError:
            raise UsageError(
                f"cannot parse index selection {token!r}",
                "use integers and start:stop[:step] ranges separated by commas",
            ) from None
    indices = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    if len(indices) == 0:
        raise UsageError(f"index selection {text!r} selects no index")
    if has_duplicates(indices):
        raise UsageError(f"index selection {text!r} names some indices twice")
    return indices


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` for integer arrays via one sort (numpy 2.4's ``np.unique`` took ~1 s for
    10^6 indices here, a sort 0.02 s)."""
    s = np.sort(np.asarray(values, dtype=np.int64))
    if len(s) < 2:
        return s
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def has_duplicates(values: np.ndarray) -> bool:
    """Whether an integer array names some value twice."""
    return len(sorted_unique(values)) != len(values)


def check_indices(indices: np.ndarray, n: int) -> np.ndarray:
    """Validate an explicit index array against ``n`` indices (range, duplicates)."""
    if indices.ndim != 1:
        raise UsageError("indices must be a flat list of integers")
    bad = indices[(indices < 0) | (indices >= n)]
    if len(bad):
        raise UsageError(f"index {int(bad[0])} is out of range", f"valid indices are 0..{n - 1}")
    if has_duplicates(indices):
        raise UsageError("the index list names some indices twice")
    return indices


def to_ranges(indices: np.ndarray) -> list[list[int]]:
    """Compress an index array into ``[start, stop, step]`` runs (exact, order kept)."""
    out: list[list[int]] = []
    a = np.asarray(indices, dtype=np.int64)
    i, n = 0, len(a)
    while i < n:
        if i + 1 == n:
            out.append([int(a[i]), int(a[i]) + 1, 1])
            break
        step = int(a[i + 1] - a[i])
        if step <= 0:
            out.append([int(a[i]), int(a[i]) + 1, 1])
            i += 1
            continue
        diffs = np.diff(a[i:])
        breaks = np.flatnonzero(diffs != step)
        j = i + 1 + (int(breaks[0]) if len(breaks) else n - i - 1)
        out.append([int(a[i]), int(a[j - 1]) + 1, step])
        i = j
    return out


def from_ranges(ranges: list[list[int]]) -> np.ndarray:
    """Expand ``[start, stop, step]`` runs back into an index array."""
    if not ranges:
        return np.empty(0, dtype=np.int64)
    return np.concatenate([np.arange(s, e, st, dtype=np.int64) for s, e, st in ranges])


def pending(frozen: np.ndarray, recorded: np.ndarray) -> np.ndarray:
    """Return the frozen indices not in ``recorded``, in frozen order."""
    if len(recorded) == 0:
        return np.asarray(frozen, dtype=np.int64)
    return frozen[~np.isin(frozen, recorded, assume_unique=False)]


def slice_for(
    indices: np.ndarray | IndexRuns, rank: int, size: int, schedule: str = "strided"
) -> np.ndarray:
    """Return rank ``rank``'s share of ``indices`` (an array, or runs) under a static schedule."""
    if size < 1 or not 0 <= rank < size:
        raise UsageError(f"rank {rank} is not valid for world size {size}")
    if schedule == "strided":
        if isinstance(indices, IndexRuns):
            return indices.strided(rank, size)
        return indices[rank::size]
    if schedule == "block":
        per = -(-len(indices) // size)
        return indices[rank * per : (rank + 1) * per]
    raise UsageError(f"unknown static schedule {schedule!r}", f"choose one of {SCHEDULES}")


def default_chunk_size(n_pending: int, size: int) -> int:
    """Chunk size for the dynamic schedule: about 16 chunks per rank, 1..256 indices each."""
    return int(max(1, min(256, n_pending // max(1, size * 16))))


#: Tapered tail of the dynamic schedule: chunks per rank at each halved chunk size.
TAPER_CHUNKS_PER_RANK = 2


def dynamic_bounds(
    n: int,
    size: int,
    chunk_size: int,
    *,
    taper: bool = True,
    units: np.ndarray | None = None,
) -> np.ndarray:
    """Where the dynamic schedule's chunks start, as positions in the pending list (``n`` last).

    Chunks of ``chunk_size`` positions, claimed in order from a shared counter (MPI ranks) or
    by claim files (array tasks). With ``taper``, the last ones shrink:
    ``TAPER_CHUNKS_PER_RANK * size`` chunks of half the size, then of a quarter, ... down to
    single indices. The ranks then run out of work within about one index of each other, not
    one chunk (a chunk of heavy-tailed indices can cost seconds), for
    ``~2 * size * log2(chunk_size)`` more claims. Every rank computes the same bounds.

    ``units``: bounds of index groups (:mod:`hpc_curator.model.groups`, ``n`` last); each chunk
    bound moves forward to the next unit bound, so that a chunk holds whole units.
    """
    n, chunk_size = max(0, int(n)), max(1, int(chunk_size))
    levels = [chunk_size >> k for k in range(1, chunk_size.bit_length())] if taper else []
    tail = np.repeat(np.asarray(levels, dtype=np.int64), TAPER_CHUNKS_PER_RANK * max(1, size))
    ends_from_end = np.cumsum(tail[::-1])  # positions covered by the last k tail chunks
    if len(tail) and ends_from_end[-1] >= n:  # the tail alone covers everything
        k = int(np.searchsorted(ends_from_end, n))  # the last k+1 chunks, the first one cut
        sizes = tail[len(tail) - k - 1 :].copy()
        sizes[0] -= int(ends_from_end[k]) - n
    else:
        head = n - (int(ends_from_end[-1]) if len(tail) else 0)
        full, rest = divmod(head, chunk_size)
        partial = np.asarray([rest] if rest else [], np.int64)
        sizes = np.concatenate([np.full(full, chunk_size, np.int64), partial, tail])
    starts = np.concatenate([[0], np.cumsum(sizes[sizes > 0])]).astype(np.int64)
    if units is None:
        return starts
    at = np.minimum(np.searchsorted(units, starts), len(units) - 1)
    return np.unique(np.concatenate([[0], units[at], units[-1:]])).astype(np.int64)


def format_indices(indices: Sequence[int] | np.ndarray) -> str:
    """Render indices as selection text that :func:`parse_indices` reads back exactly.

    Raises
    ------
    UsageError
        For an empty selection (which would otherwise read back as "every index").
    """
    if len(indices) == 0:
        raise UsageError("the index selection is empty", "select at least one index")
    return ",".join(
        str(s) if e == s + st else f"{s}:{e}" if st == 1 else f"{s}:{e}:{st}"
        for s, e, st in to_ranges(np.asarray(indices, dtype=np.int64))
    )
