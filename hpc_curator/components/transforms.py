"""Simple array filters used by the examples and benchmarks, plus failure and delay injection."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from hpc_curator.model.pipeline import Filter, Param


class Smooth(Filter):
    """Apply ``passes`` rounds of 3-point smoothing along every axis of ``field`` (numpy).

    Parameters
    ----------
    field
        Array field to smooth in place of the original.
    passes
        Number of smoothing rounds (cost grows linearly).
    """

    params = (
        Param("field", str, "u", "array field"),
        Param("passes", int, 1, "smoothing rounds"),
    )

    def __init__(self, field: str = "u", passes: int = 1) -> None:
        self.field = field
        self.passes = int(passes)

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            a = np.asarray(item[self.field], dtype=np.float32)
            for _ in range(self.passes):
                for axis in range(a.ndim):
                    a = (np.roll(a, 1, axis) + a + np.roll(a, -1, axis)) / np.float32(3)
            yield {**item, self.field: a}


class FailOn(Filter):
    """Raise for the chosen indices (to test failure handling end to end).

    Parameters
    ----------
    indices
        Comma-separated indices (or a sequence) whose items raise ``error``.
    error
        Exception message.
    """

    params = (
        Param("indices", str, "", "comma-separated indices that fail"),
        Param("error", str, "injected failure", "exception message"),
    )

    def __init__(self, indices: str | list[int] = "", error: str = "injected failure") -> None:
        if isinstance(indices, str):
            indices = [int(x) for x in indices.split(",") if x.strip()]
        self.indices = frozenset(int(i) for i in indices)
        self.error = error

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            if item.get("index") in self.indices:
                raise RuntimeError(f"{self.error} at index {item['index']}")
            yield item


class Sleep(Filter):
    """Sleep ``seconds`` per item (to test time limits, pre-emption and progress).

    Parameters
    ----------
    seconds
        Delay per item.
    """

    params = (Param("seconds", float, 0.1, "delay per item"),)

    def __init__(self, seconds: float = 0.1) -> None:
        self.seconds = float(seconds)

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            time.sleep(self.seconds)
            yield item
