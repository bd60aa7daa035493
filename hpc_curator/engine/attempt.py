"""One attempt of a run, from begin to end; the single entry point of every launcher.

An attempt is: :func:`begin` (rank 0, or the parent of an in-process pool: create or open the
run directory, claim an attempt, compute ``pending = frozen - recorded``), the world run (every
rank or pool slot runs :func:`hpc_curator.engine.rank.work` on its share), and :func:`end` (merge
the
committed shard segments, write the manifest last, decide the status and exit code).

Who calls what:

- :func:`rank_main` is the rank program: ``hpc-curate rank`` under ``mpiexec``/``srun``/an
  sbatch template and the submitit :class:`~hpc_curator.slurm.submit.RankJob` both call it. It
  does the start-up (malloc tuning, MPI initialisation with stale shared memory removed and
  stop signals held, signal handlers), :func:`run_world`, the requeue request after a time
  limit, the final barrier, the closing line and the exit code.
- :func:`run_here` runs a world of one in this process (the sequential backend,
  ``submit --cluster debug``).
- :func:`hpc_curator.engine.slots.run_slots` runs an in-process pool (process_pool, loky, dask): the
  parent begins and ends here, each worker slot runs the same rank loop with its slot as rank.

So ``mpiexec``, ``srun``, a pool and a single process run literally the same code.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from hpc_curator.engine import poison, tracking
from hpc_curator.engine.gather import merge_outputs, merge_tree, own_journal
from hpc_curator.engine.rank import work
from hpc_curator.engine.signals import StopFlag, block_stop_signals, start_rank, stop_on_signals
from hpc_curator.engine.values import (
    LAUNCHER_PID_ENV,
    PARENT_ENV,
    OnCommit,
    Plan,
    RunResult,
    RunSettings,
    exit_code_for,
)
from hpc_curator.errors import AttemptError, CuratorError, UsageError, from_exception
from hpc_curator.model import fingerprint, groups, partition, portable
from hpc_curator.model import spec as specmod
from hpc_curator.model.indexruns import compact
from hpc_curator.model.pipeline import Pipeline
from hpc_curator.runtime import gpus
from hpc_curator.runtime.world import Counter, LocalCounter, World
from hpc_curator.store import arrow, attempt_records, fold, manifest, rundir
from hpc_curator.store.atomic import check_replaceable, remove_stale_temps


# -- begin ---------------------------------------------------------------------------------
def begin(
    run_dir: str | os.PathLike[str],
    settings: RunSettings,
    identity: dict[str, Any],
    *,
    spec: dict[str, Any] | None = None,
    indices: str | Sequence[int] | None = None,
    launcher: str = "sequential",
    pipeline: Pipeline | None = None,
) -> tuple[Plan, Pipeline]:
    """Create or open the run directory, claim an attempt and compute what is pending.

    Returns the plan and the pipeline (``pipeline`` itself, or built from the spec). The
    fingerprint of the pipeline's code (:mod:`hpc_curator.model.fingerprint`) must match the run's
    unless ``settings.accept_code_change``; the attempt records it.

    Raises
    ------
    CuratorError
        Conflicting spec, indices or code; a live attempt; a bad index selection.
    """
    if settings.track_gpu:  # refuse before anything is created, not on every rank
        tracking.check_gpu_tracking()
    rd = rundir.RunDir(run_dir)
    frozen = None
    if spec is not None:
        pipeline = pipeline or specmod.build(spec)
    if spec is not None and (indices is not None or not rd.exists()):
        assert pipeline is not None
        frozen = partition.parse_indices(indices, len(pipeline.source))
    elif indices is not None:
        raise UsageError("--indices needs the pipeline spec too", "pass SPEC with --indices")
    code = fingerprint.fingerprint(pipeline, spec) if pipeline is not None and spec else None
    # the groups a partition_indices declares: refused (one line) before anything is created
    declared = None
    if pipeline is not None and frozen is not None:
        declared = groups.declared(pipeline, frozen)
    info = rundir.create_or_open(rd, spec, frozen, asdict(settings), code=code)
    if pipeline is None:
        pipeline = specmod.build(info.spec)
        code = fingerprint.fingerprint(pipeline, info.spec)
    assert code is not None
    accepted = fingerprint.check_run(rd, info, code, settings.accept_code_change)
    extra: dict[str, Any] = {"code": code, "stateful": stateful_classes(pipeline)}
    launcher_pid = os.environ.get(LAUNCHER_PID_ENV, "")
    if launcher_pid.isdigit():  # the process to signal to stop the whole attempt (cancel)
        extra["launcher_pid"] = int(launcher_pid)
    if accepted:
        extra["code_change_accepted"] = accepted
    for f in pipeline.stateful_filters:  # a user's directory at an output: refused now
        check_replaceable(Path(f.output) if f.output else rd.output_path(f.name, f.suffix))
    attempt = attempt_records.start_attempt(rd, {**identity, **extra}, launcher)
    # no writer is active now (this attempt is the only one): what a crash left half written
    # under a temporary name (a file, or a Zarr store's directory) goes
    for f in pipeline.stateful_filters:
        remove_stale_temps(rd.shard_dir(f.name))
        out = Path(f.output) if f.output else rd.output_path(f.name, f.suffix)
        remove_stale_temps(out.parent, out.name)  # only this output's: the dir may be shared
    scan = fold.status(rd, info.indices)  # in parts for a large run: bounded memory
    failed = scan.failed_indices()
    if settings.retry_failed:
        todo = info.indices[np.isin(info.indices, failed)]
    else:
        todo = scan.pending()
    crashed, suspects = poison.crash_records(
        rd, scan.ends, scan.recorded(), settings.max_index_crashes
    )
    if suspects:  # those still to run (numpy: no Python int per pending index)
        still = set(todo[np.isin(todo, suspects)].tolist())
        suspects = [i for i in suspects if i in still]
    if declared is None or frozen is None or not np.array_equal(frozen, info.indices):
        declared = groups.declared(pipeline, info.indices)
    labels = groups.components(info.indices, declared)
    rd.save_groups(labels)
    if labels is not None and suspects:  # a suspect's group mates run with it, on rank 0
        suspects += [i for i in groups.mates(suspects, todo, info.indices, labels).tolist()
                     if i not in suspects]  # fmt: skip
    if crashed or suspects:  # failed by rank 0 / run first by rank 0 alone
        todo = todo[~np.isin(todo, [c["index"] for c in crashed] + suspects)]
    todo, bounds = groups.plan_units(todo, info.indices, labels, settings.schedule)
    return Plan(
        run_dir=str(rd.path),
        attempt=attempt,
        spec=info.spec,
        cwd=info.meta.get("cwd", os.getcwd()),
        pending=todo if bounds is not None else compact(todo),  # KB, not GB, to every rank
        total=info.n,
        recorded=len(scan.recorded()),
        failures_before=0 if settings.retry_failed else len(failed),
        settings=settings,
        crashed=crashed,
        suspects=suspects,
        unit_bounds=bounds,
    ), pipeline


# -- end -----------------------------------------------------------------------------------
def end(
    plan: Plan,
    summaries: list[dict[str, Any]],
    pipeline: Pipeline,
    *,
    folded: fold.Folded | None = None,
    partials: dict[str, list[str]] | None = None,
) -> RunResult:
    """Merge outputs, write the manifest (last, atomically) and end the attempt.

    ``folded`` and ``partials`` come from :func:`~hpc_curator.engine.gather.merge_tree` when the
    ranks
    merged in a tree.

    Returns
    -------
    RunResult
        Exit code 0 when every frozen index succeeded, 1 when some failed (or the failure
        budget was exceeded), 3 when some are still pending (stopped by a signal or time limit).
    """
    rd = rundir.RunDir(plan.run_dir)
    folded = fold.fold(rd) if folded is None else folded
    outputs = merge_outputs(rd, pipeline, folded.segments, partials, folded.segment_sums)
    with arrow.manifest_pool():
        doc = fold.summarize(rd, folded, summaries=summaries, outputs=outputs)
        counts = doc["counts"]
        reasons = sorted({s.get("reason", "done") for s in summaries} - {"done"})
        attempt_records.end_attempt(
            rd,
            plan.attempt,
            reason=",".join(reasons) or "done",
            counts=counts,
            world_size=len(summaries),
        )
        fold.write(rd, folded, doc, plan.attempt)
    status = doc["status"]
    message = manifest.one_line(doc, reasons)
    return RunResult(exit_code_for(status, reasons), status, counts, message, str(rd.path), doc)


class Heartbeat:
    """Touch the attempt's heartbeat file periodically from a daemon thread."""

    def __init__(self, path: Path, interval: float = attempt_records.HEARTBEAT_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")

    def _beat(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self.path.touch()
            except OSError:
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


# -- a world of MPI ranks (or of one process) ----------------------------------------------
def run_world(
    world: World,
    run_dir: str | os.PathLike[str],
    settings: RunSettings,
    *,
    spec: dict[str, Any] | None = None,
    indices: str | Sequence[int] | None = None,
    launcher: str = "mpi",
    stop: StopFlag | None = None,
    on_commit: OnCommit | None = None,
    pipeline: Pipeline | None = None,
) -> RunResult:
    """Run one attempt across ``world``: begin on rank 0, work everywhere, end on rank 0.

    Errors in begin or end are broadcast, so no rank hangs in a collective; on ranks other
    than 0 they surface as :class:`CuratorError` with the same message.
    """
    stop = StopFlag() if stop is None else stop
    outcome: Any = None
    if world.is_root:
        try:
            outcome, pipeline = begin(
                run_dir,
                settings,
                world.identity(),
                spec=spec,
                indices=indices,
                launcher=launcher,
                pipeline=pipeline,
            )
        except Exception as exc:  # any error: the others must not wait for ever
            outcome = from_exception(exc, "could not begin the attempt")
    world.idle_barrier()  # the others sleep (not spin) while rank 0 prepares
    outcome = world.bcast(outcome)
    if isinstance(outcome, CuratorError):
        raise outcome
    plan: Plan = outcome
    rd = rundir.RunDir(plan.run_dir)
    pipeline = _build_everywhere(world, plan, pipeline)
    # MPI windows only when needed: registering window memory makes UCX hook malloc/munmap,
    # which made every index of a numpy-heavy pipeline page-fault its buffers again (~15%)
    budgeted = settings.budget(plan.total) is not None
    failures: Counter = (
        world.counter(plan.failures_before) if budgeted else LocalCounter(plan.failures_before)
    )
    chunks = world.counter(0) if settings.schedule == "dynamic" else None
    beating = Heartbeat(rd.heartbeat_path(plan.attempt)) if world.is_root else nullcontext()
    if world.is_root:
        arrow.preload()  # the end's imports, behind this rank's share of the work
    with beating:
        try:
            summary = work(
                plan,
                world,
                pipeline=pipeline,
                failures=failures,
                chunks=chunks,
                stop=stop,
                on_commit=on_commit,
            )
        except Exception as exc:  # e.g. a full disk at a commit: reported, nobody hangs
            summary = failed_summary(plan, world, from_exception(exc, f"rank {world.rank}"))
    # read while slower ranks still work: rank 0 does not
    own = own_journal(world, plan, summary.get("writer"))
    world.idle_barrier()  # early finishers sleep instead of spinning on shared cores
    failures.free()
    if chunks is not None:
        chunks.free()
    gathered = world.gather((summary, own))
    summaries = [s for s, _ in gathered] if gathered is not None else None
    blocks = dict(b for _, b in gathered or [] if b is not None)
    scan, partials = merge_tree(world, plan, pipeline, blocks) if world.size > 1 else (None, None)
    result: Any = None
    if world.is_root:
        try:
            for stage in (scan, partials):  # an error of the tree merge, on any rank
                if isinstance(stage, CuratorError):
                    raise stage
            result = end(plan, summaries or [summary], pipeline, folded=scan, partials=partials)
            result = attempt_error(summaries or []) or result
        except Exception as exc:
            result = from_exception(exc, "could not finish the attempt")
    world.idle_barrier()
    result = world.bcast(result)
    if isinstance(result, CuratorError):
        raise result
    return result


def stateful_classes(pipeline: Pipeline) -> dict[str, str]:
    """``{filter name: "module:qualname"}`` of the stateful filters (the attempt records it:
    the report asks those classes for their figures)."""
    return {
        f.name: f"{type(f).__module__}:{type(f).__qualname__}" for f in pipeline.stateful_filters
    }


def _build_everywhere(world: World, plan: Plan, pipeline: Pipeline | None) -> Pipeline:
    """Every rank builds the pipeline; if any rank cannot, every rank raises the same error."""
    error: CuratorError | None = None
    try:
        os.chdir(plan.cwd)
        pipeline = pipeline or specmod.build(plan.spec)
    except Exception as exc:
        error = from_exception(exc, f"rank {world.rank} could not build the pipeline")
    errors = world.gather(error)
    first = next((e for e in errors or [] if e is not None), None) if world.is_root else None
    first = world.bcast(first)
    if first is not None:
        if world.is_root:  # the attempt ends here, recorded as such
            with contextlib.suppress(Exception):
                attempt_records.end_attempt(
                    rundir.RunDir(plan.run_dir), plan.attempt, reason="error"
                )
        raise first
    assert pipeline is not None
    return pipeline


def attempt_error(summaries: list[dict[str, Any]]) -> AttemptError | None:
    """The error of an attempt whose ranks or workers raised outside an index, reported after
    its end ran (the manifest is honest: incomplete); ``None`` when none did."""
    errors = [s["error"] for s in summaries if s.get("error")]
    if not errors:
        return None
    more = f" (and {len(errors) - 1} more rank(s))" if len(errors) > 1 else ""
    return AttemptError(errors[0] + more, "fix that, then re-run the same command to resume")


def failed_summary(plan: Plan, world: World, error: CuratorError) -> dict[str, Any]:
    """The summary of a rank or worker whose loop raised (a full disk at a commit...): it
    still reaches the end of the attempt, which is then reported as failed by
    :func:`attempt_error`."""
    now = time.time()
    return {
        **world.identity(),
        "attempt": plan.attempt,
        "ok": 0,
        "failed": 0,
        "busy": 0.0,
        "started": now,
        "ended": now,
        "commits": 0,
        "reason": "error",
        "peak_rss": 0,
        "error": error.format(),
    }


def rank_main(
    run_dir: str,
    settings: RunSettings,
    *,
    spec: dict[str, Any] | None = None,
    indices: str | Sequence[int] | None = None,
    launcher: str | None = None,
    pipeline_blob: bytes | None = None,
) -> tuple[World, RunResult, bool]:
    """The rank program: start up, run this rank's part of the attempt, close down.

    Parameters
    ----------
    run_dir, settings, spec, indices
        The run (``spec`` is needed only to create it).
    launcher
        Label recorded in the attempt (default ``srun`` inside a Slurm step, else ``mpi``).
    pipeline_blob
        A pickled pipeline (:mod:`hpc_curator.model.portable`) for objects the spec cannot rebuild.

    Returns
    -------
    tuple
        The world, the attempt's result (the same on every rank) and whether rank 0 asked the
        job script for a requeue. Exit with ``result.exit_code``.
    """
    bound = gpus.bind()  # before MPI and CUDA start
    world, stop = start_rank()
    world.gpus = bound
    label = launcher or ("srun" if world.step_id else "mpi")
    try:
        pipeline = None
        if pipeline_blob is not None:
            pipeline = portable.rebuild(spec or {}, pipeline_blob)
        result = run_world(
            world,
            run_dir,
            settings,
            spec=spec,
            indices=indices,
            stop=stop,
            launcher=label,
            pipeline=pipeline,
        )
    except Exception as exc:
        if not world.is_root:
            exc.relayed = True  # type: ignore[attr-defined]  # rank 0 says it once
        raise
    requeued = False
    if world.is_root and result.exit_code == 3 and stop.reason == "SIGUSR2":
        from hpc_curator.slurm.requeue import request_requeue

        requeued = request_requeue()  # acted on by the job script, if it is ours
    if result.exit_code == 3:  # the others sleep while rank 0 may ask Slurm for a requeue
        world.idle_barrier()
    block_stop_signals()  # until exit: MPI finalisation talks PMI too
    if world.is_root and not os.environ.get(PARENT_ENV) and not requeued:
        print(f"hpc-curate: {result.status}: {result.message}", file=sys.stderr, flush=True)
    return world, result, requeued


def run_here(
    run_dir: str,
    settings: RunSettings,
    *,
    spec: dict[str, Any] | None = None,
    indices: str | Sequence[int] | None = None,
    launcher: str = "sequential",
    stop: StopFlag | None = None,
    on_commit: OnCommit | None = None,
    pipeline: Pipeline | None = None,
    gpus_per_rank: int | None = None,
) -> RunResult:
    """Run the attempt in this process as a world of one; Ctrl-C/SIGTERM stop it cleanly."""
    world = World(gpus=gpus.bind(per_rank=gpus_per_rank))
    with stop_on_signals(stop or StopFlag()) as flag:
        return run_world(
            world,
            run_dir,
            settings,
            spec=spec,
            indices=indices,
            launcher=launcher,
            stop=flag,
            on_commit=on_commit,
            pipeline=pipeline,
        )


__all__ = [
    "PARENT_ENV",
    "Heartbeat",
    "begin",
    "end",
    "rank_main",
    "run_here",
    "run_world",
]
