"""FieldStats: running count/mean/variance/min/max per field, mergeable across ranks.

Means and variances combine with Chan et al.'s parallel update, which is associative and
commutative up to floating-point rounding; counts, minima and maxima combine exactly, so they
are bitwise identical whatever the world size or merge order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpc_curator.errors import ShardError
from hpc_curator.pipeline import Param, StatefulFilter


@dataclass
class Moments:
    """Summary statistics of a set of numbers (count, mean, M2, min, max)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")

    @property
    def variance(self) -> float:
        """Population variance (``nan`` when empty)."""
        return self.m2 / self.count if self.count else float("nan")

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """Moments of an array (flattened, in float64)."""
        flat = np.asarray(values, dtype=np.float64).ravel()
        if flat.size == 0:
            return cls()
        mean = float(flat.mean())
        dev = flat - mean
        return cls(flat.size, mean, float(dev @ dev), float(flat.min()), float(flat.max()))

    def combine(self, other: Moments) -> Moments:
        """Chan's parallel combination of two sets of moments."""
        if other.count == 0:
            return Moments(self.count, self.mean, self.m2, self.min, self.max)
        if self.count == 0:
            return Moments(other.count, other.mean, other.m2, other.min, other.max)
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta * delta * (self.count * other.count / n)
        return Moments(n, mean, m2, min(self.min, other.min), max(self.max, other.max))


State = dict[str, Moments]


class FieldStats(StatefulFilter[State]):
    """Accumulate per-field statistics of the numeric arrays flowing through.

    Parameters
    ----------
    fields
        Field names to track (comma-separated string or sequence); default: every numeric
        array (ndarray with a numeric dtype) in each item.
    name
        Shard directory and output name (default ``fieldstats``).
    output
        Merged output path (default ``<run dir>/outputs/<name>.h5``).
    """

    params = (
        Param("fields", str, None, "comma-separated fields (default: every numeric array)"),
        Param("name", str, None, "name of shards and output"),
        Param("output", str, None, "merged output path"),
    )

    def __init__(
        self,
        fields: Iterable[str] | str | None = None,
        name: str | None = None,
        output: str | None = None,
    ) -> None:
        super().__init__(name=name, output=output)
        if isinstance(fields, str):
            fields = [f for f in fields.split(",") if f]
        self.fields = tuple(fields) if fields is not None else None

    @classmethod
    def empty_state(cls) -> State:
        return {}

    def observe(self, state: State, item: Any) -> Any:
        names = self.fields if self.fields is not None else _numeric_fields(item)
        for name in names:
            moments = Moments.of(item[name])
            state[name] = state[name].combine(moments) if name in state else moments
        return item

    @classmethod
    def combine(cls, a: State, b: State) -> State:
        out = dict(a)
        for name, m in b.items():
            out[name] = out[name].combine(m) if name in out else m
        return out

    @classmethod
    def write_state(cls, state: State, path: str) -> None:
        import h5py

        with h5py.File(path, "w") as fh:
            fh.attrs["format"] = "hpc-curator.fieldstats/1"
            for name in sorted(state):
                m = state[name]
                g = fh.create_group(_escape(name))
                g.attrs["field"] = name
                g.attrs["count"] = np.int64(m.count)
                for key in ("mean", "m2", "min", "max"):
                    g.attrs[key] = np.float64(getattr(m, key))
                g.attrs["variance"] = np.float64(m.variance)
                g.attrs["std"] = np.float64(np.sqrt(m.variance)) if m.count else np.nan

    @classmethod
    def read_state(cls, path: str) -> State:
        import h5py

        try:
            with h5py.File(path, "r") as fh:
                if fh.attrs.get("format") != "hpc-curator.fieldstats/1":
                    raise ShardError(f"{path} is not a FieldStats shard")
                return {
                    str(g.attrs.get("field", name)): Moments(
                        int(g.attrs["count"]),
                        float(g.attrs["mean"]),
                        float(g.attrs["m2"]),
                        float(g.attrs["min"]),
                        float(g.attrs["max"]),
                    )
                    for name, g in fh.items()
                }
        except (OSError, KeyError) as exc:
            raise ShardError(
                f"cannot read FieldStats shard {path}: {exc}",
                "the file is corrupt or truncated; delete it only if no journal commits it",
            ) from exc


def _escape(name: str) -> str:
    """HDF5 group name for a field (``/`` would create nested groups)."""
    return name.replace("%", "%25").replace("/", "%2F") or "%00"


def _numeric_fields(item: Any) -> list[str]:
    if not isinstance(item, dict):
        return []
    return [
        k
        for k, v in item.items()
        if isinstance(v, np.ndarray) and (np.issubdtype(v.dtype, np.number)) and v.size
    ]


def read_fieldstats(path: str) -> dict[str, dict[str, float]]:
    """Read a FieldStats file into ``{field: {count, mean, variance, std, min, max}}``."""
    return {
        name: {
            "count": m.count,
            "mean": m.mean,
            "variance": m.variance,
            "std": float(np.sqrt(m.variance)) if m.count else float("nan"),
            "min": m.min,
            "max": m.max,
        }
        for name, m in FieldStats.read_state(path).items()
    }
