"""The elastic task program as a command (``hpc-curate task``), for arrays and --elastic."""

from __future__ import annotations

import sys

import click


@click.command("task")
@click.option("--run-dir", required=True, help="Run directory.")
@click.option("--attempt", type=int, required=True, help="Elastic attempt to work on.")
@click.option(
    "--task",
    "task_id",
    type=int,
    default=None,
    help="Task number (default: $SLURM_ARRAY_TASK_ID, offset by the array's first id).",
)
@click.option("--task-offset", type=int, default=0, help="Added to the array task id.")
@click.option(
    "--workers", type=int, default=1, help="Claiming processes per array task (srun tasks)."
)
@click.option("--finish", is_flag=True, help="Only end the attempt if no task did (finisher).")
def task_cmd(
    run_dir: str, attempt: int, task_id: int | None, task_offset: int, workers: int, finish: bool
) -> None:
    """One elastic task: claim chunks of the attempt's pending indices until none is left.

    Started by a Slurm job array (submit --array N) or by run --elastic N; no MPI. The task
    that finds every chunk done merges and writes the manifest.
    """
    from hpc_curator.engine.tasks import finalize, task_main
    from hpc_curator.errors import UsageError
    from hpc_curator.slurm.env import slurm_env

    if finish:
        result = finalize(run_dir, attempt)
        if result is not None:
            click.echo(result.message, err=True)
            sys.exit(result.exit_code)
        return
    env = slurm_env()
    if task_id is None:
        if env.array_task_id is None:
            raise UsageError("task needs --task N outside a Slurm job array")
        # K workers per array task: srun task p of array task a is elastic task a*K + p
        task_id = (int(env.array_task_id) + task_offset) * workers + (env.proc_id or 0)
    code, line = task_main(run_dir, attempt, task_id, env.restart_count)
    click.echo(line, err=True)
    sys.exit(code)


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    group.add_command(task_cmd)
