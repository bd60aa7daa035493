"""An index's stateful contributions: accepted into every filter together, or into none.

When an index succeeds, what each stateful filter observed while it ran (its *pending* state)
is folded into that filter's running delta. With several stateful filters this is one step per
filter, and an exception between two of them -- ``--index-timeout``'s ``IndexTimeout``, raised
asynchronously by SIGALRM in whatever Python code runs when it fires, or an error in the
second filter's ``combine`` -- used to leave the index failed while the first filter had
already counted it; a retry then counted it twice.

The acceptance now has two phases (:func:`accept_together`):

1. *prepare*: every filter computes its new running state (``combine(state, pending)``) without
   installing it. An ordinary exception here leaves every filter as it was (``combine`` must
   not modify its arguments); the caller discards the pending states and the index fails.
2. *install*: every filter swaps the prepared state in -- reference assignments only.

Before phase 1 the :data:`GATE` closes: from then on the index's outcome is being settled and
an ``--index-timeout`` alarm that fires is ignored (:class:`hpc_curator.engine.poison.Watchdog`
checks the gate before raising). An index whose contributions were accepted has succeeded; one
whose contributions are being discarded is failing already. A ``combine`` that never returns
is still ended by the watchdog's grace period (its rank is killed, a crash of that index).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Gate:
    """Whether an asynchronous timeout may still interrupt the current index.

    Opened by :meth:`hpc_curator.engine.poison.Watchdog.start` before each index; closed (one
    attribute store, which a signal handler cannot split) once the index's outcome is being
    settled: by :func:`accept_together` and :func:`discard_all`.
    """

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = True


#: The process's gate (timeouts are delivered to the main thread, which runs the indices).
GATE = Gate()


def accept_together(filters: Sequence[Any]) -> None:
    """Accept the index into every stateful filter of ``filters``, or (on error) into none.

    Parameters
    ----------
    filters
        The pipeline's stateful filters (objects with ``prepare()`` and ``install(new)``).

    Raises
    ------
    BaseException
        Whatever a filter's ``prepare`` (its ``combine``) raised, with ``hpc_curator_filter``
        set to that filter's position in ``filters`` where the exception type allows; no
        filter has changed then, and the caller discards every pending state
        (:func:`discard_all`).
    """
    GATE.open = False  # from here a late --index-timeout alarm is ignored
    prepared = []
    for k, f in enumerate(filters):
        try:
            prepared.append(f.prepare())
        except BaseException as exc:
            try:
                exc.hpc_curator_filter = k  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass  # an exception type with __slots__
            raise
    for f, new in zip(filters, prepared, strict=True):
        f.install(new)


def discard_all(filters: Sequence[Any]) -> None:
    """Drop what the failed index contributed to every stateful filter of ``filters``.

    Parameters
    ----------
    filters
        The pipeline's stateful filters (objects with ``discard()``).
    """
    GATE.open = False  # the index is failing: a timeout now must not cut the discard short
    for f in filters:
        f.discard()
