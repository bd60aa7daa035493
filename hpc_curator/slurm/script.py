"""Render sbatch scripts: one renderer for submit, ``--dry-run`` and ``sbatch-script``.

The template lives in ``slurm_templates/`` (shared with users who write their own scripts). The
renderer fills four blocks: ``#SBATCH`` lines from :class:`SlurmOptions`, the setup lines, the
environment exports and the ``srun`` line. Every value placed on a shell line is quoted with
:func:`shlex.quote`; values with newlines or control characters were already refused by
:class:`SlurmOptions`, so nothing can add an ``#SBATCH`` line or a command.
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Sequence
from pathlib import Path

from hpc_curator.slurm.options import SlurmOptions
from hpc_curator.slurm.requeue import requeue_exports, srun_block
from hpc_curator.world import EXPECTED_SIZE_ENV, THREAD_VARS

TEMPLATES = Path(__file__).resolve().parent / "templates"
DEFAULT_TEMPLATE = "mpi.sbatch"


def _flag(key: str, value: str | int | None) -> str:
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
    return [_flag(k, v) for k, v in pairs]


def srun_command(opts: SlurmOptions, payload: Sequence[str], log_pattern: str) -> str:
    """The ``srun`` line: MPI plugin, per-task logs, user srun args, then the payload."""
    args = [
        "srun",
        "--unbuffered",
        f"--mpi={opts.mpi}",
        "--kill-on-bad-exit=1",
        "--output",
        f"{log_pattern}.out",
        "--error",
        f"{log_pattern}.err",
        *opts.srun_args,
        *payload,
    ]
    return " ".join(shlex.quote(a) for a in args)


def render(
    opts: SlurmOptions,
    payload: Sequence[str],
    *,
    log_pattern: str,
    env: dict[str, str] | None = None,
    template: str | Path | None = None,
    requeue_dir: str | Path | None = None,
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
        Template path (default ``slurm_templates/mpi.sbatch``).
    requeue_dir
        Where rank 0 leaves its requeue request (the run's ``slurm/`` directory). With it,
        and unless ``opts`` forbid requeues, the script requeues the job after ``srun``
        returns when rank 0 asked for it (:mod:`hpc_curator.slurm.requeue`).
    """
    path = Path(template) if template else TEMPLATES / DEFAULT_TEMPLATE
    exports = {EXPECTED_SIZE_ENV: str(opts.world_size), **(env or {})}
    run_line = srun_command(opts, payload, log_pattern)
    if requeue_dir is not None and opts.requeue and opts.max_requeues > 0:
        exports.update(requeue_exports(requeue_dir, opts.max_requeues))
        run_line = srun_block(run_line)
    if opts.cpus_per_task:
        # srun (Slurm >= 22.05) no longer inherits --cpus-per-task from the allocation
        exports["SRUN_CPUS_PER_TASK"] = str(opts.cpus_per_task)
    threads = opts.cpus_per_task or 1
    # one BLAS/OpenMP thread per CPU of the rank, unless the user's setup chose otherwise
    thread_caps = [f"export {v}=${{{v}:-{threads}}}" for v in THREAD_VARS]
    text = string.Template(path.read_text()).substitute(
        sbatch_lines="\n".join(sbatch_lines(opts, log_pattern)),
        setup_lines="\n".join(opts.setup) or ":",
        env_lines="\n".join(
            [*(f"export {k}={shlex.quote(v)}" for k, v in exports.items()), *thread_caps]
        ),
        srun_command=run_line,
    )
    return text
