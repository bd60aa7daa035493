"""Per-rank logs of user code: ``D/logs/aNNNN-rankRRRRR.log``.

While a rank (or pool worker) runs its share, its ``sys.stdout`` and ``sys.stderr`` are tees:
every write still reaches the terminal (or the Slurm task log) unchanged, and each complete
line is also appended to the rank's log file, tagged with the time, the stream and the index
being run::

    2026-12-02 00:53:01.123 i=17 err| RuntimeWarning: invalid value encountered in divide

So ``print``, ``warnings``, tracebacks and Python ``logging`` (a handler on the root logger is
added when the program configured none) all land there, one file per rank and attempt, for
local, pool and Slurm runs alike; ``hpc-curate logs D --rank R [--index I] [--follow]`` reads
them. Each line is one unbuffered ``write`` (nothing is lost when the process is killed after
it). Output of C code written straight to file descriptor 1/2 is not captured (it still
reaches the terminal or the Slurm log). A file stops growing at ``HPC_CURATOR_LOG_MAX_BYTES``
(default 64 MiB) with a note saying so: a chatty index cannot fill the disk.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

MAX_BYTES_ENV = "HPC_CURATOR_LOG_MAX_BYTES"
DEFAULT_MAX_BYTES = 64 << 20
_TAG = re.compile(rb"^\S+ \S+ i=(-?\d+|-) ")


class RankLog:
    """The log file of one rank in one attempt, and the index it is running."""

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes or int(os.environ.get(MAX_BYTES_ENV, DEFAULT_MAX_BYTES))
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self._fd).st_size
        self.index: int | None = None
        self.capped = False

    def line(self, text: str, stream: str) -> None:
        """Append one tagged line (``text`` without its newline)."""
        if self.capped or self._fd < 0:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        tag = "-" if self.index is None else str(self.index)
        data = f"{stamp}.{int(now * 1000) % 1000:03d} i={tag} {stream}| {text}\n".encode(
            errors="replace"
        )
        if self.size + len(data) > self.max_bytes:
            data = (
                f"{stamp} i={tag} log| [log cap of {self.max_bytes} bytes reached: further "
                f"output of this rank is not kept here ({MAX_BYTES_ENV})]\n"
            ).encode()
            self.capped = True
        try:
            self.size += os.write(self._fd, data)
        except OSError:
            self.capped = True  # a full disk must not fail the index that printed

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Tee(io.TextIOBase):
    """A text stream writing through to ``original`` and, line by line, to a :class:`RankLog`."""

    def __init__(self, original: TextIO, log: RankLog, stream: str) -> None:
        self.original = original
        self.log = log
        self.stream = stream
        self._partial = ""

    def write(self, s: str) -> int:
        self.original.write(s)
        text = self._partial + s
        *lines, self._partial = text.split("\n")
        for line in lines:
            self.log.line(line, self.stream)
        return len(s)

    def flush(self) -> None:
        self.original.flush()

    def finish(self) -> None:
        if self._partial:
            self.log.line(self._partial, self.stream)
            self._partial = ""

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


@contextlib.contextmanager
def capture(path: Path) -> Iterator[RankLog]:
    """Tee ``sys.stdout``/``sys.stderr`` (and root logging) into ``path`` while inside."""
    log = RankLog(path)
    saved = sys.stdout, sys.stderr
    out, err = _Tee(sys.stdout, log, "out"), _Tee(sys.stderr, log, "err")
    sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
    handler = None
    root = logging.getLogger()
    if not root.handlers:  # the program configured no logging: show and keep its records
        handler = logging.StreamHandler(err)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    try:
        yield log
    finally:
        if handler is not None:
            root.removeHandler(handler)
        for tee in (out, err):
            tee.finish()
        sys.stdout, sys.stderr = saved
        log.close()


def lines_of(path: Path, index: int | None = None) -> Iterator[bytes]:
    """The lines of a rank log, or only those written while ``index`` ran."""
    want = None if index is None else str(index).encode()
    with open(path, "rb") as fh:
        for line in fh:
            if want is None:
                yield line
                continue
            m = _TAG.match(line)
            if m is not None and m.group(1) == want:
                yield line
