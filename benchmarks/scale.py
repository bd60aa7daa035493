"""Scale on paper, checked by simulation (issue 14): 65,536 ranks, 10^8 indices, Lustre/GPFS.

``python -m benchmarks.scale``: files per directory, MDS operations/s, rank 0's end work and memory
of an MPI run (strided, default commits) and an array run (elastic claims) beside published
Lustre/GPFS figures (:data:`LIMITS`; SCALE.md), now and after SCALE.md's proposals. One MPI rank
(``rank.work``) and one array task (``tasks._claimed``, real ``Board``) run on a simulated clock
under /tmp while :func:`counting` counts their file-system calls; rank 0's scan and manifest are
timed by ``benchmarks.probe`` at ~1e5 and ~1e6 indices and *extrapolated linearly*.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import math
import os
import pickle
import posix
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import numpy as np
import orjson

from hpc_curator.components import FieldStats
from hpc_curator.components.stats import Moments
from hpc_curator.engine import elastic, gather, rank, ranklog, stages, tasks
from hpc_curator.engine.signals import StopFlag
from hpc_curator.engine.values import Plan, RunSettings
from hpc_curator.model.indexruns import compact
from hpc_curator.model.pipeline import Pipeline, Sink, Source
from hpc_curator.runtime.world import LocalCounter, World
from hpc_curator.store import attempt_records, rundir, shards
from hpc_curator.ui.progress import LIVE_INTERVAL

RANKS, INDICES, COSTS = 65_536, 10**8, (0.01, 1.0)
PER_NODE, NODES = 64, RANKS // 64  # ranks per node, nodes
START_S = {"mpi": 10.0, "array": 60.0}  # all ranks start within 10 s, array tasks within 60 s
END_S, WATCH_S = 10.0, 2.0  # end merges within 10 s; status --watch's default --interval
MERGE_S, FAN_IN = 1e-3, 64  # ~1 ms to merge an HDF5 shard (gather's note); proposed k-ary tree
#: published / commonly cited figures per MDT (SCALE.md names the sources)
LIMITS = {"dir": 100_000, "dir_hard": 10_000_000, "modify_s": 20_000, "lookup_s": 400_000}
DIR = (LIMITS["dir"], 10 * LIMITS["dir"])  # WARN past ~1e5 entries, BREAKS past ~1e6
SHARE = 0.10  # one job should not take more than this share of a shared MDS
MODIFY = ("create", "mkdir", "link", "rename", "unlink", "setattr", "fsync")
_PLAIN = {"fsync": "fsync", "replace": "rename", "rename": "rename", "unlink": "unlink",
          "remove": "unlink", "stat": "stat", "lstat": "stat", "fstat": "stat",
          "utime": "setattr", "ftruncate": "setattr"}  # fmt: skip


def _new(path: Any) -> bool:
    with contextlib.suppress(OSError, TypeError, ValueError):
        return not posix.lstat(path)  # exists: False
    return True


_KINDS: dict[str, Callable[..., tuple[Any, ...]]] = {  # args -> (kind, path, entries read)
    **{n: (lambda kd: lambda p, *a, **k: (kd, p))(kind) for n, kind in _PLAIN.items()},
    "open": lambda p, fl, *a, **k: ("create" if fl & os.O_CREAT and _new(p) else "open", p),
    "mkdir": lambda p, *a, **k: ("mkdir" if _new(p) else "stat", p),  # EEXIST: a lookup
    "link": lambda src, dst, *a, **k: ("link", dst),
    "listdir": lambda p=".": ("readdir", p, len(posix.listdir(p))),
    "scandir": lambda p=".": ("readdir", p, len(posix.listdir(p))),
    "builtins.open": lambda f, mode="r", *a, **k: (
        "create" if any(m in mode for m in "wax+") and _new(f) else "open", f),
}  # fmt: skip


@contextlib.contextmanager
def counting(root: Path) -> Iterator[Counter[str]]:
    """Count the file-system calls below ``root`` while inside, by kind (:data:`_KINDS`)."""
    n: Counter[str] = Counter()
    top = str(root)

    def wrap(orig: Callable[..., Any], kind: Callable[..., Any]) -> Callable[..., Any]:
        def call(*a: Any, **k: Any) -> Any:
            what, path, *entries = kind(*a, **k)
            if isinstance(path, int):  # fsync, fstat, ftruncate of a file descriptor
                path = os.readlink(f"/proc/self/fd/{path}")
            if isinstance(path, str | bytes | os.PathLike) and os.fsdecode(path).startswith(top):
                n[what] += 1
                n["entries"] += sum(entries)
            return orig(*a, **k)

        return call

    targets = [(os, k, k) for k in _KINDS if "." not in k]
    targets += [(m, "open", "builtins.open") for m in (builtins, io)]
    with contextlib.ExitStack() as stack:
        for m, name, key in targets:
            stack.enter_context(mock.patch.object(m, name, wrap(getattr(m, name), _KINDS[key])))
        yield n


def load(n: Mapping[str, float]) -> tuple[float, float, float]:
    """(namespace changes + fsyncs, lookups: opens + closes, stats, readdirs; MDT share)/s."""
    look = 2 * n.get("open", 0) + n.get("create", 0) + n.get("stat", 0) + n.get("readdir", 0)
    mod = sum(n.get(k, 0) for k in MODIFY)
    return mod, look, max(mod / LIMITS["modify_s"], look / LIMITS["lookup_s"])


def add(*parts: Mapping[str, float], times: float = 1.0) -> dict[str, float]:
    """Sum of call counts, scaled, without zeros."""
    out = sum(map(Counter, parts), Counter[str]())  # keeps what is > 0
    return {k: round(v * times, 3) for k, v in sorted(out.items()) if v}


class Work(Source, Sink):
    """Source and sink: index ``i`` costs ``cost`` +-10 % of ``clock.t``, returns one path."""

    def __init__(self, cost: float, clock: Any, first: Callable[[], Any]) -> None:
        self.cost, self.clock, self.first, self.rng = cost, clock, first, np.random.default_rng(0)

    def __len__(self) -> int:
        return INDICES

    def __getitem__(self, index: int) -> Iterator[dict[str, int]]:
        self.first()
        self.clock.t += self.cost * (0.9 + 0.2 * self.rng.random())
        yield {"index": index}

    def __call__(self, items: Iterator[Any], index: int) -> list[str]:
        deque(items, maxlen=0)
        return [f"/data/curated/{index:09d}.h5"]


class Tally(FieldStats):
    """FieldStats whose segments are written by Python's ``open`` (not h5py's C): counted."""

    @classmethod
    def write_state(cls, state: Any, path: str) -> None:
        Path(path).write_bytes(orjson.dumps({k: vars(m) for k, m in state.items()}))

    @classmethod
    def read_state(cls, path: str) -> Any:
        return {k: Moments(**v) for k, v in orjson.loads(Path(path).read_bytes()).items()}


@dataclass
class Lazy:
    """``np.arange(n)`` as ``plan.pending`` without its 800 MB (the loop only slices it)."""

    n: int

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, s: slice) -> np.ndarray:
        return np.arange(*s.indices(self.n), dtype=np.int64)


#: The array model's chunk size: what elastic.default_chunk_size gave when this model was
#: made (2,000 chunks). The default now never gives fewer than 4 chunks per task (261,781
#: chunks here): no idle task, but a 5x10^5-file claims directory (SCALE.md, "after").
ARRAY_CHUNK = 50_000


def _plan(path: Path) -> Plan:
    settings = RunSettings(chunk_size=ARRAY_CHUNK)
    return Plan(str(path), 1, {}, os.getcwd(), Lazy(INDICES), INDICES, 0, 0, settings)  # type: ignore[arg-type]


def _pipe(cost: float, clock: Any, first: Callable[[], Any]) -> Pipeline:
    work = Work(cost, clock, first)
    return Pipeline(work).filter(Tally(name="fieldstats")).write(work)


def simulate(path: Path, cost: float, body: Callable[[Pipeline], Any]) -> dict[str, Any]:
    """Run ``body(pipeline)`` on the simulated clock; calls below ``path`` by phase."""
    for d in ("journal", "logs", "shards/fieldstats"):  # rundir._create and an earlier rank did
        (path / d).mkdir(parents=True, exist_ok=True)
    clock, counts = SimpleNamespace(t=0.0), counting(path)
    fake_time = SimpleNamespace(perf_counter=lambda: clock.t, time=lambda: 1.8e9 + clock.t)
    start, commits = dict[str, Counter[str]](), list[Counter[str]]()
    original = rank.RankLoop.commit

    def commit(loop: rank.RankLoop) -> None:
        before, seq = Counter(n), loop.seq
        original(loop)
        if loop.seq > seq:
            commits.append(n - before)

    pipe = _pipe(cost, clock, lambda: start.setdefault("n", Counter(n)))
    patches = [mock.patch.object(m, "time", fake_time) for m in (rank, stages)]
    with counts as n, patches[0], patches[1], mock.patch.object(rank.RankLoop, "commit", commit):
        body(pipe)
    in_commits, first = sum(commits, Counter[str]()), start.get("n", n)
    return {"seconds": clock.t, "commits": len(commits), "start": add(first),
            "per_commit": add(in_commits, times=1 / max(1, len(commits))),
            "other": add(n - first - in_commits)}  # fmt: skip


def mpi_rank(root: Path, cost: float, r: int = 1) -> dict[str, Any]:
    """Rank ``r`` of RANKS (``rank.work``), then its end merge share (``gather.merge_share``)."""
    rd = rundir.RunDir(path := root / f"mpi-{cost:g}")
    res = simulate(path, cost, lambda p: rank.work(_plan(path), World(r, RANKS), pipeline=p))
    (journal,) = rd.journal_dir.glob(f"a0001-rank{r:05d}-w*.jsonl")
    recs = [orjson.loads(x) for x in journal.read_bytes().splitlines()]
    sums = {("fieldstats", x["seg"]["fieldstats"]): x["segsum"]["fieldstats"]
            for x in recs if x["t"] == "commit"}  # fmt: skip
    names, fit = [n for _, n in sums], []
    for k in (64, 128):  # merge_share merges nothing below 64 segments: fit a line through two
        with counting(path) as n:
            gather.merge_share(
                rd, _pipe(cost, None, list), {"fieldstats": (names * k)[:k]}, 1, 0, 1, sums
            )
        fit.append(n)
    per_seg = add(fit[1], add(fit[0], times=-1), times=1 / 64)
    return {**res, "journal": str(journal), "journal_bytes": journal.stat().st_size,
            "journal_lines": len(recs), "indices": len(range(r, INDICES, RANKS)),
            "merge_fixed": add(fit[0], add(per_seg, times=-64)), "merge_per_seg": per_seg,
            "segsum": next(iter(sums.values())),
            "entries": {d: len(os.listdir(path / d)) for d in ("journal", "logs")}}  # fmt: skip


def array_task(root: Path, cost: float, idle: bool) -> dict[str, Any]:
    """One array task on a real claim board, other chunks held by live tasks (all: ``idle``)."""
    rd = rundir.RunDir(path := root / f"array-{cost:g}-{'idle' if idle else 'work'}")
    board = elastic.Board(rd, 1, job_gone=lambda job: False)
    n_chunks = board.publish(_plan(path), RANKS)
    me = RANKS - 1 if idle else n_chunks // 2
    with mock.patch.object(elastic, "hostname", lambda: "another-node"):
        for c in set(range(n_chunks)) - {me}:
            board._take(c, 0, c)  # the real claim file of task c
            board.heartbeat_path(c).touch()

    def body(pipe: Pipeline) -> None:
        plan, bounds, n_tasks = board.load()
        stop, world = StopFlag(), World(me, n_tasks)
        with elastic.heartbeat(board.heartbeat_path(me)):
            loop = rank.RankLoop(plan, world, pipe, LocalCounter(0), stop)
            with ranklog.capture(rd.rank_log(plan.attempt, me)) as log:
                loop.log = log
                loop.run(tasks._claimed(loop, board, bounds, me, n_tasks, plan, stop))
        board.done_chunks()  # tasks._finish_if_last: is every chunk done yet?

    res, bounds = simulate(path, cost, body), board.load()[1]
    return {**res, "chunks": n_chunks, "chunk": int(bounds[1] - bounds[0])}


def build_run(path: Path, template: str, k: int) -> int:
    """``k`` journals, each the simulated rank's real one re-indexed (journal j: indices j::k)."""
    recs = [orjson.loads(x) for x in Path(template).read_bytes().splitlines()]
    n, rd = k * sum(len(r["idx"]) for r in recs if r["t"] == "commit"), rundir.RunDir(path)
    rundir.create_or_open(rd, {"kind": "factory", "ref": "scale:none"}, np.arange(n), {})
    attempt = attempt_records.start_attempt(rd, {"rank": 0, "size": k, "pid": 999_999_999}, "mpi")
    for j in range(k):
        lines, pos = [], 0
        for rec in recs:
            if rec["t"] != "commit":
                lines.append(orjson.dumps({**rec, "rank": j, "size": k}))
                continue
            idx = list(range(j + pos * k, j + (pos + len(rec["idx"])) * k, k))
            seg = {f: shards.segment_name(f, j, attempt, rec["seq"]) for f in rec["seg"]}
            out, pos = [[f"/data/curated/{i:09d}.h5"] for i in idx], pos + len(idx)
            lines.append(orjson.dumps({**rec, "idx": idx, "seg": seg, "out": out}))  # "out" last
        rd.journal_path(attempt, j, "00000000").write_bytes(b"\n".join(lines) + b"\n")
    attempt_records.end_attempt(rd, attempt, reason="done", world_size=k)
    return n


def rank0_end(root: Path, template: str, per_rank: int) -> dict[str, Any]:
    """Resume scan and end manifest (probe) at ~1e5 and ~1e6 indices; extrapolated linearly."""
    points, res = [], {}
    for k in (100_000 // per_rank, 1_000_000 // per_rank):
        n = build_run(path := root / f"scan-{Path(template).parts[-3]}-{k}", template, k)
        for what in ("scan", "manifest"):
            cmd = [sys.executable, "-m", "benchmarks.probe", what, str(path)]
            out = subprocess.run(
                cmd, cwd=Path(__file__).parent.parent, capture_output=True, text=True, check=True
            )
            res[what] = json.loads(out.stdout.split("RESULT ")[-1])
        man = res["manifest"]
        points.append((n, res["scan"]["seconds"], man["seconds"], man["peak_rss_mib"] / 1024))
        shutil.rmtree(path)
    (n1, *a), (n2, *b) = points
    at = [y2 + (y2 - y1) / (n2 - n1) * (INDICES - n2) for y1, y2 in zip(a, b, strict=True)]
    return {"points": points, "scan_s": at[0], "manifest_s": at[1], "rss_gib": at[2]}


def bulk_bytes(s: list[Any], f: str = "fieldstats") -> dict[str, float]:
    """Bytes per segment of merge_tree's bcast (wire, held) and per index of a pickled Plan."""
    names = [shards.segment_name(f, r % RANKS, 1, r // RANKS) for r in range(20_000)]
    blob = pickle.dumps(({f: names}, {(f, n): [s[0], f"{i:064x}"] for i, n in enumerate(names)}))
    tracemalloc.start()
    _held = pickle.loads(blob)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"wire": len(blob) / 2e4, "held": size / 2e4, **plan_bytes()}


def plan_bytes() -> dict[str, float]:
    """Pickled Plan (what MPI broadcasts, ``plan.pkl``) as ``attempt.begin`` builds it: the
    pending list through ``indexruns.compact``. A fresh run of 10^8 indices; a resume after a
    crash, modelled on 10^7 indices and 4,096 strided ranks (2,441 each, as 10^8 on 65,536 has
    1,526) that got 45-55% through their shares (bytes per pending index, extrapolated)."""

    def pickled(pending: Any, n: int) -> int:
        return len(pickle.dumps(Plan("/r", 1, {}, "/", pending, n, 0, 0, RunSettings())))

    fresh = pickled(compact(np.arange(INDICES, dtype=np.int64)), INDICES)
    n, ranks = 10**7, 4_096
    done = np.random.default_rng(0).uniform(0.45, 0.55, ranks) * (n // ranks)
    pos = np.arange(n)
    pending = pos[pos // ranks >= done.astype(np.int64)[pos % ranks]]
    resumed = pickled(compact(pending), n) / len(pending)
    array = pickled(pending, n) / len(pending)
    return {"plan_fresh": fresh, "plan_resume_per_index": resumed, "plan_per_index": array}


def verdict(x: float, soft: float, hard: float) -> str:
    return "BREAKS" if x > hard else ("WARN" if x > soft else "ok")


def tree(segments: float, fan_in: int | None) -> tuple[int, int, int]:
    """(depth, stage-1 fan-in, rank-0 fan-in): gather.merge_tree (``None``) or a k-ary tree."""
    s = int(segments)
    if s < gather.TREE_MIN_SEGMENTS:
        return 1, s, s
    if fan_in is None:
        return 2, -(-s // RANKS), min(RANKS, s)
    depth = max(1, math.ceil(math.log(s, fan_in)))
    return depth, fan_in, math.ceil(s / fan_in ** (depth - 1))


def array_after(cost: float) -> dict[str, float]:
    """Proposed: a task per node (PER_NODE slots, one journal), 4 chunks per task, 30 s commits."""
    chunks, commit_s = 4 * NODES, RunSettings().commit_seconds
    per = max(1, math.ceil(-(-INDICES // chunks) * cost / PER_NODE / commit_s))
    return {"chunks": chunks, "commits": chunks * per, "span": INDICES * cost / RANKS}


def table(title: str, head: list[str], rows: list[list[Any]]) -> None:
    """Print an aligned table."""
    cells = [head, *[[c if isinstance(c, str) else f"{c:,.0f}" if abs(c) >= 100 or c == int(c)
                      else f"{c:,.2g}" for c in r] for r in rows]]  # fmt: skip
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    print(f"\n== {title} ==")
    for r in cells:
        cols = enumerate(zip(r, widths, strict=True))
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in cols))


def report(mpi: dict[float, Any], arr: dict[float, Any], idle: dict[str, Any],
           end: dict[float, Any], bulk: dict[str, float]) -> None:  # fmt: skip
    """Print the three tables."""
    m1, a1, chunks = mpi[COSTS[1]], arr[COSTS[1]], arr[COSTS[1]]["chunks"]
    busy, aft = min(chunks, RANKS), {c: array_after(c) for c in COSTS}
    seg = {c: RANKS * mpi[c]["commits"] for c in COSTS}  # one segment per commit
    seg_after = {c: NODES * mpi[c]["commits"] for c in COSTS}  # one journal writer per node
    aseg = {c: busy * arr[c]["commits"] for c in COSTS}
    board = 2 * chunks + RANKS + 3  # .g0 + .done per chunk, task-R.alive, plan.pkl, chunks.npy
    rows: list[list[Any]] = [
        ["journal/ (.jsonl + .current)", RANKS * m1["entries"]["journal"], 2 * NODES, 2 * RANKS,
         2 * NODES],
        ["logs/", RANKS * m1["entries"]["logs"], NODES, RANKS, NODES],
        ["slurm/logs/ (%j_%t_log, %A_%a: .out .err)", 2 * RANKS, 2 * NODES, 2 * RANKS, 2 * NODES],
        *[[f"shards/fieldstats/ @{c:g}s (+ partials)", seg[c] + RANKS, seg_after[c], aseg[c],
           aft[c]["commits"]] for c in COSTS],
        ["claims/a0001/ (claims, done, .alive)", "-", "-", board, 2 * aft[1.0]["chunks"] + 3],
    ]  # fmt: skip
    for r in rows:
        now, after = (max(x for x in xs if not isinstance(x, str)) for xs in (r[1:], r[2::2]))
        r.append(f"{verdict(now, *DIR)} -> {verdict(after, *DIR)}")
    head = ["directory", "MPI now", "MPI after", "array now", "array after", "verdict"]
    table("files per directory (WARN past ~1e5, BREAKS past ~1e6; ldiskfs hard ~1e7)", head, rows)
    rows = []
    for c in COSTS:
        m, a = mpi[c], arr[c]
        now, after = RANKS * m["commits"] / m["seconds"], NODES * m["commits"] / m["seconds"]
        rows.append([f"MPI commits @{c:g}s", now, add(m["per_commit"], times=now),
                     add(m["per_commit"], times=after)])  # fmt: skip
        now, after = busy * a["commits"] / a["seconds"], aft[c]["commits"] / aft[c]["span"]
        rows.append([f"array commits @{c:g}s", now, add(a["per_commit"], times=now),
                     add(a["per_commit"], times=after)])  # fmt: skip
    w = START_S["mpi"]
    rows.append(["MPI start, all ranks in 10 s", "-", add(m1["start"], times=RANKS / w),
                 add(m1["start"], times=NODES / w)])  # fmt: skip
    part = add(m1["merge_fixed"], add(m1["merge_per_seg"], times=seg[1.0] / RANKS))
    rows.append(["MPI end, partial merges @1s in 10 s", "-", add(part, times=RANKS / END_S),
                 add(part, times=NODES / END_S)])  # fmt: skip
    start, scan, w = arr[COSTS[0]]["start"], add(idle["start"], idle["other"]), START_S["array"]
    storm = add(add(scan, times=RANKS - busy), add(start, times=busy), times=1 / w)
    rows.append(["array start + idle claim scans, 60 s", "-", storm, add(start, times=NODES / w)])
    rows.append(["array heartbeats (task-R.alive)", "-", {"setattr": RANKS / elastic.HEARTBEAT_S},
                 {"setattr": NODES / elastic.HEARTBEAT_S}])  # fmt: skip
    beat = {"setattr": 1 / attempt_records.HEARTBEAT_INTERVAL}
    rows.append(["MPI attempt heartbeat (rank 0)", "-", beat, beat])
    per_index = add(m1["other"], times=1 / m1["indices"])  # the end record, nothing per index
    rows.append(["per index (CurrentIndex mmap, RankLog)", "-", per_index, per_index])
    watch = [{"stat": n / WATCH_S, "open": n / max(LIVE_INTERVAL, n / 500), "readdir": 1 / WATCH_S}
             for n in (RANKS, NODES)]  # fmt: skip
    rows.append(["status --watch (follower + live)", "-", *watch])
    mds = [[name, rate, x[0], x[1], f"{x[2]:.0%}", y[0], y[1], f"{y[2]:.0%}",
            f"{verdict(x[2], SHARE, 1)} -> {verdict(y[2], SHARE, 1)}"]
           for name, rate, x, y in [(n, r, load(x), load(y)) for n, r, x, y in rows]]  # fmt: skip
    table(f"MDS operations/s (one MDT ~{LIMITS['modify_s']:,} creates/s, "
          f"~{LIMITS['lookup_s']:,} stats/s; WARN past {SHARE:.0%} of it)",
          ["source", "commits/s", "modify/s", "lookup/s", "MDT", "modify after",
           "lookup after", "MDT after", "verdict"], mds)  # fmt: skip
    listed = (RANKS - busy) * scan.get("readdir", 0) * board / w
    print(f"   array idle scans read {listed:,.0f} directory entries/s ({board:,} per listing); "
          f"status --watch {2 * RANKS / WATCH_S:,.0f}/s")  # fmt: skip
    rows = []
    for c in COSTS:
        m, e, gb = mpi[c], end[c], mpi[c]["journal_bytes"] / mpi[c]["indices"] * INDICES / 1e9
        (d, f1, f0), (d2, _, g0) = tree(seg[c], None), tree(seg_after[c], FAN_IN)
        n_small, *small = e["points"][0]
        wire, held = bulk["wire"] / 1e6, bulk["held"] / 1e6
        rows += [
            [f"@{c:g}s journals: files / lines / GB",
             f"{RANKS:,} / {RANKS * m['journal_lines']:,} / {gb:.1f}",
             f"{NODES:,} / {NODES * (m['commits'] + 2):,} / {gb:.1f}"],
            [f"@{c:g}s merge: segments, depth, fan-in", f"{seg[c]:,}, {d}, {f1} then {f0:,}",
             f"{seg_after[c]:,}, {d2}, <= {FAN_IN} ({g0} at rank 0)"],
            [f"@{c:g}s rank-0 final merge s (~1 ms/file)", f0 * MERGE_S, g0 * MERGE_S],
            [f"@{c:g}s array finisher merge s (no tree)", aseg[c] * MERGE_S, FAN_IN * MERGE_S],
            [f"@{c:g}s segment-list bcast MB: wire / held per rank",
             f"{seg[c] * wire:,.0f} / {seg[c] * held:,.0f}",
             f"{seg_after[c] * wire:,.1f} / {seg_after[c] * held:,.1f}"],
            [f"@{c:g}s resume scan s (rank 0, extrapolated)", e["scan_s"], small[0]],
            [f"@{c:g}s end manifest s (rank 0, extrapolated)", e["manifest_s"], small[1]],
            [f"@{c:g}s end manifest peak RSS GiB (extrapolated)", e["rss_gib"], small[2]],
        ]  # fmt: skip
    plan_gb = bulk["plan_per_index"] * INDICES / 1e9  # the pending list as an array
    resume_gb = bulk["plan_resume_per_index"] * INDICES / 2 / 1e9  # half of it pending
    rows += [
        ["manifest rows", INDICES, f"{INDICES:,} in {NODES:,} parts"],
        ["Plan bcast / plan.pkl per rank or task, GB: fresh run", plan_gb,
         f"{bulk['plan_fresh']:,.0f} bytes (runs, applied)"],
        ["  same, resume after a crash (half pending)", plan_gb / 2,
         f"{resume_gb:.2f} (runs, applied)"],
        ["array: plan.pkl read by all tasks, TB (fresh)", plan_gb * RANKS / 1e3,
         f"{bulk['plan_fresh'] * RANKS / 1e6:.0f} MB"],
        ["array: makespan / ideal", a1["chunk"] / (INDICES / RANKS), 1],
    ]  # fmt: skip
    table(f"rank 0 at the end, memory, bulk (after: per node, ~{n_small:,} indices each)",
          ["figure", "now", "after"], rows)  # fmt: skip


def main() -> None:
    """Simulate, measure, print."""
    t0, root = time.perf_counter(), Path(tempfile.mkdtemp(prefix="hpc-scale-", dir="/tmp"))
    try:
        mpi = {c: mpi_rank(root, c) for c in COSTS}
        arr = {c: array_task(root, c, idle=False) for c in COSTS}
        idle, a = array_task(root, COSTS[0], idle=True), arr[COSTS[1]]
        now = elastic.default_chunk_size(INDICES, RANKS)
        lines = [f"{RANKS:,} ranks, {INDICES:,} indices; array model (chunk {ARRAY_CHUNK:,}): "
                 f"{a['chunks']:,} chunks of {a['chunk']:,}: {min(a['chunks'], RANKS):,} work; "
                 f"default_chunk_size now {now:,}: {-(-INDICES // now):,} chunks",
                 *[f"MPI rank 1 @{c:g}s: {m['indices']} indices, {m['seconds']:,.0f} s, "
                   f"{m['commits']} commits of {m['per_commit']}; start {m['start']}; end "
                   f"{m['other']}; end merge {m['merge_fixed']} + {m['merge_per_seg']}/seg."
                   for c, m in mpi.items()],
                 f"array task @1s: {a['commits']} commits of {a['per_commit']}; start "
                 f"{a['start']}; rest {a['other']}",
                 f"array idle task: {add(idle['start'], idle['other'])}"]  # fmt: skip
        print("\n".join(lines), flush=True)  # fmt: skip
        end = {c: rank0_end(root, m["journal"], m["indices"]) for c, m in mpi.items()}
        report(mpi, arr, idle, end, bulk_bytes(mpi[COSTS[0]]["segsum"]))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    pts, took = [p[0] for p in end[COSTS[0]]["points"]], time.perf_counter() - t0
    print(f"\nrank-0 scan/manifest measured at {pts[0]:,} and {pts[1]:,} indices (benchmarks"
          f".probe), extrapolated linearly to {INDICES:,}; {took:.0f} s in all")  # fmt: skip


if __name__ == "__main__":
    main()
