"""The rank loop: run this rank's share of an attempt and commit it every K indices / T seconds.

:func:`work` is what every rank of an MPI world and every slot of an in-process pool runs
between the attempt's begin and end (:mod:`hpc_curator.engine.attempt`): it picks this rank's
indices
(:func:`my_indices`: a static slice or chunks claimed from a shared counter) and feeds them to
a :class:`RankLoop`.

Commit protocol (per rank): after every ``commit_every`` indices or ``commit_seconds``, each
stateful filter's delta is written to a new segment (temp + fsync + rename), *then* one journal
line commits the indices, their records and the segment names (write + fsync). A crash between
the two leaves an orphan segment that no journal names; a crash before the line leaves the
indices uncommitted, so they are re-run. Either way no index is lost or counted twice. In a
job of more than a few hundred ranks, commits are also spaced by :mod:`hpc_curator.engine.pacing`.
"""

from __future__ import annotations

import os
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from hpc_curator.engine import pacing, ranklog, stages, tracking, writebehind
from hpc_curator.engine.poison import CurrentIndex, Watchdog
from hpc_curator.engine.ranklog import RankLog
from hpc_curator.engine.signals import StopFlag
from hpc_curator.engine.values import OnCommit, Plan
from hpc_curator.model import groups, partition
from hpc_curator.model import spec as specmod
from hpc_curator.model.indexruns import as_array
from hpc_curator.model.pipeline import Pipeline
from hpc_curator.runtime.world import Counter, LocalCounter, World
from hpc_curator.slurm.stale_shm import segments_of
from hpc_curator.store import journal, rundir, shards
from hpc_curator.store.checksum import size_and_digest
from hpc_curator.store.nofollow import ensure_dir

#: how a rank chooses its indices, given its loop (elastic claims set the loop's fence)
Scheduler = Callable[["RankLoop"], Iterator[int]]


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
        #: this process's writer token: its journal, current-index file and segments carry
        #: it, so two processes that both think they are this rank never share a file
        self.token = rundir.writer_token()
        self.writer = journal.JournalWriter(
            self.rd.journal_path(plan.attempt, world.rank, self.token), fsync=plan.settings.fsync
        )
        #: claim generation of the work being done (elastic runs; recorded in each commit)
        self.generation = 0
        self.seq = 0
        self.n_ok = 0
        self.n_failed = 0
        self.busy = 0.0
        self.segments: dict[str, list[str]] = {}
        self.log: RankLog | None = None  # set by work(): what user code prints goes there
        #: finishes the sink's deferred outputs (fsync, rename) while the next index runs
        self.publisher = writebehind.Publisher()
        self.current: CurrentIndex | None = None
        #: checked before every commit; ``False`` drops the batch (an elastic chunk that was
        #: reclaimed meanwhile must not be committed twice)
        self.may_commit: Callable[[], bool] | None = None
        self.dropped = 0
        self._log_from = 0
        self._reset_batch()

    def _reset_batch(self) -> None:
        # one tuple per index: (index, ok, wall s, cpu s, maxrss KiB, outputs, stage seconds,
        # python peak bytes, gpu peak bytes); cleared in place, so that run()'s alias of it
        # stays valid when an index source commits between indices (elastic chunks)
        if hasattr(self, "batch"):
            self.batch.clear()
        else:
            self.batch: list[tuple[Any, ...]] = []
        self.b_err: dict[str, dict[str, Any]] = {}

    def run(self, indices: Iterator[int]) -> dict[str, Any]:
        """Run ``indices`` until exhausted or stopped; return this rank's summary.

        Per index: one ``perf_counter`` pair for wall time and one ``getrusage`` for CPU time
        and peak RSS (the CPU clock is differenced against the previous index's reading, so
        the loop costs one system call per index). Hot path: keep it lean.
        """
        started = time.time()
        runner = stages.StageRunner(self.pipeline)
        names = runner.names
        self.writer.append(
            {
                "t": "start",
                "attempt": self.plan.attempt,
                "time": started,
                "stages": names,
                "writer": self.token,
                **self.world.identity(),
                **({"shm": sorted(shm)} if (shm := segments_of([os.getpid()])) else {}),
            }
        )
        every, seconds = self.settings.commit_every, self.settings.commit_seconds
        perf, getrusage, who = time.perf_counter, resource.getrusage, resource.RUSAGE_SELF
        stop, acc = self.stop, runner.acc
        memory = tracking.Peaks(self.settings.track_memory, self.settings.track_gpu)
        if self.plan.crashed and self.world.is_root:
            self._record_crashes()
        batch = self.batch  # after the crash records' commit, which starts a new batch
        current = self.current = CurrentIndex(
            self.rd.current_path(self.plan.attempt, self.world.rank, self.token)
        )
        publisher = self.publisher
        mark, finished = current.set, current.finished
        timed = self.settings.index_timeout is not None
        log = self.log
        watchdog = Watchdog(self.settings.index_timeout, current)
        ru = getrusage(who)
        cpu_before = ru.ru_utime + ru.ru_stime
        due = perf() + seconds
        spacing = pacing.interval(self.world.size)  # 0 up to 200 ranks: a large job's pace
        not_before = perf() + pacing.first_offset(self.world.rank, spacing)
        with publisher:  # closed after the last commit, which waits for its outputs
            try:
                watchdog.__enter__()
                for index in indices:
                    t0 = perf()
                    mark(index)  # one store to shared memory: names the index if the rank dies
                    if log is not None:
                        log.index, self._log_from = index, log.size
                    if timed:
                        watchdog.start(index)
                    publisher.tag = len(batch)  # which index a deferred output belongs to
                    if memory.on:
                        memory.reset()
                    try:
                        out = runner(index)
                        if timed:
                            watchdog.stop()
                        ok = 1
                    except BaseException as exc:  # SystemExit, KeyboardInterrupt of user code too
                        if timed:
                            watchdog.stop()
                        if isinstance(exc, GeneratorExit):
                            raise
                        out, ok = [], 0
                        self._record_failure(exc, len(batch))
                    finished(ok)  # live counters between commits; marks the rank idle
                    if log is not None:
                        log.index = None
                    t1 = perf()
                    ru = getrusage(who)
                    cpu_now = ru.ru_utime + ru.ru_stime
                    batch.append(
                        (index, ok, t1 - t0, cpu_now - cpu_before, ru.ru_maxrss, out, tuple(acc),
                         *(memory.peaks() if memory.on else (None, None)))
                    )  # fmt: skip
                    cpu_before = cpu_now
                    if (len(batch) >= every or t1 >= due) and t1 >= not_before:
                        self.commit()
                        batch = self.batch
                        due = perf() + seconds
                        not_before = due - seconds + spacing
                        ru = getrusage(who)
                        cpu_before = ru.ru_utime + ru.ru_stime
                    if stop.reason is not None:
                        break
            finally:
                watchdog.__exit__()
                self.commit()
                current.close()
                self.current = None
                memory.close()
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
            "writer": self.token,
            "ok": self.n_ok,
            "failed": self.n_failed,
            "busy": self.busy,
            "started": started,
            "ended": time.time(),
            "commits": self.seq,
            "reason": self.stop.reason or "done",
            **({"dropped": self.dropped} if self.dropped else {}),
            "peak_rss": _peak_rss(),
        }
        self.writer.append({"t": "end", **summary})
        self.writer.close()
        return summary

    def _record_crashes(self) -> None:
        """Rank 0: commit the indices that killed their rank too often as failed."""
        for rec in self.plan.crashed:
            self.b_err[str(len(self.batch))] = {k: rec[k] for k in ("type", "msg", "tb")}
            self.batch.append((int(rec["index"]), 0, 0.0, 0.0, 0, [], (), None, None))
            self.failures.add(1)
        self.commit()

    def _record_failure(self, exc: BaseException, position: int) -> None:
        self.b_err[str(position)] = {
            "type": type(exc).__qualname__,
            "msg": str(exc),
            "tb": traceback.format_exc(),
        }
        stage = getattr(exc, "hpc_curator_stage", None)
        if stage is not None:
            self.b_err[str(position)]["stage"] = stage
        if self.log is not None:  # where its output is: hpc-curate logs D --index I
            self.log.line(f"failed: {type(exc).__qualname__}: {exc}", "hpc")
            rel = self.log.path.relative_to(self.rd.path).as_posix()
            span = [self._log_from, self.log.size]
            self.b_err[str(position)]["log"] = {"file": rel, "bytes": span}
        self._count_failures(1)

    def _count_failures(self, n: int) -> None:
        """Add ``n`` failures to the run's count; stop every rank past the failure budget."""
        total = self.failures.add(n)
        if self.budget is not None and total > self.budget:
            self.stop.set("max_failures")

    def _fail_unkept(self, unkept: list[writebehind.Unkept]) -> None:
        """Record indices whose outputs the write-behind publisher could not keep as failed.

        Without stateful filters only those indices fail. With them, every index of the batch
        does: their contributions sit in one delta, which is dropped (a failed index must not
        be counted), so the rest cannot be committed as done either; ``retry`` reruns them.
        """
        by_tag: dict[int, writebehind.Unkept] = {}
        for lost in unkept:
            by_tag.setdefault(lost.tag, lost)
        stateful = self.pipeline.stateful_filters
        for f in stateful:
            f.drop_delta()
        first = unkept[0]
        positions = range(len(self.batch)) if stateful else sorted(by_tag)
        n = 0
        for pos in positions:
            row = self.batch[pos]
            if not row[1]:
                continue  # failed already
            own = by_tag.get(pos)
            if own is not None:
                msg = f"output {own.path} not kept: {own.msg}"
                err = {"type": own.type, "msg": msg, "tb": own.tb}
            else:
                err = {
                    "type": "OutputNotKept",
                    "msg": f"index {self.batch[first.tag][0]} of the same commit lost its output "
                    f"{first.path} ({first.msg}); this index's stateful-filter contributions "
                    "were dropped with it",
                    "tb": "",
                }
            self.b_err[str(pos)] = {**err, "stage": "sink"}
            self.batch[pos] = (row[0], 0, *row[2:5], [], *row[6:])
            n += 1
        if self.current is not None:
            self.current.refail(n)
        self._count_failures(n)

    def commit(self) -> None:
        """Flush segments, then append the commit record (the commit point)."""
        if not self.batch:
            return
        unkept = self.publisher.drain()  # the batch's outputs are durable from here on
        if self.may_commit is not None and not self.may_commit():
            for f in self.pipeline.stateful_filters:
                f.drop_delta()
            self.dropped += len(self.batch)
            self._reset_batch()
            return
        if unkept:
            self._fail_unkept(unkept)
        try:
            record = self._write_commit()
        except BaseException:
            # a segment or the record could not be written (a full disk, a temporary removed
            # under it): the filters' deltas were flushed already, so a later commit of this
            # batch would count its indices without their contributions. Abandon it whole:
            # its indices stay unrecorded and run again.
            for f in self.pipeline.stateful_filters:
                f.drop_delta()
            self.seq += 1
            self._reset_batch()
            raise
        n_failed = len(self.b_err)
        self.n_failed += n_failed
        self.n_ok += len(record["idx"]) - n_failed
        self.seq += 1
        for name, seg in record["seg"].items():
            self.segments.setdefault(name, []).append(seg)
        if self.on_commit is not None:
            self.on_commit(record)
        self._reset_batch()
        self._count_failures(0)  # other ranks' failures count too

    def _write_commit(self) -> dict[str, Any]:
        """Write the batch's segments, then append its commit record; return the record."""
        segs: dict[str, str] = {}
        sums: dict[str, list[Any]] = {}
        for f in self.pipeline.stateful_filters:
            directory = ensure_dir(self.rd.shard_dir(f.name), self.rd.path)
            name = shards.write_segment(
                f, directory, self.world.rank, self.plan.attempt, self.seq, self.token
            )
            if name is not None:
                segs[f.name] = name
                sums[f.name] = size_and_digest(directory / name)
        idx, ok, wall, cpu, rss_kib, out, stage, pymem, gpumem = zip(*self.batch, strict=True)
        self.busy += sum(wall)
        record = {
            "t": "commit",
            "seq": self.seq,
            **({"gen": self.generation} if self.generation else {}),
            "time": time.time(),
            "idx": list(idx),
            "ok": list(ok),
            # rounded to microseconds: shorter JSON, and float repr is the costly part; numpy
            # arrays go to orjson as they are (the same text as lists, ~0.2 µs less per index)
            "wall": np.round(np.array(wall), 6),
            "cpu": np.round(np.array(cpu), 6),
            "rss": np.array(rss_kib, dtype=np.int64) * 1024,
            "err": self.b_err,
            "seg": segs,
            "segsum": sums,
            # seconds per stage (stages.stage_names, in the start record) of each index
            "stage": _round_stages(stage),
        }
        if self.settings.track_memory:
            record["pymem"] = list(pymem)
        if self.settings.track_gpu:
            record["gpumem"] = list(gpumem)
        record["out"] = list(out)  # last: scans that skip outputs cut the line here
        self.writer.append(record)
        return record


def _round_stages(stage: tuple[tuple[float, ...], ...]) -> np.ndarray | list[list[float]]:
    """Stage seconds rounded to microseconds (one numpy array when every row is complete)."""
    width = len(stage[0]) if stage else 0
    if width and all(len(row) == width for row in stage):
        return np.round(np.array(stage, dtype=np.float64), 6)
    return [[round(v, 6) for v in row] for row in stage]


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def my_indices(plan: Plan, world: World, chunks: Counter | None, stop: StopFlag) -> Iterator[int]:
    """This rank's indices: a static slice, or chunks claimed from the shared counter."""
    if world.is_root and plan.suspects:
        # indices whose rank died while running them: alone on rank 0 first, one after the
        # other, so a poison pill cannot take an innocent index of another rank with it twice
        yield from plan.suspects
    bounds = plan.unit_bounds  # index groups: every schedule hands out whole units
    if plan.settings.schedule != "dynamic":
        if bounds is not None:
            share = groups.share(
                as_array(plan.pending), bounds, world.rank, world.size, plan.settings.schedule
            )
        else:
            share = partition.slice_for(
                plan.pending, world.rank, world.size, plan.settings.schedule
            )
        for start in range(0, len(share), 1 << 16):  # Python ints, 65,536 at a time: no
            yield from share[start : start + (1 << 16)].tolist()  # conversion per index
        return
    assert chunks is not None
    n, fixed = len(plan.pending), plan.settings.chunk_size  # a chunk size the user set holds
    size = fixed or partition.default_chunk_size(n, world.size)
    starts = partition.dynamic_bounds(n, world.size, size, taper=not fixed, units=bounds)
    while not stop:
        number = chunks.add(1) - 1
        if number + 1 >= len(starts):
            return
        part = plan.pending[starts[number] : starts[number + 1]]
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
    scheduler: Scheduler | None = None,
) -> dict[str, Any]:
    """Run this rank's share of ``plan`` and return its summary (never raises for an index).

    The one rank program of every launcher: MPI ranks, pool slots, the sequential world and
    elastic tasks differ only in how they choose their indices -- ``scheduler`` (given the
    loop, e.g. to fence each commit of a claimed chunk), by default the plan's static or
    shared-counter schedule (:func:`my_indices`).
    """
    os.chdir(plan.cwd)
    stop = StopFlag() if stop is None else stop
    pipeline = pipeline or specmod.build(plan.spec)
    failures = failures or LocalCounter(plan.failures_before)
    loop = RankLoop(plan, world, pipeline, failures, stop, on_commit)
    with ranklog.capture(loop.rd.rank_log(plan.attempt, world.rank)) as log:
        loop.log = log
        indices = scheduler(loop) if scheduler else my_indices(plan, world, chunks, stop)
        return loop.run(indices)
