"""Terminal output: a rich progress bar on a TTY, plain timestamped lines otherwise."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any, TextIO


def stamp() -> str:
    """Local time for plain log lines."""
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


class ProgressView:
    """Count committed indices and show progress.

    On a TTY a rich progress bar with rate and ETA; otherwise one plain line every
    ``interval`` seconds (log files and CI stay readable). Fed from commit records, either
    directly by an in-process rank loop or by a journal follower.

    Parameters
    ----------
    todo
        Indices this attempt has to run.
    label
        Text in front of the bar.
    interval
        Seconds between plain lines.
    stream
        Output stream (default stderr).
    """

    def __init__(
        self,
        todo: int,
        label: str = "running",
        interval: float = 10.0,
        stream: TextIO | None = None,
        enabled: bool = True,
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
        self._last_line = 0.0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressView:
        if self.enabled and self.tty:
            from rich.console import Console
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
                console=Console(file=self.stream),
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.todo, failed=0, rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.enabled and self.done:
            self._plain()

    def on_commit(self, record: dict[str, Any]) -> None:
        """Account one commit record."""
        self.done += len(record["idx"])
        self.failed += len(record.get("err", {}))
        rate = self.done / max(1e-9, time.monotonic() - self.started)
        if self._bar is not None:
            self._bar.update(
                self._task, completed=self.done, failed=self.failed, rate=f"{rate:,.1f}/s"
            )
        elif self.enabled and time.monotonic() - self._last_line >= self.interval:
            self._plain()

    def _plain(self) -> None:
        elapsed = time.monotonic() - self.started
        rate = self.done / max(1e-9, elapsed)
        left = (self.todo - self.done) / rate if rate > 0 else float("nan")
        print(
            f"{stamp()} {self.label}: {self.done}/{self.todo} done, {self.failed} failed, "
            f"{rate:,.1f}/s, eta {left:,.0f}s",
            file=self.stream,
            flush=True,
        )
        self._last_line = time.monotonic()
