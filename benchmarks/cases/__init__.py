"""The benchmark cases P1..P7 of issue 6 (sizes, contenders, derived numbers, targets).

One module per family: :mod:`~benchmarks.cases.overhead` (P1, P6: W0 no-op runs),
:mod:`~benchmarks.cases.throughput` (P2), :mod:`~benchmarks.cases.merge_scan` (P3),
:mod:`~benchmarks.cases.latency` (P4 CLI, P7 component timing),
:mod:`~benchmarks.cases.imbalance` (P5), :mod:`~benchmarks.cases.elastic` (P8: job array vs
MPI job on the local Slurm cluster; not in the default set), :mod:`~benchmarks.cases.startup`
(P9: metadata operations at start-up, strace), :mod:`~benchmarks.cases.stream` (P10: the
streamed manifest and resume scan at 10^6-10^8 indices; not in the default set),
:mod:`~benchmarks.cases.peers` (P11, P12: W0 and W2 against every peer); what they share is
in :mod:`~benchmarks.cases.common`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.cases.common import Config
from benchmarks.cases.elastic import p8
from benchmarks.cases.imbalance import p5
from benchmarks.cases.latency import p4, p7
from benchmarks.cases.merge_scan import p3
from benchmarks.cases.overhead import p1, p6
from benchmarks.cases.peers import p11, p12
from benchmarks.cases.startup import p9
from benchmarks.cases.stream import p10
from benchmarks.cases.throughput import p2

__all__ = ["CASES", "DEFAULT_CASES", "Config"]

CASES: dict[str, tuple[str, Callable[[Config], dict[str, Any]]]] = {
    "P1": ("overhead", p1),
    "P2": ("throughput", p2),
    "P3": ("merge and manifest", p3),
    "P4": ("CLI latency", p4),
    "P5": ("imbalance", p5),
    "P6": ("scale", p6),
    "P7": ("component timing", p7),
    "P8": ("job array vs MPI job", p8),
    "P9": ("start-up metadata operations", p9),
    "P10": ("streamed manifest and resume scan", p10),
    "P11": ("W0 against every peer", p11),
    "P12": ("W2 against every peer", p12),
}

#: Cases run when ``--case`` is not given (P8 starts a Slurm cluster, P9 needs strace, P10
#: writes gigabytes: ask for them by name).
DEFAULT_CASES = [k for k in CASES if k not in ("P8", "P9", "P10")]
