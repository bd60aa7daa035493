"""Option groups defined once and shared by several commands."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import click

from hpc_curator.config import Lines

F = Callable[..., Any]


def failure_budget(value: str | None) -> tuple[float | None, float | None]:
    """Parse ``--max-failures``: a count (``10``) or a fraction (``0.01`` or ``1%``).

    Returns ``(count, fraction)``: ``100%`` is every index, not one failure.
    """
    if value is None:
        return None, None
    text = value.strip()
    percent = text.endswith("%")
    try:
        number = float(text[:-1] if percent else text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a count or a fraction (e.g. 10, 0.01, 1%)"
        ) from None
    if not math.isfinite(number):
        raise click.BadParameter(f"{value!r} is not a finite number (e.g. 10, 0.01, 1%)")
    if number < 0:
        raise click.BadParameter(f"{value!r} must not be negative")
    if percent:
        if number > 100:
            raise click.BadParameter(f"{value!r} is more than 100%")
        return None, number / 100
    if number < 1 and number != 0:
        return None, number
    if number != int(number):
        raise click.BadParameter(f"{value!r}: a count must be a whole number (or use a %)")
    return number, None


def settings_options(f: F) -> F:
    """Commit, schedule and failure-budget options (→ ``RunSettings``)."""
    opts = [
        click.option(
            "--commit-every",
            type=click.IntRange(min=1),
            default=1000,
            show_default=True,
            help="Commit (flush shards + journal) after this many indices.",
        ),
        click.option(
            "--commit-seconds",
            type=click.FloatRange(min=0.001),
            default=30.0,
            show_default=True,
            help="... or after this many seconds.",
        ),
        click.option(
            "--max-failures",
            default=None,
            metavar="N|FRACTION",
            help="Stop once more indices failed than this (count, 0.01 or 1%).",
        ),
        click.option(
            "--schedule",
            type=click.Choice(["strided", "block", "dynamic"]),
            default="strided",
            show_default=True,
            help="How pending indices are split across ranks.",
        ),
        click.option(
            "--chunk-size",
            type=click.IntRange(min=1),
            default=None,
            help="Indices per claim with --schedule dynamic.",
        ),
        click.option("--retry-failed", is_flag=True, help="Re-run only the failed indices."),
        click.option(
            "--index-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            metavar="SECONDS",
            help="Fail an index that runs longer (one stuck in C code ends its rank).",
        ),
        click.option(
            "--max-index-crashes",
            type=click.IntRange(min=0),
            default=2,
            show_default=True,
            help="Record an index as failed once it killed its rank this often (0: never).",
        ),
        click.option(
            "--accept-code-change",
            is_flag=True,
            help="Continue although the pipeline's code changed since the run began.",
        ),
        click.option(
            "--track-memory",
            is_flag=True,
            help="Record each index's peak Python memory (tracemalloc; slows allocation ~2x).",
        ),
        click.option(
            "--track-gpu",
            is_flag=True,
            help="Record each index's peak GPU memory (torch.cuda; needs PyTorch and a GPU).",
        ),
        click.option(
            "--no-fsync", is_flag=True, hidden=True, help="Do not fsync journals (benchmarks only)."
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def make_settings(kw: dict[str, Any]) -> Any:
    """Pop the settings options from ``kw`` into a ``RunSettings``."""
    from hpc_curator.engine.values import RunSettings

    budget = failure_budget(kw.pop("max_failures"))
    return RunSettings(
        commit_every=kw.pop("commit_every"),
        commit_seconds=kw.pop("commit_seconds"),
        max_failures=budget[0],
        max_failure_fraction=budget[1],
        schedule=kw.pop("schedule"),
        chunk_size=kw.pop("chunk_size"),
        retry_failed=kw.pop("retry_failed"),
        fsync=not kw.pop("no_fsync"),
        accept_code_change=kw.pop("accept_code_change"),
        index_timeout=kw.pop("index_timeout"),
        max_index_crashes=kw.pop("max_index_crashes"),
        track_memory=kw.pop("track_memory"),
        track_gpu=kw.pop("track_gpu"),
    )


def spec_options(f: F) -> F:
    """``--param`` and ``--indices``."""
    f = click.option(
        "--indices",
        default=None,
        metavar="SEL",
        help="Indices to run, e.g. 0:1000,2000:3000:2 (default: all).",
    )(f)
    f = click.option(
        "-p",
        "--param",
        "params",
        multiple=True,
        metavar="KEY=VALUE",
        help="Parameter for the pipeline factory (repeatable).",
    )(f)
    return f


SLURM_FIELDS = (
    "nodes",
    "ntasks_per_node",
    "cpus_per_task",
    "time",
    "partition",
    "account",
    "qos",
    "mem",
    "gpus_per_node",
    "gpus_per_rank",
    "constraint",
    "exclusive",
    "job_name",
    "mpi",
    "setup",
    "sbatch_opt",
    "srun_arg",
    "dependency",
    "begin",
    "signal_delay",
    "max_requeues",
    "no_requeue",
    "python",
    "module",
    "container",
    "container_runtime",
    "container_bind",
    "launch_prefix",
    "array",
    "array_parallel",
    "workers",
)


def slurm_options(f: F) -> F:
    """Slurm resource and launch options; every default is ``None`` (= not given)."""
    opts = [
        click.option("--nodes", type=int, default=None, help="Nodes (default 1)."),
        click.option(
            "--ntasks-per-node", type=int, default=None, help="MPI ranks per node (default 1)."
        ),
        click.option("--cpus-per-task", type=int, default=None, help="CPUs per rank."),
        click.option("--time", default=None, help="Time limit, e.g. 30, 2:00:00, 1-12:00:00."),
        click.option("--partition", default=None, help="Slurm partition."),
        click.option("--account", default=None, help="Slurm account."),
        click.option("--qos", default=None, help="Slurm QOS."),
        click.option("--mem", default=None, help="Memory per node, e.g. 64G."),
        click.option("--gpus-per-node", type=int, default=None, help="GPUs per node."),
        click.option(
            "--gpus-per-rank",
            type=int,
            default=None,
            help="GPUs each rank sees (bound by node-local rank: CUDA_VISIBLE_DEVICES).",
        ),
        click.option("--constraint", default=None, help="Node features, e.g. 'a100&ib'."),
        click.option("--exclusive", is_flag=True, default=None, help="Whole nodes."),
        click.option("--job-name", default=None, help="Job name (default hpc-curate)."),
        click.option(
            "--mpi",
            type=click.Choice(["auto", "pmi2", "pmix", "none"]),
            default=None,
            help="srun --mpi plugin (default auto: pmi2 for MPICH/Intel MPI, pmix for Open MPI).",
        ),
        click.option(
            "--module",
            multiple=True,
            metavar="NAME",
            help="Environment module to load before srun (repeatable).",
        ),
        click.option(
            "--setup",
            multiple=True,
            metavar="LINE",
            type=Lines(),
            help="Shell line run before srun, e.g. 'source venv/bin/activate' (repeatable).",
        ),
        click.option(
            "--sbatch-opt",
            multiple=True,
            metavar="KEY=VALUE",
            help="Extra sbatch option (repeatable).",
        ),
        click.option(
            "--srun-arg", multiple=True, metavar="ARG", help="Extra srun argument (repeatable)."
        ),
        click.option("--dependency", default=None, help="sbatch --dependency, e.g. afterok:123."),
        click.option("--begin", default=None, help="sbatch --begin, e.g. now+1hour."),
        click.option(
            "--signal-delay",
            type=int,
            default=None,
            help="Seconds before the time limit to commit and requeue (default 90).",
        ),
        click.option(
            "--max-requeues", type=int, default=None, help="Requeues after time limits (default 3)."
        ),
        click.option(
            "--no-requeue",
            is_flag=True,
            default=None,
            help="Never requeue (the run stays resumable with hpc-curate resume).",
        ),
        click.option(
            "--python",
            default=None,
            help="Python on the compute nodes (default: this interpreter; python3 in a "
            "container). May be a command: 'conda run -n env python'.",
        ),
        click.option(
            "--array",
            type=int,
            default=None,
            metavar="N",
            help="An elastic job array of N tasks claiming chunks (no MPI) instead of one MPI job.",
        ),
        click.option(
            "--array-parallel",
            type=int,
            default=None,
            metavar="P",
            help="With --array: at most P tasks at once (%P).",
        ),
        click.option(
            "--workers",
            type=int,
            default=None,
            metavar="K",
            help="With --array: K claiming processes per array task (a small in-task pool).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return container_options(f)


def container_options(f: F) -> F:
    """``--container``, ``--container-runtime``, ``--container-bind``, ``--launch-prefix``."""
    from hpc_curator.runtime.container import RUNTIMES

    opts = [
        click.option(
            "--container",
            default=None,
            metavar="IMAGE",
            help="Run every rank inside this image (run dir and work dir bound in).",
        ),
        click.option(
            "--container-runtime",
            type=click.Choice(RUNTIMES),
            default=None,
            help="Container runtime (default apptainer).",
        ),
        click.option(
            "--container-bind",
            multiple=True,
            metavar="SRC[:DST]",
            help="Extra bind mount into the container (repeatable).",
        ),
        click.option(
            "--launch-prefix",
            default=None,
            metavar="'CMD ...'",
            help="Command placed before python on every rank, e.g. 'numactl -l'.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def make_container(kw: dict[str, Any], gpus: bool = False) -> Any:
    """Pop the container options from ``kw`` into a ``Container``."""
    from hpc_curator.runtime.container import Container

    return Container(
        image=kw.pop("container"),
        runtime=kw.pop("container_runtime") or "apptainer",
        binds=tuple(kw.pop("container_bind")),
        launch_prefix=kw.pop("launch_prefix"),
        gpus=gpus,
    )


def slurm_changes(kw: dict[str, Any]) -> dict[str, Any]:
    """Pop the Slurm options from ``kw``; return the ``SlurmOptions`` fields that were given."""
    from hpc_curator.slurm.options import parse_sbatch_opts

    raw = {name: kw.pop(name) for name in SLURM_FIELDS}
    changes = {
        k: v
        for k, v in raw.items()
        if v is not None
        and k not in ("setup", "sbatch_opt", "srun_arg", "no_requeue", "module", "container_bind")
    }
    if raw["module"]:
        changes["modules"] = tuple(raw["module"])
    if raw["container_bind"]:
        changes["container_bind"] = tuple(raw["container_bind"])
    if raw["setup"]:
        changes["setup"] = tuple(raw["setup"])
    if raw["sbatch_opt"]:
        changes["sbatch_opts"] = parse_sbatch_opts(raw["sbatch_opt"])
    if raw["srun_arg"]:
        changes["srun_args"] = tuple(raw["srun_arg"])
    if raw["no_requeue"]:
        changes["requeue"] = False
    return changes
