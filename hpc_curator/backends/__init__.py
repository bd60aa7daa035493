"""Backend registry: one launcher per module, looked up by name.

``register_backend`` adds a :class:`RunBackend` subclass; ``get_backend`` returns an instance
(with a one-line error naming the valid choices or the pip command for missing packages);
``list_backends`` reports availability. Modules are imported lazily, so listing backends never
imports dask, joblib or mpi4py.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from hpc_curator.backends.base import RunBackend
from hpc_curator.errors import BackendError

_BUILTIN = {
    "sequential": ("hpc_curator.backends.sequential", "SequentialBackend", (), None),
    "process_pool": ("hpc_curator.backends.process_pool", "ProcessPoolBackend", (), None),
    "loky": ("hpc_curator.backends.loky", "LokyBackend", ("joblib",), "loky"),
    "dask": ("hpc_curator.backends.dask", "DaskBackend", ("dask",), "dask"),
    "mpi": ("hpc_curator.backends.mpi", "MPIBackend", ("mpi4py",), "local-mpi"),
    "elastic": ("hpc_curator.backends.elastic", "ElasticBackend", (), None),
}
_REGISTERED: dict[str, type[RunBackend]] = {}


@dataclass(frozen=True)
class BackendInfo:
    """A row of :func:`list_backends`."""

    name: str
    available: bool
    requires: tuple[str, ...]
    missing: tuple[str, ...]
    install: str | None
    description: str


def register_backend(
    cls: type[RunBackend], name: str | None = None, *, replace: bool = False
) -> type[RunBackend]:
    """Register a backend class under ``name`` (default ``cls.name``); usable as a decorator.

    Raises
    ------
    BackendError
        When ``name`` is taken (a built-in or an earlier registration) and not ``replace``.
    """
    key = name or cls.name
    if not replace and (key in _BUILTIN or key in _REGISTERED) and _REGISTERED.get(key) is not cls:
        raise BackendError(
            f"a backend named {key!r} exists already",
            "choose another name, or pass replace=True to replace it",
        )
    _REGISTERED[key] = cls
    return cls


def _load(name: str) -> type[RunBackend]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    module, attr, _, _ = _BUILTIN[name]
    return getattr(importlib.import_module(module), attr)


def _missing(name: str) -> tuple[str, ...]:
    import importlib.util

    requires = _REGISTERED[name].requires if name in _REGISTERED else _BUILTIN[name][2]
    return tuple(m for m in requires if importlib.util.find_spec(m) is None)


def backend_names() -> list[str]:
    """Every known backend name."""
    return list(dict.fromkeys([*_BUILTIN, *_REGISTERED]))


def get_backend(name: str, **options: Any) -> RunBackend:
    """Return an instance of backend ``name``, built with ``options`` (its constructor's
    keyword arguments, e.g. ``mpiexec=``, ``container=`` for ``mpi``).

    Raises
    ------
    BackendError
        Unknown name (with the valid list) or missing packages (with the pip command).
    """
    if name not in _BUILTIN and name not in _REGISTERED:
        raise BackendError(
            f"unknown backend {name!r}", f"choose one of: {', '.join(backend_names())}"
        )
    missing = _missing(name)
    if missing:
        extra = _BUILTIN.get(name, (None, None, None, None))[3]
        how = f"pip install 'hpc-curator[{extra}]'" if extra else f"pip install {' '.join(missing)}"
        raise BackendError(f"backend {name!r} needs {', '.join(missing)}", how)
    return _load(name)(**options)


def list_backends() -> list[BackendInfo]:
    """Every backend with its availability and required packages."""
    rows = []
    for name in backend_names():
        if name in _REGISTERED:
            cls = _REGISTERED[name]
            requires, extra, desc = cls.requires, None, cls.description
        else:
            requires, extra = _BUILTIN[name][2], _BUILTIN[name][3]
            desc = _DESCRIPTIONS.get(name, "")
        missing = _missing(name)
        install = (f"pip install 'hpc-curator[{extra}]'" if extra else None) if missing else None
        rows.append(BackendInfo(name, not missing, tuple(requires), missing, install, desc))
    return rows


_DESCRIPTIONS = {
    "sequential": "this process, one index after another",
    "process_pool": "concurrent.futures process pool on this machine",
    "loky": "joblib.Parallel with the loky process pool",
    "dask": "dask.bag with the processes scheduler",
    "mpi": "mpiexec -n N ranks of the rank program (local MPI)",
    "elastic": "N independent processes claiming chunks (the job-array mode, locally)",
}

__all__ = [
    "BackendInfo",
    "RunBackend",
    "backend_names",
    "get_backend",
    "list_backends",
    "register_backend",
]
