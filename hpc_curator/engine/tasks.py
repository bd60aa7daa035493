"""The elastic task program: claim chunks, run them, and let the last task merge.

:func:`begin_elastic` starts an attempt and publishes its claim board
(:class:`hpc_curator.engine.elastic.Board`); :func:`task_main` is what each task runs (a Slurm array
task, or one of ``run --elastic N``'s processes): the same rank loop as every launcher, fed
with the indices of the chunks it claims, committing at every chunk end. The task that sees
every chunk done merges and writes the manifest; :func:`finalize` does it for an attempt whose
tasks all left without (a task died holding a claim nobody was left to reclaim): the manifest
then says ``incomplete`` and which indices are pending.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from hpc_curator.engine.attempt import begin, end
from hpc_curator.engine.elastic import Board, committed_in, heartbeat, heartbeat_interval
from hpc_curator.engine.rank import RankLoop, work
from hpc_curator.engine.signals import StopFlag, stop_on_signals
from hpc_curator.engine.values import Plan, RunResult, RunSettings, exit_code_for
from hpc_curator.model import spec as specmod
from hpc_curator.model.pipeline import Pipeline
from hpc_curator.runtime import gpus
from hpc_curator.runtime.world import NO_MPI_ENV, World
from hpc_curator.slurm.env import slurm_env
from hpc_curator.store import fold, rundir


def begin_elastic(
    run_dir: str,
    settings: RunSettings,
    n_tasks: int,
    launcher: str,
    *,
    spec: dict[str, Any] | None = None,
    indices: Any = None,
    identity: dict[str, Any] | None = None,
) -> tuple[Plan, int]:
    """Begin an attempt for ``n_tasks`` elastic tasks; return its plan and chunk count."""
    plan, _ = begin(
        run_dir, settings, identity or World().identity(), spec=spec, indices=indices,
        launcher=launcher,
    )  # fmt: skip
    chunks = Board(rundir.RunDir(run_dir), plan.attempt).publish(plan, n_tasks)
    return plan, chunks


def _claimed(
    loop: RankLoop,
    board: Board,
    bounds: np.ndarray,
    task: int,
    n_tasks: int,
    plan: Plan,
    stop: StopFlag,
) -> Iterator[int]:
    n_chunks = len(bounds) - 1
    while not stop:
        got = board.claim(task, n_chunks, n_tasks)
        if got is None and board.gone():
            stop.set("claim board removed")
            return
        if got is None:
            if board.suspects() and not stop.wait(heartbeat_interval()):
                continue  # a claimer may have died: stay to reclaim its chunk
            return
        chunk, generation = got
        part = plan.pending[bounds[chunk] : bounds[chunk + 1]]
        if generation:  # a dead task's chunk: only what no journal committed
            part = part[~np.isin(part, committed_in(board.rd, part))]
        loop.may_commit = lambda c=chunk, g=generation: board.still_mine(c, g)
        loop.generation = generation  # recorded in each commit: the ledger orders by it
        for index in part.tolist():
            yield index
            if stop:
                return
        loop.commit()
        if board.still_mine(chunk, generation):
            board.done(chunk)


def task_main(run_dir: str, attempt: int, task: int, restart: int = 0) -> tuple[int, str]:
    """Run one elastic task; return ``(exit code, one line)``.

    Exit codes: 0 this task's share is done (the run may still be going), 1 some of its
    indices failed, 3 stopped (signal, time limit) or the run incomplete when this task
    finished it, 4/5 as for ranks.
    """
    os.environ.setdefault(NO_MPI_ENV, "1")
    rd = rundir.RunDir(run_dir)
    board = Board(rd, attempt)
    plan, bounds, n_tasks = board.load()
    os.chdir(plan.cwd)
    pipeline = specmod.build(plan.spec)
    rank = task + n_tasks * restart
    # a local --elastic task's GPUs by its task number; an array task's by its Slurm local id
    bound = gpus.bind(rank=None if slurm_env().job_id else task)
    world = World(rank=rank, size=n_tasks, gpus=bound)
    with stop_on_signals(StopFlag()) as stop, heartbeat(board.heartbeat_path(rank)):

        def claimed(loop: RankLoop) -> Iterator[int]:
            return _claimed(loop, board, bounds, rank, n_tasks, plan, stop)

        summary = work(plan, world, pipeline=pipeline, stop=stop, scheduler=claimed)
    if stop.reason == "SIGUSR2":  # time limit near: the job script requeues this task alone
        from hpc_curator.slurm.requeue import request_requeue

        request_requeue()
    result = _finish_if_last(board, plan, pipeline, rank, len(bounds) - 1)
    if result is not None:
        return result.exit_code, result.message
    share = "incomplete" if stop else ("failed" if summary["failed"] else "complete")
    code = exit_code_for(share)
    return code, (
        f"task {rank}: {summary['ok']} ok, {summary['failed']} failed"
        + (f", stopped on {stop.reason}" if stop else "")
        + (f", {summary['dropped']} dropped (chunk reclaimed)" if summary.get("dropped") else "")
    )


def _finish_if_last(
    board: Board, plan: Plan, pipeline: Pipeline, task: int, n_chunks: int
) -> RunResult | None:
    if len(board.done_chunks()) < n_chunks or not board.try_finish(task):
        return None
    return _end(board.rd, plan, pipeline)


def _end(rd: rundir.RunDir, plan: Plan, pipeline: Pipeline) -> RunResult:
    folded = fold.fold(rd)
    summaries = [rec for (a, _), rec in sorted(folded.ends.items()) if a == plan.attempt]
    return end(plan, summaries, pipeline, folded=folded)


def finalize(run_dir: str, attempt: int, plan: Plan | None = None) -> RunResult | None:
    """End ``attempt`` if no task did (all left, some chunks undone); ``None``: already ended.

    ``plan``: the attempt's plan when the caller has it (the launcher that began it), so an
    attempt whose claim board was removed still ends, as incomplete."""
    rd = rundir.RunDir(run_dir)
    board = Board(rd, attempt)
    if not board.try_finish(-1):
        return None
    if plan is None:
        plan, _, _ = board.load()
    os.chdir(plan.cwd)
    return _end(rd, plan, specmod.build(plan.spec))
