"""Per-stage wall time of every index: source, each filter, sink; and which stage failed.

A pipeline's stages are lazy generators chained into each other, so the time of one stage is
what its own ``next()`` costs minus what its upstream's ``next()`` cost inside it. Every stage
is wrapped in :func:`_timed`, which adds the time of each ``next()`` to the stage's
*inclusive* total; exclusive times follow by subtraction, and the sink's is what is left of
the index's wall time. Measured cost: about 0.3 µs per item and stage (two
``perf_counter`` calls and one generator frame), on by default.

Stage names are ``source``, ``<k>.<FilterClass>`` (``k`` from 1) and ``sink``; they are in
every journal's start record and become the manifest's ``time_<name>`` columns.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from hpc_curator.engine.contributions import GATE, accept_together, discard_all
from hpc_curator.model.pipeline import Item, Pipeline, checked_paths


def stage_names(pipeline: Pipeline) -> list[str]:
    """The pipeline's stages, in order."""
    names = ["source"] + [f"{k}.{type(f).__name__}" for k, f in enumerate(pipeline.filters, 1)]
    return names + (["sink"] if pipeline.sink is not None else [])


def _timed(it: Iterator[Item], inclusive: list[float], k: int) -> Iterator[Item]:
    """Yield what ``it`` yields, adding the time spent inside it to ``inclusive[k]``.

    The loop is a ``for`` (StopIteration handled in C) inside one ``try``: cheaper than a
    ``try`` around every ``next``. The first stage an exception passes is noted in the last
    slot of ``inclusive`` (``-1``: none yet).
    """
    perf = time.perf_counter
    t = perf()
    try:
        for item in it:
            inclusive[k] += perf() - t
            yield item
            t = perf()
    except GeneratorExit:
        raise
    except BaseException:
        inclusive[k] += perf() - t
        if inclusive[-1] < 0:
            inclusive[-1] = k
        raise
    inclusive[k] += perf() - t


class StageRunner:
    """:meth:`Pipeline.run_index` that also writes each stage's own seconds into :attr:`acc`.

    Built once per rank loop (what the pipeline looks like is looked up once, not per index).
    ``acc`` has one slot per :func:`stage_names` entry and is overwritten by every call (also
    when the index fails). On failure the exception gets ``hpc_curator_stage``: the failing
    stage's name.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.names = stage_names(pipeline)
        self.acc = [0.0] * len(self.names)
        self._source = pipeline.source
        self._filters = tuple(enumerate(pipeline.filters, 1))
        self._sink = pipeline.sink
        self._stateful = pipeline.stateful_filters
        self._stateful_stage = [
            self.names[k] for k, f in self._filters if any(f is s for s in self._stateful)
        ]
        self._n = len(pipeline.filters)
        self._blank = [0.0] * (self._n + 1) + [-1.0]  # inclusive seconds, failed stage

    def __call__(self, index: int) -> list[str]:
        """Run ``index`` through the sink; return the paths it wrote."""
        perf = time.perf_counter
        stateful, sink, gate = self._stateful, self._sink, GATE
        for f in stateful:
            f.begin()
        inclusive = self._blank[:]
        t0 = perf()
        created = ended = 0.0
        try:
            source = self._source[index]
            created = perf() - t0
            items: Iterator[Item] = _timed(iter(source), inclusive, 0)
            for k, filt in self._filters:
                items = _timed(filt(items), inclusive, k)
            if sink is None:
                for _ in items:
                    pass
                paths: list[str] = []
            else:
                value = sink(items, index)
                # the common case (nothing written) without a call
                paths = [] if type(value) is list and not value else checked_paths(value, sink)
            if stateful:
                ended = perf()  # accepting the contributions is no stage's time
                # every stateful filter's contribution, or none; a timeout cannot split it
                accept_together(stateful)
            else:  # nothing to accept: the outcome is settled, a late timeout is ignored
                gate.open = False
        except BaseException as exc:
            discard_all(stateful)
            k = int(inclusive[-1])
            at = getattr(exc, "hpc_curator_filter", None) if ended else None
            if at is not None:  # a combine failed: that filter's stage
                where = self._stateful_stage[at]
            elif k >= 0:
                where = self.names[k]
            else:
                where = "sink" if sink is not None and created else "source"
            _annotate(exc, where)
            raise
        finally:
            total = (ended or perf()) - t0
            acc, n = self.acc, self._n
            previous = 0.0
            for k in range(n + 1):
                acc[k] = inclusive[k] - previous
                previous = inclusive[k]
            acc[0] += created
            if sink is not None:
                acc[n + 1] = max(0.0, total - inclusive[n] - created)
        return paths


def _annotate(exc: BaseException, stage: str) -> None:
    try:
        exc.hpc_curator_stage = stage  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass  # an exception type with __slots__: the stage stays unknown


def recorded_names(scan: Any) -> list[str]:
    """The stage names of the newest journal that recorded them (a ``JournalScan``)."""
    for info in reversed(scan.worker_info):
        if info.get("stages"):
            return list(info["stages"])
    return []


def matrix(scan: Any) -> Any:
    """Seconds per scan position and stage (NaN where not recorded); ``None`` if none were."""
    import numpy as np

    width = max(
        (len(r[0]) for _, r in scan.stage_records if r is not None and len(r) and len(r[0])),
        default=0,
    )
    if not width:
        return None
    out = np.full((len(scan.idx), width), np.nan)
    at = 0
    for n, rows in scan.stage_records:
        if rows is not None:
            try:  # the usual case: every row of the record has every stage
                block = np.asarray(rows, dtype=np.float64)
            except ValueError:
                block = None
            if block is not None and block.ndim == 2 and block.shape[1] <= width:
                out[at : at + n, : block.shape[1]] = block
            else:  # ragged (crash records have no stages)
                for k, row in enumerate(rows):
                    if row:
                        out[at + k, : min(len(row), width)] = row[:width]
        at += n
    return out


def summarize(names: list[str], matrix: Any) -> dict[str, Any]:
    """``{"stages": {name: total/mean/max seconds, share}, "slowest_stage": name}``."""
    import numpy as np

    if matrix is None or matrix.shape[0] == 0:
        return {"stages": {}, "slowest_stage": None}
    with np.errstate(invalid="ignore"):
        peak = np.fmax.reduce(matrix, axis=0)
    return summarize_totals(names, np.nansum(matrix, axis=0), (~np.isnan(matrix)).sum(axis=0), peak)


def summarize_totals(names: list[str], totals: Any, counts: Any, peaks: Any) -> dict[str, Any]:
    """:func:`summarize` from per-stage sums, counts of recorded values and maxima (NaN or
    -inf: none recorded), which add up over blocks of rows
    (:class:`hpc_curator.store.rows.Tally`)."""
    if not len(names) or not len(totals):
        return {"stages": {}, "slowest_stage": None}
    grand = float(totals.sum()) or 1.0
    out: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names[: len(totals)]):
        have = int(counts[k]) > 0
        out[name] = {
            "total_s": round(float(totals[k]), 6),
            "mean_s": round(float(totals[k]) / int(counts[k]), 9) if have else None,
            "max_s": round(float(peaks[k]), 6) if have else None,
            "share": round(float(totals[k]) / grand, 4),
        }
    slowest = max(out, key=lambda n: float(out[n]["total_s"])) if out else None
    return {"stages": out, "slowest_stage": slowest}
