"""Measurements that must run in a fresh process (peak RSS), and the P3 run-dir builders.

``python -m benchmarks.probe scan|manifest|merge RUN_DIR`` times one operation of hpc-curator
on a synthetic run directory and prints ``RESULT {json}`` with the seconds, a breakdown and the
process's peak RSS (``resource.getrusage``, so the number covers the operation and the
imports, nothing else runs in that process).

The builders write journals directly in the record format :mod:`hpc_curator.store.journal`
documents (start, commit with column-wise ``idx ok wall cpu rss out err seg``, end), which is
much faster than running 10^6 indices, plus ``run.json`` through
:func:`hpc_curator.store.rundir.create_or_open` and one ended attempt record.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- builders ------------------------------------------------------------------------------
def build_journal_run(
    path: Path,
    n_indices: int,
    n_ranks: int,
    *,
    per_commit: int = 1000,
    outputs: bool = True,
    failures: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """A finished single-attempt run of ``n_indices`` over ``n_ranks`` journals (strided)."""
    from hpc_curator.engine.values import RunSettings
    from hpc_curator.store import attempt_records, rundir

    rd = rundir.RunDir(path)
    spec = {
        "kind": "factory",
        "ref": f"{ROOT / 'benchmarks' / 'workloads.py'}:w1",
        "params": {"n": str(n_indices), "out": "/data/curated"},
    }
    indices = np.arange(n_indices, dtype=np.int64)
    rundir.create_or_open(rd, spec, indices, asdict(RunSettings()))
    identity = {"rank": 0, "size": n_ranks, "host": "bench", "node": "bench", "pid": 1}
    attempt = attempt_records.start_attempt(rd, {**identity, "pid": 999_999_999}, "mpi")
    rng = np.random.default_rng(seed)
    failed = set(rng.choice(n_indices, size=min(failures, n_indices), replace=False).tolist())
    rd.journal_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for rank in range(n_ranks):
        mine = indices[rank::n_ranks]
        lines = [
            json.dumps(
                {
                    "t": "start",
                    "attempt": attempt,
                    "time": t0,
                    "rank": rank,
                    "size": n_ranks,
                    "host": f"node{rank // 32:03d}",
                    "node": f"node{rank // 32:03d}",
                    "job_id": "123456",
                    "step_id": "0",
                    "pid": 10_000 + rank,
                },
                separators=(",", ":"),
            )
        ]
        for seq, start in enumerate(range(0, len(mine), per_commit)):
            chunk = mine[start : start + per_commit]
            k = len(chunk)
            ok = [0 if int(i) in failed else 1 for i in chunk]
            err = {
                str(p): {
                    "type": "RuntimeError",
                    "msg": f"injected failure at index {int(chunk[p])}",
                    "tb": 'Traceback (most recent call last):\n  File "pipe.py", line 1\n'
                    f"RuntimeError: injected failure at index {int(chunk[p])}\n",
                }
                for p in range(k)
                if ok[p] == 0
            }
            rec = {
                "t": "commit",
                "seq": seq,
                "time": t0 + seq,
                "idx": chunk.tolist(),
                "ok": ok,
                "wall": np.round(rng.exponential(0.005, k), 7).tolist(),
                "cpu": np.round(rng.exponential(0.004, k), 7).tolist(),
                "rss": (150_000_000 + rng.integers(0, 1 << 20, k)).tolist(),
                "err": err,
                "seg": {"stats": f"stats.rank{rank:05d}.a{attempt:04d}-{seq:06d}.h5"},
                "out": [  # last, as rank.py writes it
                    [f"/data/curated/{int(i):08d}.h5"] if o and outputs else []
                    for i, o in zip(chunk, ok, strict=True)
                ],
            }
            lines.append(json.dumps(rec, separators=(",", ":")))
        end = {
            "t": "end",
            "rank": rank,
            "size": n_ranks,
            "attempt": attempt,
            "ok": len(mine),
            "failed": 0,
            "busy": 1.0,
            "started": t0,
            "ended": t0 + 60,
            "commits": -(-len(mine) // per_commit),
            "reason": "done",
        }
        lines.append(json.dumps(end, separators=(",", ":")))
        rd.journal_path(attempt, rank, "00000000").write_text("\n".join(lines) + "\n")
    attempt_records.end_attempt(rd, attempt, reason="done", world_size=n_ranks)
    return {"run_dir": str(rd.path), "attempt": attempt, "indices": n_indices, "ranks": n_ranks}


def build_segments(path: Path, n_segments: int, fields: tuple[str, ...] = ("u", "v")) -> dict:
    """``n_segments`` FieldStats shard segments of filter ``stats`` (named as ranks write them)."""
    from hpc_curator.components.stats import FieldStats, Moments
    from hpc_curator.store import rundir
    from hpc_curator.store.shards import segment_name

    rd = rundir.RunDir(path)
    d = rd.shard_dir("stats")
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    names = []
    total = 0
    for k in range(n_segments):
        rank, seq = k % 64, k // 64
        name = segment_name("stats", rank, 1, seq)
        state = {}
        for f in fields:
            a = rng.standard_normal(64)
            state[f] = Moments.of(a)
        total += 64
        FieldStats.write_state(state, str(d / name))
        names.append(name)
    (rd.path / "segments.json").write_text(json.dumps(names))
    return {"run_dir": str(rd.path), "segments": n_segments, "count_per_field": total}


# -- measurements (each in its own process) ------------------------------------------------
def measure_scan(run_dir: str) -> dict[str, Any]:
    """What a resume computes: load run.json, scan every journal, failed and pending indices."""
    from hpc_curator.model import partition
    from hpc_curator.store import journal, rundir

    base = peak_rss_mib()
    t0 = time.perf_counter()
    rd = rundir.RunDir(run_dir)
    info = rundir.create_or_open(rd, None, None, {})
    t1 = time.perf_counter()
    scan = journal.scan(rd, with_outputs=False)
    t2 = time.perf_counter()
    failed = scan.failed_indices()
    todo = partition.pending(info.indices, scan.recorded())
    t3 = time.perf_counter()
    return {
        "seconds": t3 - t0,
        "load_s": t1 - t0,
        "scan_s": t2 - t1,
        "pending_s": t3 - t2,
        "recorded": len(scan.idx),
        "failed": len(failed),
        "pending": len(todo),
        "peak_rss_mib": peak_rss_mib(),
        "baseline_rss_mib": base,
    }


def measure_manifest(run_dir: str) -> dict[str, Any]:
    """What finish does for the manifest: scan (with outputs), summarize, write parquet + json."""
    from hpc_curator.store import attempt_records, journal, manifest, rundir

    base = peak_rss_mib()
    rd = rundir.RunDir(run_dir)
    attempt = attempt_records.list_attempts(rd)[-1]["attempt"]
    t0 = time.perf_counter()
    scan = journal.scan(rd)
    t1 = time.perf_counter()
    doc = manifest.summarize(rd, scan)
    t2 = time.perf_counter()
    manifest.write(rd, scan, doc, attempt)
    t3 = time.perf_counter()
    return {
        "seconds": t3 - t0,
        "scan_s": t1 - t0,
        "summarize_s": t2 - t1,
        "write_s": t3 - t2,
        "rows": len(scan.latest()),
        "parquet_mib": rd.manifest_parquet.stat().st_size / 2**20,
        "json_kib": rd.manifest_json.stat().st_size / 1024,
        "peak_rss_mib": peak_rss_mib(),
        "baseline_rss_mib": base,
    }


def measure_fold_manifest(run_dir: str) -> dict[str, Any]:
    """The end of an attempt as attempt.end does it: fold, summarize, write (streamed above
    ``HPC_CURATOR_MANIFEST_ROWS`` frozen indices)."""
    from hpc_curator.store import attempt_records, fold, rundir

    base = peak_rss_mib()
    rd = rundir.RunDir(run_dir)
    attempt = attempt_records.list_attempts(rd)[-1]["attempt"]
    t0 = time.perf_counter()
    folded = fold.fold(rd)
    t1 = time.perf_counter()
    doc = fold.summarize(rd, folded)
    t2 = time.perf_counter()
    fold.write(rd, folded, doc, attempt)
    t3 = time.perf_counter()
    return {
        "seconds": t3 - t0,
        "fold_s": t1 - t0,
        "summarize_s": t2 - t1,
        "write_s": t3 - t2,
        "spilled": folded.spilled,
        "buckets": folded.buckets,
        "ok": doc["counts"]["ok"],
        "failed": doc["counts"]["failed"],
        "parquet_mib": rd.manifest_parquet.stat().st_size / 2**20,
        "peak_rss_mib": peak_rss_mib(),
        "baseline_rss_mib": base,
    }


def measure_fold_scan(run_dir: str) -> dict[str, Any]:
    """The resume scan as attempt.begin does it: folded status, failed and pending."""
    from hpc_curator.store import fold, rundir

    base = peak_rss_mib()
    t0 = time.perf_counter()
    rd = rundir.RunDir(run_dir)
    info = rundir.load(rd)
    status = fold.status(rd, info.indices)
    failed = status.failed_indices()
    todo = status.pending()
    t1 = time.perf_counter()
    return {
        "seconds": t1 - t0,
        "recorded": len(status.recorded()),
        "failed": len(failed),
        "pending": len(todo),
        "peak_rss_mib": peak_rss_mib(),
        "baseline_rss_mib": base,
    }


def _merge_inputs(run_dir: str) -> tuple[Any, list[str], Any]:
    """The segments :func:`build_segments` wrote and a pipeline whose FieldStats merges them."""
    from benchmarks.workloads import NoopSource
    from hpc_curator.components import FieldStats
    from hpc_curator.model.pipeline import Pipeline
    from hpc_curator.store import rundir

    rd = rundir.RunDir(run_dir)
    names = json.loads((rd.path / "segments.json").read_text())
    return rd, names, Pipeline(NoopSource(1)).filter(FieldStats(name="stats"))


def measure_merge(run_dir: str) -> dict[str, Any]:
    """gather.merge_outputs over every segment (FieldStats.merge + sha256 of the output)."""
    from hpc_curator.components import read_fieldstats
    from hpc_curator.engine.gather import merge_outputs

    rd, names, pipeline = _merge_inputs(run_dir)
    base = peak_rss_mib()
    t0 = time.perf_counter()
    outputs = merge_outputs(rd, pipeline, {"stats": names})
    t1 = time.perf_counter()
    stats = read_fieldstats(outputs["stats"]["path"])
    return {
        "seconds": t1 - t0,
        "segments": outputs["stats"]["segments"],
        "count_u": stats["u"]["count"],
        "peak_rss_mib": peak_rss_mib(),
        "baseline_rss_mib": base,
    }


def measure_merge_tree(run_dir: str) -> dict[str, Any]:
    """The end-of-attempt merge under MPI (``mpiexec -n P``): a share per rank, then rank 0.

    The same two steps as ``gather.merge_tree`` + ``merge_outputs`` (minus the journal scan,
    which the manifest measurement covers). Prints only on rank 0.
    """
    from hpc_curator.components import read_fieldstats
    from hpc_curator.engine.gather import merge_outputs, merge_share
    from hpc_curator.runtime.world import detect_world

    world = detect_world()
    rd, names, pipeline = _merge_inputs(run_dir)
    world.idle_barrier()
    t0 = time.perf_counter()
    mine = merge_share(rd, pipeline, {"stats": names}, 9999, world.rank, world.size)
    t1 = time.perf_counter()
    world.idle_barrier()
    shares = world.gather((mine, t1 - t0))
    if not world.is_root:
        return {}
    assert shares is not None
    parts = {"stats": [s["stats"] for s, _ in shares]}
    outputs = merge_outputs(rd, pipeline, {"stats": names}, parts)
    t2 = time.perf_counter()
    return {
        "seconds": t2 - t0,
        "share_s": max(dt for _, dt in shares),
        "final_s": t2 - t1,
        "ranks": world.size,
        "count_u": read_fieldstats(outputs["stats"]["path"])["u"]["count"],
    }


MEASURES = {
    "scan": measure_scan,
    "manifest": measure_manifest,
    "fold_manifest": measure_fold_manifest,
    "fold_scan": measure_fold_scan,
    "merge": measure_merge,
    "merge_tree": measure_merge_tree,
}


def main(argv: list[str]) -> None:
    what, run_dir = argv[0], argv[1]
    result = MEASURES[what](run_dir)
    if result:  # under MPI only rank 0 reports
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
