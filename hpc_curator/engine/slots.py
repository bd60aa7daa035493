"""The in-process pool launcher of an attempt: slots of the rank loop in worker processes.

The parent plays rank 0: :func:`~hpc_curator.engine.attempt.begin`, then one :func:`slot_main` per
worker slot through the pool's ``map``, then :func:`~hpc_curator.engine.attempt.end`. Each slot runs
:func:`hpc_curator.engine.rank.work` with its slot number as rank: journals and shard segments are
named by slot, never by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from hpc_curator.backends.base import JournalFailureCounter
from hpc_curator.engine.attempt import Heartbeat, attempt_error, begin, end, failed_summary
from hpc_curator.engine.rank import work
from hpc_curator.engine.signals import StopFlag, stop_on_signals
from hpc_curator.engine.values import OnCommit, Plan, RunResult, RunSettings
from hpc_curator.errors import AttemptError, CuratorError, UsageError, from_exception
from hpc_curator.model import portable
from hpc_curator.model.pipeline import Pipeline
from hpc_curator.runtime import gpus
from hpc_curator.runtime.world import NO_MPI_ENV, World, tune_malloc
from hpc_curator.store import rundir
from hpc_curator.ui import follow

# -- the pool --------------------------------------------------------------------
#: ``map_fn(slot_main, [args per slot])`` -> one summary per slot, in slot order.
MapFn = Callable[[Callable[..., dict[str, Any]], list[tuple[Any, ...]]], list[dict[str, Any]]]
#: How often the parent of a pool looks for new commits.
POLL_SECONDS = 0.3


def run_slots(
    run_dir: str,
    settings: RunSettings,
    n_slots: int,
    map_fn: MapFn,
    *,
    spec: dict[str, Any] | None = None,
    indices: str | Sequence[int] | None = None,
    launcher: str,
    stop: StopFlag | None = None,
    on_commit: OnCommit | None = None,
    pipeline: Pipeline | None = None,
    gpus_per_rank: int | None = None,
) -> RunResult:
    """Begin here, run ``n_slots`` slots of the rank loop through ``map_fn``, end here.

    The workers rebuild the pipeline from the frozen spec, or unpickle it when the spec
    cannot rebuild it (:mod:`hpc_curator.model.portable`). While they run, this process follows
    their journals (``on_commit`` sees every commit record) and, once ``stop`` is set (by the
    caller, Ctrl-C or SIGTERM), signals the workers: they commit and return.
    """
    if settings.schedule == "dynamic":
        raise UsageError(
            f"the dynamic schedule needs MPI; backend {launcher!r} supports strided and block",
            "use --ranks N (mpi) or --schedule strided",
        )
    blob = portable.payload(pipeline)
    identity = World().identity()
    plan, local = begin(  # local: this process's copy of the pipeline, for the merge
        run_dir,
        settings,
        identity,
        spec=spec,
        indices=indices,
        launcher=launcher,
        pipeline=pipeline,
    )
    rd = rundir.RunDir(plan.run_dir)
    args = [(plan, slot, n_slots, blob, gpus_per_rank) for slot in range(n_slots)]
    with Heartbeat(rd.heartbeat_path(plan.attempt)), stop_on_signals(stop or StopFlag()) as flag:
        summaries = _map_and_follow(map_fn, args, rd, plan.attempt, flag, on_commit)
    try:
        result = end(plan, summaries, local)
    except Exception as exc:  # the user's merge, a full disk: one line, as under MPI
        raise from_exception(exc, "could not finish the attempt") from None
    error = attempt_error(summaries)
    if error is not None:  # the manifest is written (incomplete); the run still failed
        raise error
    return result


def _map_and_follow(
    map_fn: MapFn,
    args: list[tuple[Any, ...]],
    rd: rundir.RunDir,
    attempt: int,
    stop: StopFlag,
    on_commit: OnCommit | None,
) -> list[dict[str, Any]]:
    """Run ``map_fn`` in a thread; meanwhile follow the journals and pass ``stop`` on.

    A worker's journal begins with its PID; once ``stop`` is set, every worker of this
    attempt gets SIGTERM (its handler sets its own stop flag: it commits and returns).
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["summaries"] = map_fn(slot_main, args)
        except BaseException as exc:  # re-raised in the calling thread
            outcome["error"] = exc

    follower = follow.JournalFollower(rd)
    follower.skip_existing()  # earlier attempts are not this launch's progress
    workers: set[int] = set()
    signalled: set[int] = set()
    thread = threading.Thread(target=target, name="hpc-curator-pool", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(POLL_SECONDS)
        _feed(follower, attempt, on_commit, workers)
        for pid in workers - signalled if stop else ():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
            signalled.add(pid)
    _feed(follower, attempt, on_commit, workers)
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, CuratorError):
            raise error
        # a worker died (segfault, os._exit, OOM killer: BrokenProcessPool, TerminatedWorker)
        # or the pool itself failed; what was committed stays, the next launch resumes and
        # knows which index the dead worker was running (poison.py)
        raise AttemptError(
            f"a pool worker died or the pool failed: {type(error).__name__}: "
            + ((str(error).strip().splitlines() or [""])[0]),
            "re-run the same command to resume; an index that kills its worker twice is "
            "recorded as failed",
        ) from None
    return list(outcome["summaries"])


def _feed(
    follower: follow.JournalFollower,
    attempt: int,
    on_commit: OnCommit | None,
    workers: set[int],
) -> None:
    for (a, _rank), rec in follower.poll():
        if a != attempt:
            continue
        if rec.get("t") == "start" and isinstance(rec.get("pid"), int):
            workers.add(rec["pid"])
        elif rec.get("t") == "commit" and on_commit is not None:
            on_commit(rec)


def slot_main(
    plan: Plan, slot: int, size: int, blob: bytes | None, gpus_per_rank: int | None = None
) -> dict[str, Any]:
    """One slot of an in-process pool (runs inside a worker process); returns its summary.

    The same start-up as a rank, without MPI: malloc tuning and the stop signals (Ctrl-C, or
    the parent's SIGTERM, makes the worker commit and return); then the rank loop with the
    slot as rank. Previous signal handlers are restored, since pool workers are reused.
    """
    os.environ.setdefault(NO_MPI_ENV, "1")
    bound = gpus.bind(rank=slot, per_rank=gpus_per_rank)
    tune_malloc()
    os.chdir(plan.cwd)
    pipeline = portable.rebuild(plan.spec, blob)
    world = World(rank=slot, size=size, gpus=bound)
    failures = JournalFailureCounter(plan.run_dir, plan.attempt, slot, plan.failures_before)
    with stop_on_signals(StopFlag()) as stop:
        try:
            return work(plan, world, pipeline=pipeline, failures=failures, stop=stop)
        except Exception as exc:  # e.g. a full disk at a commit: the end still runs, as MPI
            return failed_summary(plan, world, from_exception(exc, f"worker {slot}"))
