"""Stopping the rank loop cleanly: the stop flag and the signals that set it.

SIGUSR2 (Slurm's pre-timeout warning), SIGTERM (pre-emption, requeue, cancel), SIGINT
(Ctrl-C, forwarded by mpiexec) and SIGHUP (the terminal of a launcher closed) only *set a
flag*; the rank loop checks it between indices,
commits what is done and leaves. Nothing is written from inside a signal handler.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from hpc_curator.runtime.world import World


class StopFlag:
    """Set by signal handlers, the failure budget or the caller; checked between indices."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        """Ask the loop to stop after the current index (first reason wins)."""
        if self.reason is None:
            self.reason = reason

    def __bool__(self) -> bool:
        return self.reason is not None

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s, waking early once set; return whether it is set."""
        deadline = time.monotonic() + timeout
        while self.reason is None and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return self.reason is not None


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT, signal.SIGHUP)


def install_signal_handlers(stop: StopFlag) -> None:
    """SIGTERM, SIGUSR2 (Slurm pre-timeout), SIGINT and SIGHUP stop the loop; it then
    commits."""

    def handler(signum: int, _frame: Any) -> None:
        stop.set(signal.Signals(signum).name)

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)


@contextlib.contextmanager
def stop_on_signals(stop: StopFlag) -> Iterator[StopFlag]:
    """While inside, the stop signals set ``stop`` instead of interrupting this process.

    For launchers that run in the user's process (sequential, the parent of a pool, the
    parent of ``mpiexec``): Ctrl-C or SIGTERM then ends the attempt cleanly (everything
    committed, exit code 3) instead of raising in the middle of an index. The previous
    handlers are restored on exit. Outside the main thread (signals cannot be handled there)
    it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    install_signal_handlers(stop)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def block_stop_signals(block: bool = True) -> None:
    """Hold the stop signals pending (or release them).

    Used around MPI initialisation and finalisation: Slurm may send SIGUSR2 at any moment, and
    a signal interrupting the PMI-2 wire-up corrupts it (seen: "mpi/pmi2: invalid client
    request" and an abort). A held signal is delivered when released, so nothing is lost.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK if block else signal.SIG_UNBLOCK, STOP_SIGNALS)


def start_rank() -> tuple[World, StopFlag]:
    """Initialise MPI with stop signals held, then install the handlers and release them."""
    from hpc_curator.runtime.world import detect_world, tune_malloc

    block_stop_signals()
    try:
        world = detect_world()
    finally:
        stop = StopFlag()
        install_signal_handlers(stop)
        block_stop_signals(False)
    tune_malloc()
    return world, stop
