"""Arrow helpers that do not import ``pyarrow.compute``.

``pyarrow.compute`` costs ~30 ms and ~10 MB to import (measured: rank 0 of a 1,000-index run
went from 113 to 105 MB); the manifest of a run needs only list items, counts and row
selection, which the arrays' own buffers give.
"""

from __future__ import annotations

import threading
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
    """``array.take(sel)``, or ``array`` itself when ``sel`` is every position in order (a
    run whose indices were each committed once)."""
    n = len(array)
    if len(sel) == n and (n == 0 or (sel[0] == 0 and bool((np.diff(sel) == 1).all()))):
        return array
    return array.take(sel)
