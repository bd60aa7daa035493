"""ParquetSink: tabular items (dicts of scalars) to one Parquet file per index, atomically."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hpc_curator.model.pipeline import Param, Sink
from hpc_curator.store.atomic import atomic_path


class ParquetSink(Sink):
    """Write the items of each index as rows of one Parquet file.

    Items must be dicts of scalars (or lists); numpy arrays are stored as lists.

    Parameters
    ----------
    out_dir
        Output directory.
    name
        File-name template formatted with ``index`` (default ``{index:08d}.parquet``).
    """

    params = (
        Param("out_dir", str, Param.REQUIRED, "output directory"),
        Param("name", str, "{index:08d}.parquet", "file-name template"),
    )

    def __init__(self, out_dir: str, name: str = "{index:08d}.parquet") -> None:
        self.out_dir = Path(out_dir).absolute()
        self.name = name
        name.format(index=0)

    def __call__(self, items: Iterator[Any], index: int) -> list[str]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [_row(item) for item in items]
        table = pa.Table.from_pylist(rows)
        path = self.out_dir / self.name.format(index=index)
        with atomic_path(path, defer=True) as tmp:
            pq.write_table(table, tmp)
        return [str(path)]


def _row(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        return {"value": item}
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in item.items()}
