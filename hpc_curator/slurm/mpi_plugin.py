"""Which ``srun --mpi`` plugin a run needs: from the MPI library mpi4py will load.

MPICH (the PyPI wheel included) and Intel MPI speak PMI-2 under srun; Open MPI 4 and 5 need
PMIx (under ``pmi2`` every Open MPI rank comes up as a singleton; under ``pmix`` the MPICH
wheel dies in ``MPI_Init`` with "unsupported PMI version"; Intel MPI works under both,
measured with ``impi-rt`` 2021.18 and Slurm 22.05's PMIx 4 server). ``--mpi auto`` (the default)
chooses accordingly; an explicit choice known not to work with the library is refused before
anything is submitted, and the choice must be one the cluster's srun offers
(``srun --mpi=list``).
"""

from __future__ import annotations

import re
import shutil
import subprocess

from hpc_curator.errors import LaunchError, UsageError
from hpc_curator.world import vendor_of as vendor_of

#: srun plugin per MPI vendor.
PLUGIN_FOR = {"MPICH": "pmi2", "Intel MPI": "pmi2", "Open MPI": "pmix"}
#: plugins that cannot work with a vendor, and what happens
BAD = {
    ("MPICH", "pmix"): "MPI_Init fails with 'unsupported PMI version'",
    ("Open MPI", "pmi2"): "every rank comes up as an MPI singleton",
}


def local_vendor() -> str | None:
    """The vendor of the MPI library mpi4py loads in this environment (MPI not started)."""
    from hpc_curator.backends.mpi import mpi_library

    try:
        return vendor_of(mpi_library())
    except LaunchError:
        return None


def offered(timeout: float = 15.0) -> list[str] | None:
    """The plugins ``srun --mpi=list`` offers (``None`` when it cannot tell)."""
    if shutil.which("srun") is None:
        return None
    try:
        proc = subprocess.run(
            ["srun", "--mpi=list"], capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = proc.stdout + proc.stderr
    names = re.findall(r"^\s*(?:srun:\s*)?(?:mpi/)?([a-z][a-z0-9_]*)\s*$", text, re.M)
    names = [n for n in names if n not in ("srun", "mpi")]
    return names or None


def choose(
    requested: str, vendor: str | None, plugins: list[str] | None, *, strict: bool = True
) -> str:
    """The plugin to use for ``requested`` (``auto`` or explicit).

    With ``strict`` (the job runs the library ``vendor`` names) an explicit plugin known not
    to work with it is refused.

    Raises
    ------
    UsageError
        An explicit plugin known not to work with ``vendor``.
    LaunchError
        The plugin is not one the cluster offers.
    """
    if requested == "auto":
        if vendor is None:
            choice = "pmi2"  # the most common, and what MPICH derivatives (Cray) speak
        else:
            choice = PLUGIN_FOR[vendor]
    else:
        choice = requested
        problem = BAD.get((vendor or "", choice)) if strict else None
        if problem:
            raise UsageError(
                f"--mpi {choice} does not work with {vendor} ({problem})",
                f"use --mpi {PLUGIN_FOR[vendor or 'MPICH']}, or --mpi auto",
            )
    if (
        plugins is not None
        and choice != "none"
        and not any(p == choice or p.startswith(choice + "_") for p in plugins)
    ):
        raise LaunchError(
            f"this cluster's srun does not offer --mpi={choice} "
            f"(srun --mpi=list: {', '.join(plugins)})",
            "ask your admins, or use an MPI whose plugin is offered",
        )
    return choice
