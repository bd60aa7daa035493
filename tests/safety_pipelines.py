"""Pipelines of tests/test_rundir_safety.py (loaded by path: tests/safety_pipelines.py:NAME)."""

from __future__ import annotations

from hpc_curator import Pipeline
from hpc_curator.components import FieldStats, SyntheticSource


def merged_to(n: str = "12", output: str = "") -> Pipeline:
    """Synthetic -> FieldStats(stats) whose merged output goes to ``output``."""
    source = SyntheticSource(n=int(n), shape="4x4", fields=("u",))
    return Pipeline(source).filter(FieldStats(name="stats", output=output or None))
