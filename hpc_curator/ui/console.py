"""Terminal output: rich live displays on a TTY, plain timestamped lines otherwise.

- :class:`ProgressView` — the progress of ``hpc-curate run``, fed commit records by the rank
  loop or a journal follower (optionally, with ``run_dir``, the per-rank table of
  :class:`LiveView` too).
- :class:`LiveView` — ``status --watch``: follows the journals of any run directory (local or
  on Slurm) through :class:`~hpc_curator.ui.progress.ProgressModel`; read-only.

rich is imported lazily, so importing this module is cheap.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from hpc_curator.ui.progress import ProgressModel, Snapshot, format_seconds, plain_line

if TYPE_CHECKING:
    from rich.console import RenderableType

#: Rows of the per-rank table before it is abbreviated (stale/lost ranks are shown first).
MAX_ROWS = 24
STATE_STYLE = {"running": "green", "done": "green", "stale": "bold red", "lost": "red"}


def stamp() -> str:
    """Local time for plain log lines."""
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def render_snapshot(snap: Snapshot, label: str | None = None, max_rows: int = MAX_ROWS) -> Any:
    """The rich renderable of a snapshot: overall bar, per-rank table, recent failures.

    Parameters
    ----------
    snap
        A :meth:`ProgressModel.snapshot`.
    label
        Title (default: the run directory's name).
    max_rows
        Rank rows shown before abbreviating; stale and lost ranks are listed first.

    Returns
    -------
    rich.console.Group
        Printable with any rich console.
    """
    from rich.console import Group
    from rich.panel import Panel
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    t = snap.totals
    title = Text.assemble(
        (label or Path(snap.run_dir).name, "bold"),
        f"  {snap.run_dir}  ",
        (f"attempt {snap.attempt or '-'}: {snap.attempt_state}", "cyan"),
    )
    bar = Table.grid(padding=(0, 1))
    total = t.total if t.total is not None else max(t.done, 1)
    pct = 100.0 * t.done / total if total else 100.0
    bar.add_row(
        ProgressBar(total=max(total, 1), completed=t.done, width=40),
        f"{t.done:,}/{total:,} ({pct:.1f}%)",
        Text(f"{t.failed:,} failed", style="red" if t.failed else "dim"),
        f"{t.pending or 0:,} pending"
        + (f" ({t.uncommitted:,} finished, not committed yet)" if t.uncommitted else ""),
        f"{t.rate:,.1f}/s",
        f"ETA {format_seconds(t.eta)}",
    )
    parts: list[Any] = [title, bar]
    if snap.rows:
        parts.append(_rank_table(snap, max_rows))
    if snap.failures:
        ft = Table(box=None, expand=True)
        ft.add_column("index", justify="right", no_wrap=True)
        ft.add_column("rank", no_wrap=True)
        ft.add_column("error", ratio=1, overflow="ellipsis", no_wrap=True)
        for f in snap.failures:
            ft.add_row(str(f.index), f"a{f.attempt}/r{f.rank}", f"{f.type}: {f.message}"[:200])
        parts.append(Panel(ft, title=f"recent failures ({t.failed:,} failed now)", style="red"))
    return Group(*parts)


def _rank_table(snap: Snapshot, max_rows: int) -> Any:
    from rich.table import Table

    latest = [r for r in snap.rows if r.attempt == snap.attempt] or snap.rows
    older = len(snap.rows) - len(latest)
    urgent = [r for r in latest if r.state in ("stale", "lost")]
    shown = urgent + [r for r in latest if r.state not in ("stale", "lost")]
    table = Table(
        "rank", "node", "done", "failed", "rate/s", "last commit", "running", "state",
        box=None, expand=False,
    )  # fmt: skip
    for r in shown[:max_rows]:
        since = "-" if r.since_commit is None else f"{r.since_commit:,.0f}s ago"
        state = "STALE" if r.stale else r.state
        table.add_row(
            str(r.rank),
            str(r.node or r.host or "?"),
            f"{r.done:,}" + (f" [dim]+{r.uncommitted:,}" if r.uncommitted else ""),
            f"[red]{r.failed:,}" if r.failed else "0",
            f"{r.rate:,.1f}",
            since,
            "-" if r.current is None else f"i={r.current}",
            f"[{STATE_STYLE.get(r.state, 'yellow')}]{state}",
        )
    notes = []
    if len(shown) > max_rows:
        notes.append(f"{len(shown) - max_rows} more ranks")
    if older:
        notes.append(f"{older} rank rows of earlier attempts hidden")
    if notes:
        table.caption = ", ".join(notes)
    return table


class LiveView:
    """Watch a run directory: a rich live display on a TTY, plain lines otherwise.

    Read-only: it reads journals incrementally, plus ``run.json`` and the attempt records;
    interrupting it never affects the run.

    Parameters
    ----------
    run_dir
        The run directory to watch (it may not exist yet).
    interval
        Seconds between refreshes (and between plain lines).
    stream
        Output stream (default stderr).
    label
        Title of the display (default: the run directory's name).
    """

    def __init__(
        self,
        run_dir: str | Path,
        interval: float = 1.0,
        stream: TextIO | None = None,
        *,
        label: str | None = None,
        max_rows: int = MAX_ROWS,
    ) -> None:
        self.model = ProgressModel(run_dir)
        self.interval = interval
        self.stream = stream or sys.stderr
        self.label = label
        self.max_rows = max_rows
        self.tty = self.stream.isatty()

    def render(self, poll: bool = True) -> RenderableType:
        """Poll the journals (unless ``poll=False``) and return the rich renderable."""
        if poll:
            self.model.poll()
        return render_snapshot(self.model.snapshot(), self.label, self.max_rows)

    def line(self, poll: bool = True) -> str:
        """Poll and return the plain timestamped line."""
        if poll:
            self.model.poll()
        return f"{stamp()} {plain_line(self.model.snapshot(), self.label)}"

    def run_until(self, done_predicate: Callable[[], bool] | None = None) -> bool:
        """Refresh every ``interval`` seconds until done or interrupted.

        Parameters
        ----------
        done_predicate
            Called after each refresh; the loop stops when it returns true. ``None`` (default)
            stops when the newest attempt has ended (or died without an end record).

        Returns
        -------
        bool
            ``True`` when it stopped because it was done, ``False`` on Ctrl-C
            (:class:`KeyboardInterrupt` is caught here; the run is never touched).
        """
        done = done_predicate or self.model.attempt_over
        try:
            if self.tty:
                return self._run_live(done)
            return self._run_plain(done)
        except KeyboardInterrupt:
            return False

    def _run_plain(self, done: Callable[[], bool]) -> bool:
        while True:
            print(self.line(), file=self.stream, flush=True)
            if done():
                return True
            time.sleep(self.interval)

    def _run_live(self, done: Callable[[], bool]) -> bool:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self.stream)
        with Live(self.render(), console=console, auto_refresh=False, transient=False) as live:
            while True:
                if done():
                    return True
                time.sleep(self.interval)
                live.update(self.render(), refresh=True)


class ProgressView:
    """Count committed indices and show progress.

    On a TTY a rich progress bar with rate and ETA — and, when ``run_dir`` is given, the full
    :class:`LiveView` display (per-rank rows, stale markers, recent failures) refreshed from
    the journals; otherwise one plain line every ``interval`` seconds (log files and CI stay
    readable). Fed from commit records, either directly by an in-process rank loop or by a
    journal follower.

    Parameters
    ----------
    todo
        Indices this attempt has to run (default: read from the run directory's progress
        model once the attempt has begun).
    label
        Text in front of the bar.
    interval
        Seconds between plain lines.
    stream
        Output stream (default stderr).
    enabled
        ``False`` shows nothing.
    run_dir
        Run directory to follow for the per-rank display (TTY only; may not exist yet).
    """

    def __init__(
        self,
        todo: int | None = None,
        label: str = "running",
        interval: float = 10.0,
        stream: TextIO | None = None,
        enabled: bool = True,
        run_dir: str | Path | None = None,
    ) -> None:
        self.todo = todo
        self.done = 0
        self.failed = 0
        self.label = label
        self.interval = interval
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.model = ProgressModel(run_dir) if run_dir is not None else None
        self._lock = threading.Lock()
        self._polled = 0.0
        self._last_line = 0.0
        self._bar: Any = None
        self._task: Any = None
        self._live: Any = None

    def __enter__(self) -> ProgressView:
        if self.model is not None and self.enabled:
            with self._lock:
                self.model.poll()  # what is recorded now is the baseline, not this launch
        if not (self.enabled and self.tty):
            return self
        from rich.console import Console

        console = Console(file=self.stream)
        if self.model is not None:
            from rich.live import Live

            self._live = Live(
                console=console, refresh_per_second=2, get_renderable=self._renderable
            )
            self._live.start()
            return self
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._bar.start()
        self._task = self._bar.add_task(self.label, total=self.todo or None, failed=0, rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._polled = 0.0  # force a last poll so the final state is shown
            self._live.refresh()
            self._live.stop()
        elif self._bar is not None:
            self._bar.stop()
        elif self.enabled and self.done:
            self._plain()

    def _renderable(self) -> Any:
        """Called by rich's refresh thread: poll at most every 0.5 s, then render."""
        assert self.model is not None
        with self._lock:
            if time.monotonic() - self._polled >= 0.5:
                self.model.poll()
                self._polled = time.monotonic()
            return render_snapshot(self.model.snapshot(), self.label)

    def on_commit(self, record: dict[str, Any]) -> None:
        """Account one commit record."""
        self.done += len(record["idx"])
        self.failed += len(record.get("err", {}))
        rate = self.done / max(1e-9, time.monotonic() - self.started)
        if self._bar is not None:
            self._bar.update(
                self._task, completed=self.done, failed=self.failed, rate=f"{rate:,.1f}/s"
            )
        elif (
            self._live is None
            and self.enabled
            and (time.monotonic() - self._last_line >= self.interval)
        ):
            self._plain()

    def _todo(self) -> int:
        if self.todo is not None:
            return self.todo
        if self.model is None:
            return self.done
        with self._lock:
            self.model.poll()
            totals = self.model.snapshot().totals
        if totals.total is None:
            return self.done
        return max(self.done, totals.total - totals.baseline)

    def _plain(self) -> None:
        elapsed = time.monotonic() - self.started
        rate = self.done / max(1e-9, elapsed)
        todo = self._todo()
        left = (todo - self.done) / rate if rate > 0 else float("nan")
        print(
            f"{stamp()} {self.label}: {self.done}/{todo} done, {self.failed} failed, "
            f"{rate:,.1f}/s, eta {left:,.0f}s",
            file=self.stream,
            flush=True,
        )
        self._last_line = time.monotonic()
