"""Versions of Python, hpc-curator and its core dependencies, as recorded in ``run.json``."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterable

#: The distributions whose versions a run records.
PACKAGES = ("hpc-curator", "numpy", "h5py", "pyarrow", "mpi4py", "submitit")


def _key(name: str) -> str:
    """A distribution name as its ``.dist-info`` directory spells it (``impi-rt``: ``impi_rt``)."""
    return name.replace("-", "_").replace(".", "_").lower()


def installed(names: Iterable[str]) -> dict[str, str]:
    """The versions of those of ``names`` installed on ``sys.path``: ``{name: version}``.

    Read from the names of their ``.dist-info`` directories (one listing per path entry, and
    none once all are found) rather than through ``importlib.metadata``, whose import alone
    cost every launch and rank 0 ~10-15 ms.
    """
    wanted = {_key(n): n for n in names}
    found: dict[str, str] = {}
    for entry in sys.path if wanted else ():
        try:
            with os.scandir(entry or ".") as it:
                dirs = [e.name for e in it if e.name.endswith(".dist-info")]
        except OSError:
            continue
        for name in dirs:
            dist, _, version = name[: -len(".dist-info")].partition("-")
            pkg = wanted.pop(_key(dist), "")
            if pkg and version:
                found[pkg] = version
        if not wanted:
            break
    return found


def versions() -> dict[str, str]:
    """Versions of Python, the package and its core dependencies (a package imported already
    tells its ``__version__``; the others are looked up by :func:`installed`)."""
    out: dict[str, str] = {}
    for pkg in PACKAGES:
        version = getattr(sys.modules.get(pkg.replace("-", "_")), "__version__", None)
        if version:
            out[pkg] = str(version)
    out.update(installed(p for p in PACKAGES if p not in out))
    return {"python": platform.python_version(), **{p: out[p] for p in PACKAGES if p in out}}
