"""HDF5 source (one file per index) and sink (one file per index, written atomically)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hpc_curator.model.pipeline import Param, Sink, Source
from hpc_curator.store.atomic import atomic_path


class HDF5Source(Source):
    """One HDF5 file per index; yields one dict ``{dataset path: array}`` per file.

    The file list is matched and sorted once, at construction, so index ``i`` names the same
    file on every rank and on resume (files created later are not picked up mid-run).

    Parameters
    ----------
    glob
        Glob pattern (``**`` allowed) matching the input files.
    """

    params = (Param("glob", str, Param.REQUIRED, "glob pattern of input .h5 files"),)

    def __init__(self, glob: str) -> None:
        self.glob = str(glob)
        import glob as globlib

        self.files = tuple(sorted(globlib.glob(self.glob, recursive=True)))
        if not self.files:
            raise ValueError(f"HDF5Source: no file matches {self.glob!r}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Iterator[dict[str, Any]]:
        import h5py

        path = self.files[index]
        item: dict[str, Any] = {"index": index, "path": path}
        with h5py.File(path, "r") as fh:

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset):
                    item[name] = obj[()]

            fh.visititems(visit)
        yield item


class HDF5Sink(Sink):
    """Write each index to one HDF5 file, atomically.

    Arrays become datasets, scalars and strings become attributes. With one item per index
    its fields sit at the file root; with several, item ``k`` goes to group ``item_<k>``.

    Parameters
    ----------
    out_dir
        Output directory (created when missing).
    name
        File-name template formatted with ``index`` (default ``{index:08d}.h5``).
    compression
        h5py compression for arrays (``None``, ``"gzip"``, ``"lzf"``).
    """

    params = (
        Param("out_dir", str, Param.REQUIRED, "output directory"),
        Param("name", str, "{index:08d}.h5", "file-name template"),
        Param("compression", str, None, "gzip, lzf or none"),
    )

    def __init__(
        self, out_dir: str, name: str = "{index:08d}.h5", compression: str | None = None
    ) -> None:
        self.out_dir = Path(out_dir).absolute()
        self.name = name
        self.compression = None if compression in (None, "", "none") else compression
        name.format(index=0)  # fail early on a bad template

    def __call__(self, items: Iterator[Any], index: int) -> list[str]:
        import h5py

        collected = list(items)
        path = self.out_dir / self.name.format(index=index)
        with atomic_path(path, defer=True) as tmp, h5py.File(tmp, "w") as fh:
            if len(collected) == 1:
                self._write_item(fh, collected[0])
            else:
                for k, item in enumerate(collected):
                    self._write_item(fh.create_group(f"item_{k:05d}"), item)
        return [str(path)]

    def _write_item(self, group: Any, item: Any) -> None:
        if not isinstance(item, dict):
            item = {"value": item}
        for key, value in item.items():
            if isinstance(value, np.ndarray) and value.ndim > 0:
                group.create_dataset(key, data=value, compression=self.compression)
            elif value is not None:
                group.attrs[key] = value
