"""Arrow helpers that keep ``pyarrow.compute`` and ``numpy.ma`` out of rank 0's end."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from hpc_curator.store.arrow import column, take


def _random_lists(rng: np.random.Generator, n: int) -> list[list[str]]:
    alphabet = list("ab/é_x")
    return [
        ["".join(rng.choice(alphabet, rng.integers(0, 6))) for _ in range(rng.integers(0, 4))]
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_take_gives_what_arrow_take_gives(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(200):
        n = int(rng.integers(0, 25))
        array = pa.array(_random_lists(rng, n), pa.list_(pa.string()))
        if n and rng.random() < 0.4:  # sliced arrays: offsets that do not start at 0
            start = int(rng.integers(0, n))
            array = array.slice(start, int(rng.integers(0, n - start + 1)))
        m = len(array)
        sel = rng.integers(0, m, int(rng.integers(0, 2 * m + 1))) if m else np.empty(0, int)
        got = take(array, sel)
        got.validate(full=True)
        assert got.type == pa.list_(pa.string())
        assert got.to_pylist() == array.take(pa.array(sel, pa.int64())).to_pylist()


def test_take_of_every_position_in_order_is_the_array_itself() -> None:
    array = pa.array([["a"], [], ["b", "c"]], pa.list_(pa.string()))
    assert take(array, np.arange(3)) is array


def test_take_with_null_lists_falls_back_to_arrow() -> None:
    array = pa.array([["a"], None, ["b", None]], pa.list_(pa.string()))
    assert take(array, np.array([2, 1, 0])).to_pylist() == [["b", None], None, ["a"]]


@pytest.mark.parametrize(
    ("values", "kind", "mask"),
    [
        (np.arange(5), pa.int64(), None),
        (np.arange(5), pa.int32(), np.array([0, 1, 0, 0, 1], bool)),
        (np.array([1.5, np.nan, 2.0]), pa.float64(), np.array([False, True, False])),
        (np.arange(6, dtype=np.int64)[::2], None, np.array([True, False, False])),
        (np.zeros(0), pa.float64(), np.zeros(0, bool)),
        (np.arange(20, dtype=np.int64), pa.int64(), np.arange(20) % 3 == 0),
    ],
)
def test_column_gives_what_pa_array_gives(values: np.ndarray, kind: object, mask: object) -> None:
    got = column(values, kind, mask=mask)
    got.validate(full=True)
    assert got.equals(pa.array(values, kind, mask=mask))


def test_the_end_of_an_interleaved_run_imports_neither_compute_nor_numpy_ma(
    tmp_path: Path,
) -> None:
    # two workers interleave their journals, so the manifest's rows are permuted: Arrow's
    # take would import pyarrow.compute (~50 ms) and pa.array on numpy imports numpy.ma
    script = textwrap.dedent(
        f"""
        import sys
        from hpc_curator import Pipeline
        from hpc_curator.api import run_pipeline
        from hpc_curator.components import HDF5Sink, SyntheticSource

        src = SyntheticSource(n=40, shape=(2, 2), fields=("u",))
        p = Pipeline(src).write(HDF5Sink(out_dir={str(tmp_path / "out")!r}))
        out = run_pipeline(p, run_dir={str(tmp_path / "r")!r}, n_jobs=2, progress=False)
        assert sum(len(x) for x in out) == 40, out
        print("imported:", [m for m in ("pyarrow.compute", "numpy.ma") if m in sys.modules])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "imported: []" in proc.stdout, proc.stdout
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "r" / "manifest.parquet")
    assert table.column("index").to_pylist() == list(range(40))
    outputs = table.column("outputs").to_pylist()
    assert all(len(o) == 1 and o[0].endswith(".h5") for o in outputs)


def test_the_manifest_pool_is_malloc_for_the_block_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpc_curator.store.arrow import manifest_pool

    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    before = pa.default_memory_pool().backend_name
    with manifest_pool():
        assert pa.default_memory_pool().backend_name == "system"
        kept = pa.array(np.arange(1000))  # allocated from malloc, freed after the block
    assert pa.default_memory_pool().backend_name == before
    del kept
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", before)  # the user's choice stays
    with manifest_pool():
        assert pa.default_memory_pool().backend_name == before
