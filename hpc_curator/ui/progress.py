"""Live progress of a run, computed from its journals only and incrementally.

:class:`ProgressModel` follows every journal of a run directory with a
:class:`~hpc_curator.ui.follow.JournalFollower`: each :meth:`ProgressModel.poll` reads only the
bytes appended since the previous poll, and every count is updated from the new records alone,
so the cost of a refresh is flat however many indices the run has already committed. The first
poll reads what was already there; those indices are the *baseline* (committed before the view
started). Besides the journals, the model only reads ``run.json`` once (the frozen count and
settings) and the small attempt records (to know whether an attempt ended).

Exactness without a per-index table: an index is recorded again only when a failed index is
retried, so the model keeps the set of currently failed indices and nothing else; ``ok`` is the
number of recorded indices minus that set.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_curator.store import attempt_records, rundir
from hpc_curator.ui import follow

#: A rank is stale when it has not committed for max(FACTOR * median interval, FLOOR) seconds.
STALE_FACTOR = 3.0
STALE_FLOOR = 60.0
#: Commit intervals kept per rank for the median.
INTERVAL_WINDOW = 32
#: Recent failures kept for display.
RECENT_FAILURES = 10
#: Least seconds between two reads of the ranks' live counters.
LIVE_INTERVAL = 1.0


@dataclass(frozen=True)
class FailureInfo:
    """One failed index as seen in a commit record."""

    index: int
    attempt: int
    rank: int
    type: str
    message: str
    time: float | None


@dataclass
class _Worker:
    """Running counters of one journal (one rank of one attempt)."""

    attempt: int
    rank: int
    host: str | None = None
    node: str | None = None
    pid: int | None = None
    writer: str = ""
    started: float | None = None
    ended: float | None = None
    reason: str | None = None
    done: int = 0
    failed: int = 0
    commits: int = 0
    last_commit: float | None = None
    intervals: deque[float] = field(default_factory=lambda: deque(maxlen=INTERVAL_WINDOW))
    #: live counters between commits (poison.CurrentIndex): index running, finished in
    #: this attempt (committed or not), and when the last one finished
    current: int | None = None
    live_done: int = 0
    live_at: float | None = None


@dataclass(frozen=True)
class RankRow:
    """What the display shows for one rank (a snapshot).

    ``state`` is ``running``, ``stale`` (no commit for longer than ``stale_after`` while the
    attempt runs), ``lost`` (the attempt ended or died without this rank's end record) or the
    rank's own end reason (``done``, ``SIGTERM``, ``max_failures`` ...).
    """

    attempt: int
    rank: int
    host: str | None
    node: str | None
    done: int
    failed: int
    rate: float
    since_commit: float | None
    stale_after: float
    state: str
    pid: int | None = None
    #: the index it is running now (``None``: idle or unknown)
    current: int | None = None
    #: indices finished since its last commit (not durable yet)
    uncommitted: int = 0

    @property
    def stale(self) -> bool:
        """Whether the rank is marked stale."""
        return self.state == "stale"


@dataclass(frozen=True)
class Totals:
    """Run-wide counts (a snapshot). ``total`` is ``None`` until ``run.json`` exists."""

    total: int | None
    ok: int
    failed: int
    baseline: int
    rate: float
    eta: float | None
    elapsed: float
    #: indices finished by running ranks but not committed yet (shown, never counted as done)
    uncommitted: int = 0

    @property
    def done(self) -> int:
        """Recorded indices (ok + failed)."""
        return self.ok + self.failed

    @property
    def pending(self) -> int | None:
        """Indices without a record yet."""
        return None if self.total is None else max(0, self.total - self.done)

    @property
    def new(self) -> int:
        """Indices recorded since the view started."""
        return self.done - self.baseline


@dataclass(frozen=True)
class Snapshot:
    """Everything a display needs at one instant."""

    run_dir: str
    now: float
    totals: Totals
    rows: list[RankRow]
    failures: list[FailureInfo]
    attempt: int | None
    attempt_state: str


class ProgressModel:
    """Incremental progress of one run directory, fed by a :class:`JournalFollower`.

    Parameters
    ----------
    run_dir
        The run directory (it need not exist yet; polls wait for it).
    clock
        Wall-clock source (seconds since the epoch); injectable for tests.

    Examples
    --------
    >>> model = ProgressModel("runs/demo")        # doctest: +SKIP
    >>> model.poll(); model.snapshot().totals     # doctest: +SKIP
    """

    def __init__(self, run_dir: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.rd = rundir.RunDir(run_dir)
        self.follower = follow.JournalFollower(self.rd)
        self.clock = clock
        self.view_started = clock()
        self.total: int | None = None
        self.commit_seconds: float | None = None
        self.recorded = 0
        self.failed_now: set[int] = set()
        self.baseline: int | None = None
        self.records = 0
        self.workers: dict[tuple[int, int], _Worker] = {}
        self.recent: deque[FailureInfo] = deque(maxlen=RECENT_FAILURES)
        self.attempts: dict[int, dict[str, Any]] = {}
        self.polls = 0
        self._live_read = 0.0

    # -- reading -----------------------------------------------------------------------
    def poll(self) -> int:
        """Read the records appended since the last poll; return how many there were."""
        if self.total is None:
            self._read_run_json()
        self._read_attempts()
        new = self.follower.poll() if self.rd.journal_dir.is_dir() else []
        for key, rec in new:
            self._account(key, rec)
        self.records += len(new)
        if self.baseline is None:
            self.baseline = self.recorded
        self.polls += 1
        self._read_live()
        return len(new)

    def _read_live(self) -> None:
        """Read the running ranks' live counters, at most every ``LIVE_INTERVAL`` seconds.

        One small read per running rank: the interval grows with the world size (1 s per 500
        ranks) so a ``status --watch`` of a huge job adds a bounded load to the filesystem.
        """
        from hpc_curator.engine.poison import IDLE, read_live

        running = [w for w in self.workers.values() if w.ended is None]
        now = time.monotonic()
        if now - self._live_read < max(LIVE_INTERVAL, len(running) / 500):
            return
        self._live_read = now
        for w in running:
            live = read_live(self.rd.current_path(w.attempt, w.rank, w.writer))
            if live is None:
                continue
            index, w.live_done, _, at = live
            w.current = None if index == IDLE else index
            w.live_at = at or None

    def _read_run_json(self) -> None:
        try:
            meta = json.loads(self.rd.run_json.read_text())
        except (OSError, ValueError):
            return
        count = meta.get("indices", {}).get("count")
        self.total = int(count) if count is not None else rundir.load(self.rd).n
        self.commit_seconds = meta.get("settings", {}).get("commit_seconds")

    def _read_attempts(self) -> None:
        for path in self.rd.attempt_records():
            number = int(path.stem)
            if self.attempts.get(number, {}).get("ended"):
                continue  # an ended attempt record never changes again
            try:
                self.attempts[number] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being rewritten atomically; next poll

    def _account(self, key: tuple[int, int], rec: dict[str, Any]) -> None:
        w = self.workers.get(key)
        if w is None:
            w = self.workers[key] = _Worker(*key)
        kind = rec.get("t")
        if kind == "start":
            w.host, w.node, w.started = rec.get("host"), rec.get("node"), rec.get("time")
            w.pid, w.writer = rec.get("pid"), str(rec.get("writer", ""))
        elif kind == "end":
            w.ended, w.reason = rec.get("ended", rec.get("time")), rec.get("reason", "done")
        elif kind == "commit":
            self._commit(w, rec)

    def _commit(self, w: _Worker, rec: dict[str, Any]) -> None:
        idx: list[int] = rec.get("idx", [])
        ok: list[int] = rec.get("ok", [])
        err: dict[str, dict[str, Any]] = rec.get("err") or {}
        n = len(idx)
        if err or ok.count(0):
            fail_pos = [int(p) for p in err]
            if len(fail_pos) != ok.count(0):
                fail_pos = [i for i, flag in enumerate(ok) if not flag]
        else:
            fail_pos = []
        # Indices already recorded (failed before, retried now) are not new.
        retried = self.failed_now.intersection(idx) if self.failed_now else set()
        self.recorded += n - len(retried)
        self.failed_now -= retried
        when = rec.get("time")
        for p in fail_pos:
            index = int(idx[p])
            self.failed_now.add(index)
            e = err.get(str(p), {})
            self.recent.append(
                FailureInfo(
                    index, w.attempt, w.rank, e.get("type", "Unknown"), e.get("msg", ""), when
                )
            )
        w.done += n
        w.failed += len(fail_pos)
        w.commits += 1
        if when is not None:
            if w.last_commit is not None:
                w.intervals.append(max(0.0, when - w.last_commit))
            elif w.started is not None:
                w.intervals.append(max(0.0, when - w.started))
            w.last_commit = when

    # -- derived -----------------------------------------------------------------------
    @property
    def latest_attempt(self) -> int | None:
        """Number of the newest attempt (record or journal), ``None`` before the first."""
        numbers = list(self.attempts) + [a for a, _ in self.workers]
        return max(numbers) if numbers else None

    def attempt_state(self, attempt: int | None = None) -> str:
        """``waiting`` (no attempt yet), ``running``, ``ended`` or ``dead`` (no end, not alive)."""
        attempt = self.latest_attempt if attempt is None else attempt
        if attempt is None:
            return "waiting"
        rec = self.attempts.get(attempt)
        if rec is None:
            return "running"  # journals appeared before we saw the record
        if rec.get("ended"):
            return "ended"
        return "running" if attempt_records.attempt_alive(self.rd, rec, self.clock()) else "dead"

    def attempt_over(self) -> bool:
        """Whether the newest attempt has ended (or died); ``False`` before the first one."""
        return self.attempt_state() in ("ended", "dead")

    def _row(self, w: _Worker, now: float, attempt_states: dict[int, str]) -> RankRow:
        intervals = list(w.intervals)
        median = statistics.median(intervals) if intervals else self.commit_seconds
        stale_after = max(STALE_FACTOR * median, STALE_FLOOR) if median else STALE_FLOOR
        ref = w.last_commit if w.last_commit is not None else w.started
        since = max(0.0, now - ref) if ref is not None else None
        if w.reason is not None:
            state = w.reason
        elif attempt_states[w.attempt] in ("ended", "dead"):
            state = "lost"
        elif since is not None and since > stale_after:
            state = "stale"
        else:
            state = "running"
        end = w.ended if w.ended is not None else (w.last_commit if w.commits else now)
        done = w.done
        uncommitted = max(0, w.live_done - w.done) if w.ended is None else 0
        if uncommitted and w.live_at is not None:  # rate from the live counters
            end, done = w.live_at, w.live_done
        span = (end - w.started) if (w.started is not None and end is not None) else 0.0
        rate = done / span if span > 0 else 0.0
        return RankRow(
            w.attempt,
            w.rank,
            w.host,
            w.node,
            w.done,
            w.failed,
            rate,
            since,
            stale_after,
            state,
            w.pid,
            w.current if w.ended is None else None,
            uncommitted,
        )

    def snapshot(self) -> Snapshot:
        """The current state (no I/O beyond liveness checks of unfinished attempts)."""
        now = self.clock()
        states = {a: self.attempt_state(a) for a in {a for a, _ in self.workers}}
        rows = [self._row(w, now, states) for _, w in sorted(self.workers.items())]
        failed = len(self.failed_now)
        baseline = self.baseline or 0
        running = [r for r in rows if r.state in ("running", "stale")]
        elapsed = max(0.0, now - self.view_started)
        if running:
            rate = sum(r.rate for r in running)
        else:
            rate = (self.recorded - baseline) / elapsed if elapsed > 0 else 0.0
        pending = None if self.total is None else max(0, self.total - self.recorded)
        eta = pending / rate if (pending is not None and running and rate > 0) else None
        uncommitted = sum(r.uncommitted for r in running)
        if pending is not None and eta is not None and rate > 0:
            eta = max(0.0, pending - uncommitted) / rate
        totals = Totals(
            self.total, self.recorded - failed, failed, baseline, rate, eta, elapsed, uncommitted
        )
        latest = self.latest_attempt
        return Snapshot(
            run_dir=str(self.rd.path),
            now=now,
            totals=totals,
            rows=rows,
            failures=list(self.recent)[::-1],
            attempt=latest,
            attempt_state=self.attempt_state(latest),
        )


def format_seconds(seconds: float | None) -> str:
    """``H:MM:SS`` (or ``-`` when unknown)."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def plain_line(snap: Snapshot, label: str | None = None) -> str:
    """One line summarising a snapshot (non-TTY output), without the timestamp.

    Parameters
    ----------
    snap
        A :meth:`ProgressModel.snapshot`.
    label
        Prefix (default: the run directory's name).
    """
    t = snap.totals
    total = "?" if t.total is None else str(t.total)
    stale = sum(r.stale for r in snap.rows)
    running = sum(r.state in ("running", "stale") for r in snap.rows)
    parts = [
        f"{label or Path(snap.run_dir).name}:",
        f"{t.done}/{total} done ({t.ok} ok, {t.failed} failed, {t.pending or 0} pending"
        + (f", {t.uncommitted} finished not yet committed)," if t.uncommitted else "),"),
        f"{t.rate:,.1f}/s, eta {format_seconds(t.eta)},",
        f"attempt {snap.attempt or '-'} {snap.attempt_state}, {running} ranks running",
    ]
    if stale:
        parts[-1] += f", {stale} stale"
    return " ".join(parts)
