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
import shlex
import shutil
import subprocess

from hpc_curator.errors import LaunchError, UsageError
from hpc_curator.runtime.world import vendor_of as vendor_of

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


#: What Slurm's pmi2 plugin logs when a PMI-1 request was longer than it reads (1,024 bytes
#: in Slurm 22.05): it takes the rest of the line for a second request.
PMI2_SPLIT_LINE = "mpi/pmi2: request not begin with 'cmd='"
#: srun tries of a step whose MPI_Init died on :data:`PMI2_SPLIT_LINE`
PMI2_TRIES = 3


def _shell_glob(log_pattern: str) -> str:
    """The step's task logs as a shell glob: ``%j`` the job id, any other ``%x`` a ``*``
    (the MPI job script's patterns: no array ids)."""
    parts = re.split(r"(%%|%[a-zA-Z])", log_pattern + ".err")
    out = []
    for part in parts:
        if part == "%%":
            out.append("%")
        elif part in ("%j", "%J"):
            out.append('"$SLURM_JOB_ID"')
        elif re.fullmatch(r"%[a-zA-Z]", part):
            out.append("*")
        elif part:
            out.append(shlex.quote(part))
    return "".join(out)


def pmi2_retry(srun_line: str, log_pattern: str) -> str:
    """Run the ``srun`` line again (at most :data:`PMI2_TRIES` tries) when the step died in
    ``MPI_Init`` on Slurm's PMI-1 line limit; ``$?`` is the last try's code afterwards.

    MPICH (the PyPI wheel's UCX netmod) splits its address into PMI ``put`` values of up to
    the 1,024 bytes Slurm allows, but the request line adds ``cmd=put kvsname=... key=...``:
    a segment that does not compress (about one step in ten here, more with more ranks) makes
    a line Slurm 22.05 reads as two, and every rank aborts in ``MPI_Init`` before any index
    ran, so starting the step again is safe (it is what a requeue does) and usually works.
    """
    logs = _shell_glob(log_pattern)
    return "\n".join(
        [
            f"for hpc_try in {' '.join(str(k) for k in range(1, PMI2_TRIES + 1))}; do",
            srun_line,
            "status=$?",
            f'[ "$status" -ne 0 ] && [ "$hpc_try" -lt {PMI2_TRIES} ] && '
            f'grep -qsF "{PMI2_SPLIT_LINE}" {logs} || break',
            "echo \"hpc-curator: MPI_Init died on Slurm's pmi2 line limit (PMI-1 request over"
            ' 1,024 bytes); starting the step again (try $((hpc_try + 1)))" >&2',
            "done",
            '(exit "$status")',
        ]
    )
