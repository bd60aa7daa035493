"""Arrow helpers that do not import ``pyarrow.compute``.

``pyarrow.compute`` costs ~30 ms and ~10 MB to import (measured: rank 0 of a 1,000-index run
went from 113 to 105 MB); the manifest of a run needs only list items, counts and row
selection, which the arrays' own buffers give.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np


def preload() -> threading.Thread:
    """Import what writing the manifest needs (``pyarrow``, its Parquet and JSON readers:
    ~45 ms of CPU) on a daemon thread, while the rank loop runs.

    Rank 0 needs them only at the end, where every other rank waits for it. Imports mostly
    hold the GIL, but an index that sleeps, does I/O or runs numpy releases it: then the
    import is hidden behind the work instead of adding to the run's end (W2 on 2 ranks: ~45 ms
    off a 2.6 s run). The end's own imports wait for this one if it is still going.
    """

    def load() -> None:
        import contextlib

        with contextlib.suppress(Exception):  # the end imports again and reports any error
            import pyarrow
            import pyarrow.json
            import pyarrow.parquet  # noqa: F401

    thread = threading.Thread(target=load, name="hpc-curator-preload", daemon=True)
    thread.start()
    return thread


def column(values: np.ndarray, type: Any = None, mask: np.ndarray | None = None) -> Any:
    """A numeric Arrow array over ``values`` (cast to ``type``; nulls where ``mask``).

    What ``pa.array(values, type, mask=mask)`` gives, built from the buffers: ``pa.array`` on
    a numpy array imports ``numpy.ma`` (~12 ms of CPU in rank 0's end, measured) to check for
    masked arrays.
    """
    import pyarrow as pa

    type = pa.from_numpy_dtype(np.asarray(values).dtype) if type is None else type
    data = np.ascontiguousarray(values, dtype=type.to_pandas_dtype())
    validity = None
    if mask is not None and bool(np.asarray(mask).any()):
        validity = pa.py_buffer(np.packbits(~np.asarray(mask, bool), bitorder="little"))
    return pa.Array.from_buffers(type, len(data), [validity, pa.py_buffer(data)])


@contextlib.contextmanager
def manifest_pool() -> Iterator[None]:
    """Arrow allocates from the C library's ``malloc`` while the manifest is built.

    pyarrow's default pool (mimalloc in the wheels) keeps what it freed: rank 0's peak RSS at
    the end of a 100,000-index run was 142 MiB with it, 122 MiB with ``malloc`` (measured).
    Only for this block: user components keep the default pool, and a pool the user chose
    (``ARROW_DEFAULT_MEMORY_POOL``) is left alone. Buffers return to the pool they came from.
    """
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        yield
        return
    import pyarrow as pa

    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(before)


def list_values(chunks: list[Any]) -> Any:
    """The items of list arrays in order, as ``combine_chunks().flatten()`` gives them
    (unsliced arrays without null lists: their child array itself)."""
    import pyarrow as pa

    parts = []
    for chunk in chunks:
        if chunk.offset == 0 and chunk.null_count == 0:
            end = chunk.offsets[len(chunk)].as_py() if len(chunk) else 0
            parts.append(chunk.values.slice(0, end))
        else:
            parts.append(chunk.flatten())
    if not parts:
        return pa.array([], pa.list_(pa.string()))
    return parts[0] if len(parts) == 1 else pa.concat_arrays(parts)


def count_items(array: Any) -> int:
    """How many items the lists of a list array hold together."""
    if not len(array):
        return 0
    if array.null_count == 0:
        return int(array.offsets[len(array)].as_py() - array.offsets[0].as_py())
    return len(array.flatten())


def take(array: Any, sel: np.ndarray) -> Any:
    """``array.take(sel)`` for a ``list<string>`` array, without ``pyarrow.compute``.

    ``array`` itself when ``sel`` is every position in order (a run whose indices were each
    committed once, by one rank). Otherwise the offsets and bytes are gathered with numpy: a
    run of 2 ranks or more interleaves its journals, and Arrow's own ``take`` would import
    ``pyarrow.compute`` in rank 0's end (~50 ms of CPU on the critical path of every run).
    Arrays with null lists or strings, or of another type, use Arrow's ``take``.
    """
    import pyarrow as pa

    n = len(array)
    sel = np.asarray(sel, dtype=np.int64)
    if len(sel) == n and (n == 0 or (sel[0] == 0 and bool((np.diff(sel) == 1).all()))):
        return array
    if (
        array.type != pa.list_(pa.string())
        or array.null_count
        or array.values.null_count
        or (len(sel) and (sel.min() < 0 or sel.max() >= n))
    ):
        return array.take(sel)
    offsets = np.frombuffer(array.offsets.buffers()[1], np.int32, n + 1, array.offsets.offset * 4)
    starts, lengths = offsets[sel], np.diff(offsets)[sel]
    items = _ranges(starts, lengths)  # positions in array.values of every item kept
    strings = array.values
    text = strings.buffers()
    s_off = np.frombuffer(text[1], np.int32, len(strings) + 1, strings.offset * 4)
    data = np.frombuffer(text[2], np.uint8) if text[2] is not None else np.empty(0, np.uint8)
    s_starts, s_lengths = s_off[items], np.diff(s_off)[items]
    chars = data[_ranges(s_starts, s_lengths)]
    child = pa.StringArray.from_buffers(
        len(items), pa.py_buffer(_offsets(s_lengths)), pa.py_buffer(chars.tobytes())
    )
    offsets_kept = pa.py_buffer(_offsets(lengths))  # not pa.array: that imports numpy.ma
    return pa.Array.from_buffers(array.type, len(sel), [None, offsets_kept], children=[child])


def _offsets(lengths: np.ndarray) -> np.ndarray:
    """Arrow int32 offsets for items of ``lengths``: ``[0, l0, l0 + l1, ...]``."""
    out = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=out[1:])
    return out


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + l) for s, l in zip(starts, lengths)])``, vectorised."""
    lengths = lengths.astype(np.int64)
    firsts = np.zeros(len(lengths), np.int64)  # where each range begins in the result
    np.cumsum(lengths[:-1], out=firsts[1:])
    total = int(lengths.sum())
    return np.repeat(starts.astype(np.int64) - firsts, lengths) + np.arange(total)
