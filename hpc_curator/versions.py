"""Versions of Python, hpc-curator and its core dependencies, as recorded in ``run.json``."""

from __future__ import annotations

import os
import platform
import sys

#: The distributions whose versions a run records.
PACKAGES = ("hpc-curator", "numpy", "h5py", "pyarrow", "mpi4py", "submitit")


def versions() -> dict[str, str]:
    """Versions of Python, the package and its core dependencies.

    A package imported already tells its ``__version__``; the others are read from the names
    of their ``.dist-info`` directories on ``sys.path`` (one listing per entry) rather than
    through ``importlib.metadata``, whose import alone cost rank 0 ~10 ms before every run.
    """
    packages = PACKAGES
    out: dict[str, str] = {}
    wanted: dict[str, str] = {}
    for pkg in packages:
        version = getattr(sys.modules.get(pkg.replace("-", "_")), "__version__", None)
        if version:
            out[pkg] = str(version)
        else:
            wanted[pkg.replace("-", "_").lower()] = pkg
    for entry in sys.path if wanted else ():
        try:
            with os.scandir(entry or ".") as it:
                names = [e.name for e in it if e.name.endswith(".dist-info")]
        except OSError:
            continue
        for name in names:
            dist, _, rest = name[: -len(".dist-info")].partition("-")
            pkg = wanted.pop(dist.replace("-", "_").replace(".", "_").lower(), "")
            if pkg and rest:
                out[pkg] = rest
        if not wanted:
            break
    return {"python": platform.python_version(), **{p: out[p] for p in packages if p in out}}
