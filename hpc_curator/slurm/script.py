"""Render sbatch scripts: one renderer for submit, ``--dry-run`` and ``sbatch-script``.

The template is package data (``hpc_curator/slurm/templates/mpi.sbatch``, read through
:mod:`importlib.resources`, so a normal wheel install renders scripts too); the top-level
``slurm_templates/`` holds an identical copy for users who write their own scripts (a test
keeps the two equal). The renderer fills four blocks: ``#SBATCH`` lines from
:class:`SlurmOptions`, the setup lines, the environment exports and the ``srun`` line.

Nothing can add an ``#SBATCH`` line or a command: values with newlines or control characters
are refused (:class:`SlurmOptions`, and here for paths), every value on a shell line is quoted
with :func:`shlex.quote`, ``%`` in paths is doubled for Slurm's filename patterns, setup lines
may not hold ``#SBATCH``, and the rendered script must pass ``bash -n``.
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from hpc_curator.runtime.world import EXPECTED_SIZE_ENV, THREAD_VARS
from hpc_curator.slurm.mpi_plugin import pmi2_retry
from hpc_curator.slurm.options import SlurmOptions, check_value
from hpc_curator.slurm.requeue import requeue_exports, srun_block

DEFAULT_TEMPLATE = "mpi.sbatch"


def template_text(name: str = DEFAULT_TEMPLATE) -> str:
    """A template shipped with the package."""
    return resources.files("hpc_curator.slurm").joinpath("templates", name).read_text()


def sbatch_flag(key: str, value: str | int | None) -> str:
    """One ``#SBATCH --key[=value]`` line, double-quoted where sbatch needs it."""
    if value is None or value == "":
        return f"#SBATCH --{key}"
    text = str(value)
    if all(c.isalnum() or c in "-_.:,@%/=+[]" for c in text):
        return f"#SBATCH --{key}={text}"
    if '"' in text:
        from hpc_curator.errors import UsageError

        raise UsageError(
            f"--{key} value {text!r} contains a double quote",
            "sbatch cannot read it back from an #SBATCH line; remove it",
        )
    return f'#SBATCH --{key}="{text}"'  # sbatch's own parser understands double quotes


def sbatch_lines(opts: SlurmOptions, log_pattern: str) -> list[str]:
    """The ``#SBATCH`` lines, in a fixed order (stable golden files)."""
    pairs: list[tuple[str, str | int | None]] = [
        ("job-name", opts.job_name),
        ("nodes", opts.nodes),
        ("ntasks-per-node", opts.ntasks_per_node),
    ]
    optional: list[tuple[str, str | int | None]] = [
        ("cpus-per-task", opts.cpus_per_task),
        ("time", opts.time),
        ("partition", opts.partition),
        ("account", opts.account),
        ("qos", opts.qos),
        ("mem", opts.mem),
        ("gpus-per-node", opts.gpus_per_node),
        # --gpus-per-rank alone asks Slurm for the GPUs too, bound one set per task
        ("gpus-per-task", opts.gpus_per_rank if not opts.gpus_per_node else None),
        ("constraint", opts.constraint),
        ("dependency", opts.dependency),
        ("begin", opts.begin),
    ]
    pairs += [(k, v) for k, v in optional if v is not None]
    if opts.exclusive:
        pairs.append(("exclusive", None))
    pairs += [
        ("signal", f"USR2@{opts.signal_delay}"),
        ("requeue" if opts.requeue else "no-requeue", None),
        ("open-mode", "append"),
        ("output", log_pattern.replace("%t", "0") + ".out"),
        ("error", log_pattern.replace("%t", "0") + ".err"),
    ]
    pairs += list(opts.sbatch_opts)
    return [sbatch_flag(k, v) for k, v in pairs]


def srun_command(
    opts: SlurmOptions,
    payload: Sequence[str],
    log_pattern: str,
    run_dir: str | Path | None = None,
    workdir: str | Path | None = None,
) -> str:
    """The ``srun`` line: MPI plugin, per-task logs, user srun args, then the payload.

    With a container or launch prefix the payload is wrapped (:mod:`hpc_curator.runtime.container`);
    ``run_dir`` and ``workdir`` (the job's working directory) are then bound in.
    """
    box = opts.container_spec
    if box.active:
        if run_dir is None:
            raise ValueError("a container needs the run directory to bind")
        payload = box.wrap(list(payload), run_dir, workdir)
    args = [
        "srun",
        "--unbuffered",
        f"--mpi={opts.mpi}",
        "--kill-on-bad-exit=1",
        "--output",
        f"{log_pattern}.out",
        "--error",
        f"{log_pattern}.err",
        # with --gpus-per-node as well, srun cuts each task's share itself
        *(
            [f"--gpus-per-task={opts.gpus_per_rank}"]
            if opts.gpus_per_rank and opts.gpus_per_node
            else []
        ),
        *opts.srun_args,
        *(box.srun_args(run_dir, workdir) if run_dir is not None else []),
        *payload,
    ]
    return " ".join(shlex.quote(a) for a in args)


def setup_lines(opts: SlurmOptions) -> list[str]:
    """``module load`` lines, then the user's setup lines, then what the container needs."""
    lines = [f"module load {shlex.quote(m)}" for m in opts.modules]
    return [*lines, *opts.setup, *opts.container_spec.shell_lines()]


def render(
    opts: SlurmOptions,
    payload: Sequence[str],
    *,
    log_pattern: str,
    env: dict[str, str] | None = None,
    template: str | Path | None = None,
    requeue_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    workdir: str | Path | None = None,
) -> str:
    """Render the sbatch script.

    Parameters
    ----------
    opts
        The validated Slurm settings.
    payload
        The command every task runs (argv list; quoted here).
    log_pattern
        Per-task log path without suffix, with Slurm patterns, e.g. ``D/slurm/logs/%j_%t``.
    env
        Extra exported variables.
    template
        Template path (default: the package's ``templates/mpi.sbatch``).
    requeue_dir
        Where rank 0 leaves its requeue request (the run's ``slurm/`` directory). With it,
        and unless ``opts`` forbid requeues, the script requeues the job after ``srun``
        returns when rank 0 asked for it (:mod:`hpc_curator.slurm.requeue`).
    run_dir
        The run directory (bound into a container; needed with ``opts.container``).
    workdir
        The job's working directory, bound into a container too (default: this one, where
        sbatch starts the job).
    """
    text = Path(template).read_text() if template else template_text()
    check_value("--run-dir", log_pattern)
    for part in [*payload, str(requeue_dir or ""), *(env or {}).values()]:
        check_value("a value of the job's command", part)
    exports = {EXPECTED_SIZE_ENV: str(opts.world_size), **(env or {})}
    workdir = workdir or Path.cwd()  # sbatch starts the job where it was submitted from
    run_line = srun_command(opts, payload, log_pattern, run_dir, workdir)
    if opts.mpi == "pmi2":
        run_line = pmi2_retry(run_line, log_pattern)
    if requeue_dir is not None and opts.requeue and opts.max_requeues > 0:
        exports.update(requeue_exports(requeue_dir, opts.max_requeues))
        run_line = srun_block(run_line)
    if opts.cpus_per_task:
        # srun (Slurm >= 22.05) no longer inherits --cpus-per-task from the allocation
        exports["SRUN_CPUS_PER_TASK"] = str(opts.cpus_per_task)
    threads = opts.cpus_per_task or 1
    # one BLAS/OpenMP thread per CPU of the rank, unless the user's setup chose otherwise
    thread_caps = [f"export {v}=${{{v}:-{threads}}}" for v in THREAD_VARS]
    text = string.Template(text).substitute(
        sbatch_lines="\n".join(sbatch_lines(opts, log_pattern)),
        setup_lines="\n".join(setup_lines(opts)) or ":",
        env_lines="\n".join(
            [*(f"export {k}={shlex.quote(v)}" for k, v in exports.items()), *thread_caps]
        ),
        srun_command=run_line,
    )
    check_syntax(text)
    return text


def check_syntax(script: str) -> None:
    """Refuse a script ``bash -n`` rejects (e.g. an unbalanced quote in ``--setup``).

    Raises
    ------
    UsageError
        With bash's first complaint.
    """
    import shutil
    import subprocess

    from hpc_curator.errors import UsageError

    if shutil.which("bash") is None:
        return
    proc = subprocess.run(
        ["bash", "-n"], input=script, capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["syntax error"])[0]
        raise UsageError(
            f"the job script would not run: bash -n says: {first.removeprefix('bash: ')}",
            "check the quoting of your --setup lines",
        )
