"""Example pipeline: synthetic 3-D fields -> smoothing -> FieldStats -> one HDF5 file per index.

Run it::

    hpc-curate run examples/synthetic.py:build --ranks 4 --run-dir runs/demo
    hpc-curate run examples/synthetic.py:build -p n=200 -p shape=32x32x8 --run-dir runs/small
"""

from __future__ import annotations

from hpc_curator import Pipeline
from hpc_curator.components import FieldStats, HDF5Sink, Smooth, SyntheticSource


def build(
    n: str = "256", shape: str = "32x32x16", out: str = "", passes: str = "2", seed: str = "0"
) -> Pipeline:
    """Build the example pipeline; every parameter arrives as a string from ``--param``.

    Parameters
    ----------
    n
        Number of indices.
    shape
        Array shape per index, e.g. ``32x32x16``.
    out
        Output directory for per-index HDF5 files (default: ``outputs/fields`` in the cwd).
    passes
        Smoothing passes (CPU cost per index).
    seed
        Data seed.
    """
    return (
        Pipeline(SyntheticSource(n=int(n), shape=shape, seed=int(seed), fields=("u", "v")))
        .filter(Smooth("u", passes=int(passes)))
        .filter(FieldStats(name="stats"))
        .write(HDF5Sink(out or "outputs/fields"))
    )
