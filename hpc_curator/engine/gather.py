"""Merging committed shard segments into each stateful filter's output (rank 0 or a tree).

Only segments named by journal commit records are merged — from every rank and every attempt
— so orphans from crashes are ignored and every index's contribution counts exactly once. A
committed segment that is missing or unreadable is a corrupt run directory and is reported as
such (:class:`~hpc_curator.errors.ShardError`), never silently skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpc_curator.engine.values import Plan
from hpc_curator.errors import CuratorError, ShardError
from hpc_curator.model.pipeline import Pipeline
from hpc_curator.runtime.world import World
from hpc_curator.store import checksum, fold, rundir
from hpc_curator.store.atomic import atomic_path, remove
from hpc_curator.store.checksum import file_digest as file_digest
from hpc_curator.store.checksum import size_of, verify_segment


def _committed_paths(
    rd: rundir.RunDir,
    name: str,
    segments: list[str],
    sums: dict[tuple[str, str], list[Any]] | None = None,
) -> list[Path]:
    """The files of committed segments, each checked against its recorded size and checksum."""
    paths = [rd.shard_dir(name) / n for n in segments]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ShardError(
            f"{len(missing)} committed shard segment(s) of {name!r} are missing, e.g. {missing[0]}",
            "the run dir was modified by hand; restore the files or start a new run",
        )
    for path, seg in zip(paths, segments, strict=True):
        verify_segment(path, (sums or {}).get((name, seg)))
    return paths


class _NothingToMerge(Exception):
    pass


def merge_outputs(
    rd: rundir.RunDir,
    pipeline: Pipeline,
    segments: dict[str, list[str]],
    partials: dict[str, list[str]] | None = None,
    sums: dict[tuple[str, str], list[Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Merge every committed segment of each stateful filter into its final output.

    With ``partials`` (from :func:`merge_tree`), a filter listed there is merged from those
    per-rank partial merges of its segments instead, and they are deleted afterwards.
    ``sums`` (:attr:`~hpc_curator.store.journal.JournalScan.segment_sums`) are checked first.
    """
    outputs: dict[str, dict[str, Any]] = {}
    for f in pipeline.stateful_filters:
        names = segments.get(f.name, [])
        parts = (partials or {}).get(f.name)
        paths = (
            [rd.shard_dir(f.name) / n for n in parts]
            if parts
            else _committed_paths(rd, f.name, names, sums)
        )
        out = Path(f.output) if f.output else rd.output_path(f.name, f.suffix)
        try:
            with atomic_path(out) as tmp:
                f.merge([str(p) for p in paths], str(tmp))
                if not paths and not tmp.exists():
                    raise _NothingToMerge  # a filter that writes no output for no segments
        except _NothingToMerge:
            continue
        for p in paths if parts else []:
            remove(p)
        outputs[f.name] = {
            "path": str(out.absolute()),
            **({"relative": rel} if (rel := rundir.inside_path(rd, out)) else {}),
            "class": f"{type(f).__module__}:{type(f).__qualname__}",
            "segments": len(names),
            "segment_set": checksum.segment_set(names),
            "partial_merges": len(parts or []),  # > 0: merged in a tree across the ranks
            "bytes": size_of(out),
            "sha256": file_digest(out),
        }
    return outputs


#: below this many segments of a filter rank 0 merges them alone (an HDF5 shard costs ~1 ms)
TREE_MIN_SEGMENTS = 64


def merge_share(
    rd: rundir.RunDir,
    pipeline: Pipeline,
    segments: dict[str, list[str]],
    attempt: int,
    rank: int,
    size: int,
    sums: dict[tuple[str, str], list[Any]] | None = None,
) -> dict[str, str]:
    """Merge this rank's strided share of each filter's committed segments into one file.

    Only filters with at least :data:`TREE_MIN_SEGMENTS` segments are split. The partial file
    (:meth:`~hpc_curator.store.rundir.RunDir.partial_merge`) is written
    atomically; it is never named by a journal, so a crash leaves an orphan that nothing reads.
    Returns ``{filter: partial file name}``.
    """
    out: dict[str, str] = {}
    for f in pipeline.stateful_filters:
        names = sorted(segments.get(f.name, []))
        share = names[rank::size]
        if len(names) < TREE_MIN_SEGMENTS or not share:
            continue
        paths = _committed_paths(rd, f.name, share, sums)
        part = rd.partial_merge(f.name, attempt, rank, f.suffix)
        with atomic_path(part, durable=False) as tmp:
            f.merge([str(p) for p in paths], str(tmp))
        out[f.name] = part.name
    return out


def own_journal(world: World, plan: Plan, writer: str | None) -> tuple[str, Any] | None:
    """This rank's journal of the attempt, read right after its loop, for rank 0's scan.

    A rank that finishes early reads what it wrote while slower ranks still work, and rank 0
    then reads only the other journals (:func:`hpc_curator.store.journal.scan` with ``blocks``; W0,
    2 ranks, 100,000 indices: ~30 ms off rank 0's end). ``None`` in a world of one, for a run
    rank 0 folds in parts (more than :func:`hpc_curator.store.fold.max_rows` indices: the blocks
    would not fit it either), when this node runs more ranks than it has CPUs and when the
    journal cannot be read (rank 0 reads it itself and reports what is wrong). ``writer``: the
    token of this process's journal (from its summary; ``None`` when the loop failed).
    """
    if world.size == 1 or not writer or plan.total > fold.max_rows() or _shares_cores():
        return None
    from hpc_curator.store.journal import dropped_records
    from hpc_curator.store.journalread import read_block

    rd = rundir.RunDir(plan.run_dir)
    path = rd.journal_path(plan.attempt, world.rank, writer)
    try:
        return path.name, read_block([path], dropped_records(rd))
    except Exception:
        return None


def _shares_cores() -> bool:
    """More ranks on this node than CPUs they may use (64 ranks on 2 CPUs, P6): an early
    finisher's read then takes CPU from ranks still working, and the blocks' large messages
    to rank 0 need every sender scheduled (P6 end 0.49 -> 0.91 s, work 0.80 -> 1.15 s)."""
    import os

    from hpc_curator.runtime.gpus import local_size

    ranks = local_size(os.environ)
    if ranks is None:
        return False
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return ranks > (cpus or 1)


def merge_tree(
    world: World, plan: Plan, pipeline: Pipeline, blocks: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """Collective first stage of the end-of-attempt merge; every rank calls it.

    Rank 0 scans the journals (those in ``blocks``, read by their ranks, are not read again:
    :func:`own_journal`) and broadcasts the committed segments; each rank merges its
    strided share (:func:`merge_share`), so rank 0 then merges one partial per rank instead of
    every segment: the merge time is divided by the world size.

    Returns
    -------
    tuple
        On rank 0 the journals read by :func:`~hpc_curator.store.fold.fold` (or the error scanning
        raised) and ``{filter: [partial names]}`` (or the first error of any rank);
        ``(None, None)`` elsewhere.
    """
    rd = rundir.RunDir(plan.run_dir)
    scan: Any = None
    segments: dict[str, list[str]] | None = None
    sums: dict[tuple[str, str], list[Any]] = {}
    if world.is_root:
        try:
            scan = fold.fold(rd, blocks=blocks)
            segments = {k: v for k, v in scan.segments.items() if len(v) >= TREE_MIN_SEGMENTS}
            sums = {key: s for key, s in scan.segment_sums.items() if key[0] in segments}
        except Exception as exc:  # the others must not wait for ever in the bcast
            scan = _as_curator_error(exc, "rank 0 could not scan the journals")
    world.idle_barrier()  # the others sleep while rank 0 scans
    segments, sums = world.bcast((segments, sums))
    if not segments:
        return scan, None
    mine: dict[str, str] | Exception
    try:
        mine = merge_share(rd, pipeline, segments, plan.attempt, world.rank, world.size, sums)
    except Exception as exc:  # reported by rank 0; nobody may leave the collective early
        mine = _as_curator_error(exc, f"rank {world.rank} could not merge its shard segments")
    world.idle_barrier()
    shares = world.gather(mine)
    if not world.is_root:
        return None, None
    errors = [s for s in shares or [] if isinstance(s, CuratorError)]
    if errors:
        for share in shares or []:  # the partial merges that did succeed are of no use now
            for name, part in share.items() if isinstance(share, dict) else ():
                remove(rd.shard_dir(name) / part)
        return scan, errors[0]
    partials: dict[str, list[str]] = {}
    for share in shares or []:
        for name, part in share.items():
            partials.setdefault(name, []).append(part)
    return scan, partials


def _as_curator_error(exc: Exception, context: str) -> CuratorError:
    if isinstance(exc, CuratorError):
        return exc
    return ShardError(f"{context}: {type(exc).__name__}: {exc}")
