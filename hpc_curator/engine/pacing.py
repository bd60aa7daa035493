"""Commit pacing: a large job's ranks commit no more often, together, than the MDS can take.

Each commit is ~5 metadata modifications (segment create, rename, fsyncs) and ~17 lookups on
the parallel filesystem's metadata server (benchmarks/SCALE.md). With 65,536 ranks committing
every 30 s that is ~2,200 commits/s, half of one Lustre MDT. So a rank waits at least
``writers / rate`` seconds between its commits, :data:`RATE_ENV` (default
:data:`DEFAULT_RATE` commits/s for the whole job, ~5 % of an MDT), and its first commit is
offset by a fraction of that interval that differs per rank, so that ranks started together do
not commit in the same second. Below one second of spacing (up to ``rate`` writers) nothing
changes: ``--commit-every`` / ``--commit-seconds`` alone decide.

The price is durability: a crash loses up to one interval of a rank's work (328 s at 65,536
ranks). A stop (signal, time limit, failure budget) and the end always commit at once.
"""

from __future__ import annotations

import os

#: environment variable: commits per second for the whole job (0: no pacing)
RATE_ENV = "HPC_CURATOR_COMMIT_RATE"
DEFAULT_RATE = 200.0
#: spacing below which pacing is off (a second between commits costs a small job nothing)
MIN_INTERVAL = 1.0
_GOLDEN = 0.6180339887498949


def rate() -> float:
    """Job-wide commits per second (:data:`RATE_ENV`); 0 turns pacing off."""
    try:
        value = float(os.environ.get(RATE_ENV, DEFAULT_RATE))
    except ValueError:
        return DEFAULT_RATE
    return max(0.0, value)


def interval(writers: int, per_second: float | None = None) -> float:
    """Least seconds between two commits of one of ``writers`` journal writers (0: any)."""
    per_second = rate() if per_second is None else per_second
    if per_second <= 0 or writers <= 0:
        return 0.0
    spacing = writers / per_second
    return spacing if spacing >= MIN_INTERVAL else 0.0


def first_offset(rank: int, spacing: float) -> float:
    """Seconds before rank ``rank``'s first commit may happen: spread evenly over
    ``[0, spacing)`` (a low-discrepancy sequence, the same on every launch)."""
    return ((rank * _GOLDEN) % 1.0) * spacing
