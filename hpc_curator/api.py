"""The Python API: ``run_pipeline`` and ``gather_pipeline``.

>>> from hpc_curator import Pipeline, run_pipeline
>>> from hpc_curator.components import SyntheticSource, FieldStats
>>> paths = run_pipeline(Pipeline(SyntheticSource(100)).filter(FieldStats()), n_jobs=2,
...                      backend="process_pool")            # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hpc_curator.backends import get_backend
from hpc_curator.backends.base import RUNS_ROOT as RUNS_ROOT
from hpc_curator.backends.base import Launch, default_backend, new_run_dir
from hpc_curator.engine.gather import merge_outputs
from hpc_curator.engine.values import RunResult, RunSettings
from hpc_curator.errors import UsageError
from hpc_curator.model import spec as specmod
from hpc_curator.model.pipeline import Pipeline
from hpc_curator.store import attempt_records, fold, journal, rundir

log = logging.getLogger("hpc_curator")


@dataclass(frozen=True)
class RunConfig:
    """Launch settings of :func:`run_pipeline` grouped in one value object.

    Parameters
    ----------
    backend
        Registered backend name (``sequential``, ``process_pool``, ``loky``, ``dask``, ``mpi``).
    n_jobs
        Workers or ranks; ``-1`` means the CPUs this process may use.
    run_dir
        Run directory; default a fresh ``./hpc-curator-runs/<timestamp>-<pid>``.
    settings
        Commit, schedule and failure-budget settings.
    """

    backend: str = "sequential"
    n_jobs: int = 1
    run_dir: str | None = None
    settings: RunSettings = field(default_factory=RunSettings)


class RunOutputs(list[list[str]]):
    """Per-index output paths in input order, plus the run's :class:`RunResult`."""

    result: RunResult
    run_dir: str


#: physicsnemo-curator's ``run_pipeline`` keywords, and what replaces each here.
LEGACY_KEYWORDS = {
    "use_tui": "progress=True/False (a live display on a terminal, plain lines otherwise)",
    "db_dir": "run_dir=... (the run directory holds the journals, shards and manifest)",
    "resume": "nothing: a call with the same run_dir always resumes, running only what is "
    "not committed",
}


def check_legacy_keywords(settings: dict[str, Any]) -> None:
    """Refuse the original's keywords with what replaces them (not a bare ``TypeError``)."""
    from dataclasses import fields

    for key in settings:
        if key in LEGACY_KEYWORDS:
            raise UsageError(
                f"run_pipeline(..., {key}=...) is physicsnemo-curator's keyword",
                f"use {LEGACY_KEYWORDS[key]}",
            )
    known = {f.name for f in fields(RunSettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UsageError(
            f"run_pipeline() got an unknown keyword {unknown[0]!r}",
            f"settings are: {', '.join(sorted(known))}",
        )


def run_pipeline(
    pipeline: Pipeline,
    *,
    n_jobs: int = 1,
    backend: str | None = None,
    indices: Sequence[int] | str | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    config: RunConfig | None = None,
    progress: bool = True,
    **settings: Any,
) -> RunOutputs:
    """Run ``pipeline`` over ``indices`` and return each index's output paths in input order.

    Every backend uses the same run directory, journals, shard naming and manifest, so a call
    with the same ``run_dir`` resumes. Failed indices get an empty list; the failures are in
    ``result.result.manifest`` and the run directory's manifest.

    Parameters
    ----------
    pipeline
        The pipeline. Workers and ranks rebuild it from :meth:`Pipeline.to_spec` when they
        can; objects a fresh process cannot import (classes defined in ``__main__`` or a
        notebook, non-JSON arguments) are sent to them with cloudpickle.
    n_jobs, backend, run_dir
        See :class:`RunConfig` (``config`` overrides them when given). Without ``backend``,
        ``n_jobs`` other than 1 uses ``process_pool``, never a silent sequential run.
    indices
        Indices to run (default all); a sequence or selection text like ``"0:100,150"``.
    progress
        Show progress on stderr as ``hpc-curate run`` does (a live display on a terminal,
        plain timestamped lines otherwise); ``False`` shows nothing.
    **settings
        Fields of :class:`~hpc_curator.engine.values.RunSettings` (``commit_every``,
        ``max_failures``...).
    """
    check_legacy_keywords(settings)
    cfg = config or RunConfig(
        default_backend(backend, n_jobs),
        n_jobs,
        str(run_dir) if run_dir else None,
        RunSettings(**settings),
    )
    target = cfg.run_dir or new_run_dir()
    if cfg.run_dir is None:
        log.warning("hpc-curator: run directory %s", target)
    launch = Launch(
        run_dir=target,
        settings=cfg.settings,
        spec=pipeline.to_spec(),
        indices=indices,
        n_jobs=cfg.n_jobs,
        pipeline=pipeline,
    )
    backend_impl = get_backend(cfg.backend)
    from hpc_curator.ui.console import ProgressView

    with ProgressView(label=cfg.backend, run_dir=target, enabled=progress) as view:
        result = backend_impl.launch(launch, on_commit=view.on_commit if progress else None)
    rd = rundir.RunDir(target)
    scan = journal.scan(rd)
    by_index: dict[int, list[str]] = {}
    outputs = scan.outputs or []
    for p in scan.latest():
        by_index[int(scan.idx[p])] = outputs[int(p)] if scan.ok[p] else []
    info = rundir.load(rd)
    out = RunOutputs(by_index.get(int(i), []) for i in info.indices)
    out.result = result
    out.run_dir = str(rd.path)
    return out


def gather_pipeline(
    run_dir: str | os.PathLike[str], pipeline: Pipeline | None = None
) -> dict[str, dict[str, Any]]:
    """Re-merge the committed shard segments of a run and rewrite its manifest.

    Nothing is re-run. Use it after a crash of the final merge, or to look at partial results
    of a run that is still going (segments committed so far).

    Returns
    -------
    dict
        ``{filter name: {"path", "segments", "bytes", "sha256"}}``.
    """
    rd = rundir.RunDir(run_dir)
    info = rundir.load(rd)
    pipeline = pipeline or specmod.build(info.spec)
    folded = fold.fold(rd)
    outputs = merge_outputs(rd, pipeline, folded.segments, sums=folded.segment_sums)
    attempts = attempt_records.list_attempts(rd)
    doc = fold.summarize(rd, folded, outputs=outputs)
    fold.write(rd, folded, doc, attempts[-1]["attempt"] if attempts else 0)
    return outputs
