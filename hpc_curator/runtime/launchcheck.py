"""Refuse, before ``mpiexec`` starts, a rank command that cannot run (exit 5, one line).

``run --ranks N --python X`` and ``--launch-prefix 'CMD ...'`` put user commands in front of
every rank. When one does not exist, or ``--python`` is not a Python that can import
hpc-curator (``/bin/true``, a venv without it), Hydra prints an ``execvp error`` per rank, or
the ranks exit at once without a word, and the exit code was Hydra's 255 or a bare 1 or even
0 ("incomplete"). :func:`check_rank_command` finds these here, with one line naming the
command, and the launcher's exit code 5.

Inside a container (``--container``) the Python is the image's: only the launch prefix and
the runtime are looked up here.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence

from hpc_curator.errors import LaunchError
from hpc_curator.runtime.container import Container

#: What the probe prints when ``--python`` is a Python that imports this package
_MARK = "hpc-curator-python-ok"
_PROBE = f"import hpc_curator, sys; sys.stdout.write({_MARK!r})"
#: Seconds the probe may take (a cold start on a parallel filesystem can be slow)
PROBE_TIMEOUT = 120.0

_RUNTIME_COMMANDS = {"apptainer": "apptainer", "singularity": "singularity"}
_RUNTIME_COMMANDS["charliecloud"] = "ch-run"


def find_command(word: str, option: str) -> str:
    """The executable ``word`` names (a path, or a name looked up on ``PATH``).

    Parameters
    ----------
    word
        The command's first word.
    option
        The option that gave it, for the message (``--python``, ``--launch-prefix``).

    Raises
    ------
    LaunchError
        (exit 5) No such file, not executable, or not found on ``PATH``.
    """
    if os.sep in word:
        if not os.path.exists(word):
            raise LaunchError(f"{option}: {word} does not exist", "give an existing command")
        if os.path.isdir(word) or not os.access(word, os.X_OK):
            raise LaunchError(f"{option}: {word} is not an executable file")
        return word
    found = shutil.which(word)
    if found is None:
        raise LaunchError(
            f"{option}: command {word!r} not found on PATH",
            "install it, or give its full path",
        )
    return found


def check_python(argv: Sequence[str]) -> None:
    """Run ``argv -c 'import hpc_curator'`` once: is it a Python the ranks can use?

    Raises
    ------
    LaunchError
        (exit 5) It does not exist, fails, or prints nothing (``/bin/true``).
    """
    shown = shlex.join(argv)
    find_command(argv[0], "--python")
    try:
        proc = subprocess.run(
            [*argv, "-c", _PROBE],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=PROBE_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise LaunchError(f"--python {shown} did not answer within {PROBE_TIMEOUT:g} s") from None
    except OSError as exc:
        raise LaunchError(f"--python {shown} cannot be started: {exc.strerror}") from None
    if _MARK in proc.stdout:
        return
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    why = lines[-1].strip() if lines else f"it exited with code {proc.returncode}, printing nothing"
    raise LaunchError(
        f"--python {shown} is not a Python that can import hpc_curator ({why})",
        "give the python of an environment where hpc-curator is installed",
    )


def check_rank_command(python: Sequence[str] | None, box: Container) -> None:
    """Check what ``run --ranks`` will put before ``-m hpc_curator.engine.rankprog`` on every rank.

    Parameters
    ----------
    python
        ``--python``, split into words (``None``: this process's own interpreter).
    box
        The container and launch prefix.

    Raises
    ------
    LaunchError
        (exit 5) The launch prefix's command or the container runtime is not found, or
        ``--python`` is not a Python with hpc-curator.
    """
    if box.launch_prefix:
        find_command(shlex.split(box.launch_prefix)[0], "--launch-prefix")
    if box.image is not None:
        runtime = _RUNTIME_COMMANDS.get(box.runtime)
        if runtime is not None:
            find_command(runtime, f"--container-runtime {box.runtime}")
        return  # the ranks' Python is the image's: not visible from here
    if python:
        check_python(python)


def not_started(n: int, returncode: int) -> LaunchError:
    """The error of an ``mpiexec -n n`` that ended before any rank began the attempt.

    Its ranks' command could not start (Hydra's ``execvp error``), MPI failed, or the ranks
    exited at once: a launcher error (exit 5), whatever ``mpiexec``'s own code was.
    """
    how = f"failed (exit code {returncode})" if returncode else "exited"
    return LaunchError(
        f"mpiexec -n {n} {how} before the run started; see the ranks' messages above"
    )
