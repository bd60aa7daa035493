"""ZarrSink: every index into one Zarr store, one array per field, chunked along the index axis.

Two ranks writing samples of one chunk at once would lose updates (each rewrites the whole
chunk), so the sink declares each chunk's indices a group
(:meth:`ZarrSink.partition_indices`): every schedule and backend then keeps a chunk on one
rank within an attempt, and a resume writes a partly committed chunk's missing samples from
one rank too. zarr writes each chunk file under a temporary name and renames it; this sink
also fsyncs the chunk files an index touched before the index is committed, so a committed
sample survives a node crash. Needs the ``zarr`` extra (``pip install 'hpc-curator[zarr]'``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpc_curator.model.pipeline import Param, Sink, Source
from hpc_curator.store.atomic import make_durable


class ZarrSink(Sink):
    """Write index ``i`` of every array field to row ``i`` of array ``<store>/<field>``.

    Parameters
    ----------
    store
        Path of the Zarr (v3) store, a directory; created when missing.
    chunk
        Samples per chunk along the index axis (indices ``k*chunk .. (k+1)*chunk-1`` form one
        group). A chunk holds the whole sample in the other dimensions.
    fields
        Comma-separated fields to write (default: every array field of the item).
    length
        Rows of each array (default: the source's length).
    """

    params = (
        Param("store", str, Param.REQUIRED, "Zarr store path"),
        Param("chunk", int, 16, "samples per chunk along the index axis"),
        Param("fields", str, None, "comma-separated fields (default: every array)"),
        Param("length", int, None, "rows per array (default: the source's length)"),
    )

    def __init__(
        self,
        store: str,
        chunk: int = 16,
        fields: str | Sequence[str] | None = None,
        length: int | None = None,
    ) -> None:
        if int(chunk) < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.store = Path(store).absolute()
        self.chunk = int(chunk)
        self.fields = (
            tuple(f for f in fields.split(",") if f) if isinstance(fields, str) else fields
        )
        self.length = None if length is None else int(length)
        self._arrays: dict[str, Any] = {}

    def set_source(self, source: Source) -> None:
        if self.length is None:
            self.length = len(source)

    def partition_indices(self, indices: Sequence[int]) -> list[list[int]]:
        """One group per chunk: the indices whose rows share it."""
        by_chunk: dict[int, list[int]] = {}
        for i in indices:
            by_chunk.setdefault(int(i) // self.chunk, []).append(int(i))
        return [g for g in by_chunk.values() if len(g) > 1]

    def __call__(self, items: Iterator[Any], index: int) -> list[str]:
        collected = list(items)
        if len(collected) != 1 or not isinstance(collected[0], dict):
            raise ValueError(
                f"ZarrSink writes one dict item per index; index {index} gave {len(collected)}"
            )
        item = collected[0]
        names = self.fields or [k for k, v in item.items() if isinstance(v, np.ndarray)]
        paths = []
        for name in names:
            value = np.asarray(item[name])
            array = self._array(name, value)
            if array.shape[1:] != value.shape or array.dtype != value.dtype:
                raise ValueError(
                    f"field {name!r} of index {index} is {value.dtype}{list(value.shape)}; the "
                    f"store holds {array.dtype}{list(array.shape[1:])}"
                )
            array[index] = value
            path = self._chunk_file(name, index, value.ndim)
            make_durable(path, defer=True)  # before the commit; behind, in the rank loop
            paths.append(str(path))
        return paths

    def _chunk_file(self, name: str, index: int, ndim: int) -> Path:
        # zarr v3's default chunk key encoding: <array>/c/<i>/<j>/..., one 0 per whole dim
        return self.store.joinpath(name, "c", str(index // self.chunk), *(["0"] * ndim))

    def _array(self, name: str, value: np.ndarray) -> Any:
        array = self._arrays.get(name)
        if array is not None:
            return array
        import zarr
        from zarr.errors import ContainsArrayError, ContainsGroupError

        if self.length is None:
            raise ValueError("ZarrSink needs length= when used outside a Pipeline")
        try:
            zarr.open_group(str(self.store), mode="a")
        except ContainsGroupError:
            pass  # another rank created it between our look and our create
        except ContainsArrayError:
            raise ValueError(f"{self.store} is a Zarr array, not a store of arrays") from None
        config: Any = {"write_empty_chunks": True}  # a chunk of zeros is still a sample
        try:
            array = zarr.open_array(str(self.store), path=name, mode="r+", config=config)
        except (FileNotFoundError, KeyError, ValueError):
            try:
                array = zarr.create_array(
                    str(self.store),
                    name=name,
                    shape=(self.length, *value.shape),
                    chunks=(self.chunk, *value.shape),
                    dtype=value.dtype,
                    fill_value=0,
                    config=config,
                )
            except (ContainsArrayError, ContainsGroupError):  # another rank was first
                array = zarr.open_array(str(self.store), path=name, mode="r+", config=config)
        self._arrays[name] = array
        return array

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}  # open arrays stay in the process that opened them
        return state
