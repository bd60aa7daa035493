"""THE rank program: prepare → work on a slice → commit every K indices / T seconds → finish.

The same three functions serve every launcher:

- :func:`prepare` (rank 0, or the parent of an in-process pool): create or open the run
  directory, claim an attempt, compute ``pending = frozen - recorded`` from the journals.
- :func:`work` (every rank / worker slot): run its slice of ``pending`` and journal it.
- :func:`finish` (rank 0 / parent): merge committed shard segments, write the manifest last.

:func:`run_world` glues them with the collectives of a :class:`~hpc_curator.world.World`
(``bcast`` the plan, ``gather`` the summaries, ``bcast`` the exit code), so ``mpiexec``,
``srun`` and a single process run literally the same code.

Commit protocol (per rank): after every ``commit_every`` indices or ``commit_seconds``, each
stateful filter's delta is written to a new segment (temp + fsync + rename), *then* one journal
line commits the indices, their records and the segment names (write + fsync). A crash between
the two leaves an orphan segment that no journal names; a crash before the line leaves the
indices uncommitted, so they are re-run. Either way no index is lost or counted twice.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc_curator import journal, partition, rundir, shards
from hpc_curator import spec as specmod
from hpc_curator.errors import CuratorError, UsageError
from hpc_curator.pipeline import Pipeline
from hpc_curator.signals import (  # re-exported: launchers import them from here
    STOP_SIGNALS as STOP_SIGNALS,
)
from hpc_curator.signals import StopFlag as StopFlag
from hpc_curator.signals import block_stop_signals as block_stop_signals
from hpc_curator.signals import install_signal_handlers as install_signal_handlers
from hpc_curator.signals import start_rank as start_rank
from hpc_curator.world import Counter, LocalCounter, World

OnCommit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RunSettings:
    """How a launch runs (not part of the run's identity; may change between attempts).

    Parameters
    ----------
    commit_every
        Commit after this many indices (durability vs. fsync cost).
    commit_seconds
        ... or after this many seconds, whichever comes first.
    max_failures
        Failure budget: a count (>= 1) or a fraction of the frozen indices (< 1); ``None``
        means never stop early.
    schedule
        ``strided`` (default), ``block`` or ``dynamic``.
    chunk_size
        Indices per claim under the dynamic schedule (default: about 16 claims per rank).
    retry_failed
        Re-run the indices currently recorded as failed instead of the pending ones.
    fsync
        Fsync journals and segments (turn off only for benchmarks of the protocol itself).
    """

    commit_every: int = 1000
    commit_seconds: float = 30.0
    max_failures: float | None = None
    schedule: str = "strided"
    chunk_size: int | None = None
    retry_failed: bool = False
    fsync: bool = True

    def __post_init__(self) -> None:
        if self.commit_every < 1:
            raise UsageError(f"commit_every must be >= 1, got {self.commit_every}")
        if self.commit_seconds <= 0:
            raise UsageError(f"commit_seconds must be > 0, got {self.commit_seconds}")
        if self.max_failures is not None and self.max_failures < 0:
            raise UsageError(f"--max-failures must be >= 0, got {self.max_failures}")
        if self.schedule not in partition.SCHEDULES:
            raise UsageError(
                f"unknown schedule {self.schedule!r}", f"choose one of {partition.SCHEDULES}"
            )

    def budget(self, total: int) -> int | None:
        """The failure budget as a count of indices."""
        if self.max_failures is None:
            return None
        if 0 < self.max_failures < 1:
            return int(self.max_failures * total)
        return int(self.max_failures)


@dataclass
class Plan:
    """What rank 0 decided for this attempt; broadcast to every rank."""

    run_dir: str
    attempt: int
    spec: dict[str, Any]
    cwd: str
    pending: np.ndarray
    total: int
    recorded: int
    failures_before: int
    settings: RunSettings


@dataclass
class RunResult:
    """Outcome of a finished attempt."""

    exit_code: int
    status: str
    counts: dict[str, int]
    message: str
    run_dir: str
    manifest: dict[str, Any] = field(default_factory=dict)


# -- prepare -------------------------------------------------------------------------------
def prepare(
    run_dir: str | os.PathLike[str],
    settings: RunSettings,
    identity: dict[str, Any],
    *,
    spec: dict[str, Any] | None = None,
    indices: str | Sequence[int] | None = None,
    launcher: str = "sequential",
) -> Plan:
    """Create or open the run directory, claim an attempt and compute what is pending.

    Raises
    ------
    CuratorError
        Conflicting spec or indices, a live attempt, bad index selection.
    """
    rd = rundir.RunDir(run_dir)
    frozen = None
    if spec is not None and (indices is not None or not rd.exists()):
        frozen = partition.parse_indices(indices, len(specmod.build(spec).source))
    elif indices is not None:
        raise UsageError("--indices needs the pipeline spec too", "pass SPEC with --indices")
    info = rundir.create_or_open(rd, spec, frozen, asdict(settings))
    attempt = rundir.start_attempt(rd, identity, launcher)
    scan = journal.scan(rd, with_outputs=False)
    failed = scan.failed_indices()
    if settings.retry_failed:
        todo = info.indices[np.isin(info.indices, failed)]
    else:
        todo = partition.pending(info.indices, scan.recorded())
    return Plan(
        run_dir=str(rd.path),
        attempt=attempt,
        spec=info.spec,
        cwd=info.meta.get("cwd", os.getcwd()),
        pending=todo,
        total=info.n,
        recorded=len(scan.recorded()),
        failures_before=0 if settings.retry_failed else len(failed),
        settings=settings,
    )


# -- work ----------------------------------------------------------------------------------
class RankLoop:
    """Run indices, keep their records in memory, commit them durably in batches."""

    def __init__(
        self,
        plan: Plan,
        world: World,
        pipeline: Pipeline,
        failures: Counter,
        stop: StopFlag,
        on_commit: OnCommit | None = None,
    ) -> None:
        self.plan = plan
        self.world = world
        self.pipeline = pipeline
        self.failures = failures
        self.stop = stop
        self.on_commit = on_commit
        self.rd = rundir.RunDir(plan.run_dir)
        self.settings = plan.settings
        self.budget = plan.settings.budget(plan.total)
        self.writer = journal.JournalWriter(
            self.rd.journal_path(plan.attempt, world.rank), fsync=plan.settings.fsync
        )
        self.seq = 0
        self.n_ok = 0
        self.n_failed = 0
        self.busy = 0.0
        self.segments: dict[str, list[str]] = {}
        self._reset_batch()

    def _reset_batch(self) -> None:
        # one tuple per index: (index, ok, wall s, cpu s, maxrss KiB, outputs)
        self.batch: list[tuple[int, int, float, float, int, list[str]]] = []
        self.b_err: dict[str, dict[str, str]] = {}

    def run(self, indices: Iterator[int]) -> dict[str, Any]:
        """Run ``indices`` until exhausted or stopped; return this rank's summary.

        Per index: one ``perf_counter`` pair for wall time and one ``getrusage`` for CPU time
        and peak RSS (the CPU clock is differenced against the previous index's reading, so
        the loop costs one system call per index). Hot path: keep it lean.
        """
        started = time.time()
        self.writer.append(
            {"t": "start", "attempt": self.plan.attempt, "time": started, **self.world.identity()}
        )
        every, seconds = self.settings.commit_every, self.settings.commit_seconds
        perf, getrusage, who = time.perf_counter, resource.getrusage, resource.RUSAGE_SELF
        run_index, stop = self.pipeline.run_index, self.stop
        batch = self.batch
        ru = getrusage(who)
        cpu_before = ru.ru_utime + ru.ru_stime
        due = perf() + seconds
        try:
            for index in indices:
                t0 = perf()
                try:
                    out = run_index(index)
                    ok = 1
                except Exception as exc:
                    out, ok = [], 0
                    self._record_failure(exc, len(batch))
                t1 = perf()
                ru = getrusage(who)
                cpu_now = ru.ru_utime + ru.ru_stime
                batch.append((index, ok, t1 - t0, cpu_now - cpu_before, ru.ru_maxrss, out))
                cpu_before = cpu_now
                if len(batch) >= every or t1 >= due:
                    self.commit()
                    batch = self.batch
                    due = perf() + seconds
                    ru = getrusage(who)
                    cpu_before = ru.ru_utime + ru.ru_stime
                if stop.reason is not None:
                    break
        finally:
            self.commit()
        if self.stop:
            print(
                f"hpc-curator rank {self.world.rank}: stopping on {self.stop.reason} after "
                f"{self.n_ok + self.n_failed} indices (all committed)",
                file=sys.stderr,
                flush=True,
            )
        summary = {
            **self.world.identity(),
            "attempt": self.plan.attempt,
            "ok": self.n_ok,
            "failed": self.n_failed,
            "busy": self.busy,
            "started": started,
            "ended": time.time(),
            "commits": self.seq,
            "reason": self.stop.reason or "done",
            "peak_rss": _peak_rss(),
        }
        self.writer.append({"t": "end", **summary})
        self.writer.close()
        return summary

    def _record_failure(self, exc: Exception, position: int) -> None:
        self.b_err[str(position)] = {
            "type": type(exc).__qualname__,
            "msg": str(exc),
            "tb": traceback.format_exc(),
        }
        total = self.failures.add(1)
        if self.budget is not None and total > self.budget:
            self.stop.set("max_failures")

    def commit(self) -> None:
        """Flush segments, then append the commit record (the commit point)."""
        if not self.batch:
            return
        segs = {}
        for f in self.pipeline.stateful_filters:
            directory = self.rd.shard_dir(f.name)
            directory.mkdir(parents=True, exist_ok=True)
            name = shards.write_segment(f, directory, self.world.rank, self.plan.attempt, self.seq)
            if name is not None:
                segs[f.name] = name
                self.segments.setdefault(f.name, []).append(name)
        idx, ok, wall, cpu, rss_kib, out = zip(*self.batch, strict=True)
        self.busy += sum(wall)
        record = {
            "t": "commit",
            "seq": self.seq,
            "time": time.time(),
            "idx": list(idx),
            "ok": list(ok),
            # rounded to microseconds: shorter JSON, and float repr is the costly part
            "wall": np.round(wall, 6).tolist(),
            "cpu": np.round(cpu, 6).tolist(),
            "rss": (np.asarray(rss_kib, dtype=np.int64) * 1024).tolist(),
            "err": self.b_err,
            "seg": segs,
            "out": list(out),  # last: scans that skip outputs cut the line here
        }
        self.writer.append(record)
        n_failed = len(self.b_err)
        self.n_failed += n_failed
        self.n_ok += len(idx) - n_failed
        self.seq += 1
        if self.on_commit is not None:
            self.on_commit(record)
        self._reset_batch()
        if self.budget is not None and self.failures.add(0) > self.budget:
            self.stop.set("max_failures")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def my_indices(plan: Plan, world: World, chunks: Counter | None, stop: StopFlag) -> Iterator[int]:
    """This rank's indices: a static slice, or chunks claimed from the shared counter."""
    if plan.settings.schedule != "dynamic":
        share = partition.slice_for(plan.pending, world.rank, world.size, plan.settings.schedule)
        yield from share.tolist()  # Python ints: no per-index conversion in the hot loop
        return
    assert chunks is not None
    size = plan.settings.chunk_size or partition.default_chunk_size(len(plan.pending), world.size)
    while not stop:
        number = chunks.add(1) - 1
        part = partition.chunk(plan.pending, number, size)
        if len(part) == 0:
            return
        for index in part.tolist():
            yield index
            if stop:
                return


def work(
    plan: Plan,
    world: World,
    *,
    pipeline: Pipeline | None = None,
    failures: Counter | None = None,
    chunks: Counter | None = None,
    stop: StopFlag | None = None,
    on_commit: OnCommit | None = None,
) -> dict[str, Any]:
    """Run this rank's share of ``plan`` and return its summary (never raises for an index)."""
    os.chdir(plan.cwd)
    stop = StopFlag() if stop is None else stop
    pipeline = pipeline or specmod.build(plan.spec)
    failures = failures or LocalCounter(plan.failures_before)
    loop = RankLoop(plan, world, pipeline, failures, stop, on_commit)
    return loop.run(my_indices(plan, world, chunks, stop))


# -- the whole world -----------------------------------------------------------------------
class Heartbeat:
    """Touch the attempt's heartbeat file periodically from a daemon thread."""

    def __init__(self, path: Path, interval: float = rundir.HEARTBEAT_INTERVAL) -> None:
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
    """Run one attempt across ``world``: prepare on rank 0, work everywhere, finish on rank 0.

    Errors in prepare or finish are broadcast, so no rank hangs in a collective; on ranks
    other than 0 they surface as :class:`CuratorError` with the same message.
    """
    from hpc_curator.gather import finish, merge_tree

    stop = StopFlag() if stop is None else stop
    outcome: Any = None
    if world.is_root:
        try:
            outcome = prepare(
                run_dir, settings, world.identity(), spec=spec, indices=indices, launcher=launcher
            )
        except CuratorError as exc:
            outcome = exc
    world.idle_barrier()  # the others sleep (not spin) while rank 0 prepares
    outcome = world.bcast(outcome)
    if isinstance(outcome, CuratorError):
        raise outcome
    plan: Plan = outcome
    rd = rundir.RunDir(plan.run_dir)
    os.chdir(plan.cwd)
    pipeline = pipeline or specmod.build(plan.spec)
    # MPI windows only when needed: registering window memory makes UCX hook malloc/munmap,
    # which made every index of a numpy-heavy pipeline page-fault its buffers again (~15%)
    budgeted = settings.budget(plan.total) is not None
    failures = (
        world.counter(plan.failures_before) if budgeted else LocalCounter(plan.failures_before)
    )
    chunks = world.counter(0) if settings.schedule == "dynamic" else None
    beating = Heartbeat(rd.heartbeat_path(plan.attempt)) if world.is_root else nullcontext()
    with beating:
        summary = work(
            plan,
            world,
            pipeline=pipeline,
            failures=failures,
            chunks=chunks,
            stop=stop,
            on_commit=on_commit,
        )
    world.idle_barrier()  # early finishers sleep instead of spinning on shared cores
    failures.free()
    if chunks is not None:
        chunks.free()
    summaries = world.gather(summary)
    scan, partials = merge_tree(world, plan, pipeline) if world.size > 1 else (None, None)
    result: Any = None
    if world.is_root:
        try:
            for stage in (scan, partials):  # an error of the tree merge, on any rank
                if isinstance(stage, CuratorError):
                    raise stage
            result = finish(plan, summaries or [summary], pipeline, scan=scan, partials=partials)
        except CuratorError as exc:
            result = exc
    world.idle_barrier()
    result = world.bcast(result)
    if isinstance(result, CuratorError):
        raise result
    return result
