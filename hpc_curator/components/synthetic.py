"""Deterministic synthetic data for demos, tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from hpc_curator.model.pipeline import Param, Source


class SyntheticSource(Source):
    """``n`` indices, each yielding ``items`` dicts of seeded float32 arrays.

    Index ``i`` always yields the same data for a given ``seed`` (the generator is seeded with
    ``(seed, i)``), whatever rank, process or attempt computes it.

    Parameters
    ----------
    n
        Number of indices.
    shape
        Shape of each array (tuple or ``"64x64x16"``).
    seed
        Base seed.
    fields
        Names of the arrays in each item.
    items
        Items per index.
    """

    params = (
        Param("n", int, Param.REQUIRED, "number of indices"),
        Param("shape", str, "16x16", "array shape, e.g. 64x64x16"),
        Param("seed", int, 0, "base seed"),
        Param("fields", str, "u", "comma-separated field names"),
        Param("items", int, 1, "items per index"),
    )

    def __init__(
        self,
        n: int,
        shape: tuple[int, ...] | str = (16, 16),
        seed: int = 0,
        fields: tuple[str, ...] | str = ("u",),
        items: int = 1,
    ) -> None:
        if int(n) < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n = int(n)
        self.shape = parse_shape(shape)
        self.seed = int(seed)
        self.fields = tuple(fields.split(",")) if isinstance(fields, str) else tuple(fields)
        self.items = int(items)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Iterator[dict[str, Any]]:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for SyntheticSource(n={self.n})")
        rng = np.random.default_rng([self.seed, index])
        for k in range(self.items):
            item: dict[str, Any] = {"index": index, "item": k}
            for name in self.fields:
                item[name] = rng.standard_normal(self.shape, dtype=np.float32)
            yield item


def parse_shape(shape: tuple[int, ...] | list[int] | str) -> tuple[int, ...]:
    """Parse ``"64x64x16"`` or a sequence into a tuple of positive ints."""
    parts = shape.lower().split("x") if isinstance(shape, str) else list(shape)
    dims = tuple(int(p) for p in parts)
    if not dims or any(d <= 0 for d in dims):
        raise ValueError(f"shape must be positive integers like 64x64x16, got {shape!r}")
    return dims
