"""End of an attempt on rank 0: merge committed shard segments, write the manifest, end.

Only segments named by journal commit records are merged — from every rank and every attempt
— so orphans from crashes are ignored and every index's contribution counts exactly once. A
committed segment that is missing or unreadable is a corrupt run directory and is reported as
such (:class:`~hpc_curator.errors.ShardError`), never silently skipped.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from hpc_curator import journal, manifest, rundir
from hpc_curator.atomic import atomic_path
from hpc_curator.errors import ShardError
from hpc_curator.pipeline import Pipeline


def file_digest(path: Path) -> str:
    """SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def merge_outputs(
    rd: rundir.RunDir, pipeline: Pipeline, segments: dict[str, list[str]]
) -> dict[str, dict[str, Any]]:
    """Merge every committed segment of each stateful filter into its final output."""
    outputs: dict[str, dict[str, Any]] = {}
    for f in pipeline.stateful_filters:
        names = segments.get(f.name, [])
        paths = [rd.shard_dir(f.name) / n for n in names]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise ShardError(
                f"{len(missing)} committed shard segment(s) of {f.name!r} are missing, "
                f"e.g. {missing[0]}",
                "the run dir was modified by hand; restore the files or start a new run",
            )
        out = Path(f.output) if f.output else rd.output_path(f.name, f.suffix)
        with atomic_path(out) as tmp:
            type(f).merge([str(p) for p in paths], str(tmp))
        outputs[f.name] = {
            "path": str(out.absolute()),
            "class": f"{type(f).__module__}:{type(f).__qualname__}",
            "segments": len(paths),
            "bytes": out.stat().st_size,
            "sha256": file_digest(out),
        }
    return outputs


def finish(plan: Any, summaries: list[dict[str, Any]], pipeline: Pipeline) -> Any:
    """Merge outputs, write the manifest (last, atomically) and end the attempt.

    Returns
    -------
    RunResult
        Exit code 0 when every frozen index succeeded, 1 when some failed, 3 when some are
        still pending (stopped by a signal, time limit or the failure budget).
    """
    from hpc_curator.rank import RunResult

    rd = rundir.RunDir(plan.run_dir)
    scan = journal.scan(rd)
    outputs = merge_outputs(rd, pipeline, scan.segments)
    doc = manifest.summarize(rd, scan, summaries=summaries, outputs=outputs)
    counts = doc["counts"]
    reasons = sorted({s.get("reason", "done") for s in summaries} - {"done"})
    rundir.end_attempt(
        rd,
        plan.attempt,
        reason=",".join(reasons) or "done",
        counts=counts,
        world_size=len(summaries),
    )
    manifest.write(rd, scan, doc, plan.attempt)
    status = doc["status"]
    code = {"complete": 0, "failed": 1}.get(status, 3)
    if "max_failures" in reasons:
        code = 1
    message = manifest.one_line(doc, reasons)
    return RunResult(code, status, counts, message, str(rd.path), doc)
