"""hpc-curator: resumable data-curation pipelines on MPI ranks and Slurm clusters.

Importing this package is cheap: heavy modules (numpy, h5py, pyarrow, mpi4py, submitit) load
only when a name that needs them is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Pipeline": "hpc_curator.model.pipeline",
    "Source": "hpc_curator.model.pipeline",
    "Filter": "hpc_curator.model.pipeline",
    "Sink": "hpc_curator.model.pipeline",
    "StatefulFilter": "hpc_curator.model.pipeline",
    "Param": "hpc_curator.model.pipeline",
    "LegacyStatefulFilter": "hpc_curator.model.legacy",
    "Run": "hpc_curator.query",
    "run_pipeline": "hpc_curator.api",
    "gather_pipeline": "hpc_curator.api",
    "RunConfig": "hpc_curator.api",
    "RunSettings": "hpc_curator.engine.values",
    "RunResult": "hpc_curator.engine.values",
    "RunBackend": "hpc_curator.backends",
    "register_backend": "hpc_curator.backends",
    "get_backend": "hpc_curator.backends",
    "list_backends": "hpc_curator.backends",
    "CuratorError": "hpc_curator.errors",
}

__all__ = [*sorted(_LAZY), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hpc_curator' has no attribute {name!r}")
