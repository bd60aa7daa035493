"""Opt-in per-index peak memory: Python allocations (``--track-memory``) and GPU (``--track-gpu``).

``--track-memory`` runs :mod:`tracemalloc` for the whole attempt and records, for every index,
the peak of Python-allocated bytes while it ran (``tracemalloc.reset_peak`` before it). Python
allocations then cost about twice as much, hence opt-in. ``--track-gpu`` records
``torch.cuda.max_memory_allocated`` per index (after ``reset_peak_memory_stats``); it needs
PyTorch and a visible CUDA device, and says so in one line when either is missing.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

from hpc_curator.errors import UsageError


def check_gpu_tracking() -> Any:
    """The ``torch.cuda`` module, or :class:`UsageError` saying what is missing."""
    try:
        import torch
    except ImportError:
        raise UsageError(
            "--track-gpu needs PyTorch (torch.cuda peak memory), which is not importable here",
            "install torch in the ranks' environment, or drop --track-gpu",
        ) from None
    if not torch.cuda.is_available():
        raise UsageError(
            "--track-gpu: PyTorch sees no CUDA device on this rank",
            "run on GPU nodes (--gpus-per-rank), or drop --track-gpu",
        )
    return torch.cuda


class Peaks:
    """Per-index peaks for the rank loop (``on`` is false when nothing is tracked)."""

    def __init__(self, memory: bool, gpu: bool) -> None:
        self.memory, self.gpu = memory, gpu
        self.on = memory or gpu
        self._cuda = check_gpu_tracking() if gpu else None
        self._started = False
        if memory and not tracemalloc.is_tracing():
            tracemalloc.start()
            self._started = True

    def reset(self) -> None:
        """Before an index."""
        if self.memory:
            tracemalloc.reset_peak()
        if self._cuda is not None:
            self._cuda.reset_peak_memory_stats()

    def peaks(self) -> tuple[int | None, int | None]:
        """After an index: ``(python peak bytes, gpu peak bytes)``."""
        py = tracemalloc.get_traced_memory()[1] if self.memory else None
        gpu = int(self._cuda.max_memory_allocated()) if self._cuda is not None else None
        return py, gpu

    def close(self) -> None:
        """Stop tracemalloc if this object started it."""
        if self._started:
            tracemalloc.stop()
            self._started = False
