"""P9: file-system metadata operations of a rank from exec to its first index (issue 14 T5).

On Lustre/GPFS every ``stat``/``open``/``getdents`` of a starting Python process is a
metadata request; thousands of ranks starting at once queue at the metadata server. The
case runs, under ``strace -ff -e trace=%file,getdents64``:

- the floor: ``python -c "import mpi4py.MPI, numpy"`` under the same ``mpiexec`` (MPI_Init
  included), counted from its ``execve`` up to a marker ``stat`` right after the imports;
- ``hpc-curate run benchmarks/workloads.py:w0mark --ranks R``: each rank process from its
  ``execve`` up to the marker ``stat`` its pipeline makes at its first index
  (:class:`benchmarks.workloads.MarkFirst`); also the whole command (parent, ranks, mpiexec).

Counted: calls that name a path (``stat``/``lstat``/``newfstatat``/``statx``/``access``/
``open``/``openat``/``readlink``/``getdents64``, ``mkdir``/``rename``/``unlink``/``link``);
``fstat`` of an open descriptor (``newfstatat(fd, "", ..., AT_EMPTY_PATH)``) is not.
"""

from __future__ import annotations

import collections
import re
import shutil
from typing import Any

from benchmarks import harness as h
from benchmarks.cases.common import WORKLOADS, Config, derived_row, rm, target
from benchmarks.harness import run_timed

COUNTED = {
    "stat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2", "open",
    "openat", "readlink", "readlinkat", "getdents64", "mkdir", "rename", "renameat2",
    "unlink", "unlinkat", "link", "linkat", "execve",
}  # fmt: skip
CALL = re.compile(r"^(\w+)\((.*)")
EXEC = re.compile(r'^execve\("([^"]*)"')


def is_python(trace: list[str], word: str) -> bool:
    """Whether the process of ``trace`` exec'd a python interpreter with ``word`` in argv."""
    m = EXEC.match(trace[0]) if trace else None
    return bool(m) and m.group(1).rsplit("/", 1)[-1].startswith("python") and word in trace[0]


def is_rank(trace: list[str]) -> bool:
    """Whether the process of ``trace`` is a rank: ``-m hpc_curator.engine.rankprog`` (what
    ``run --ranks`` starts) or ``hpc-curate rank`` (what batch scripts start)."""
    return is_python(trace, '"hpc_curator.engine.rankprog"') or is_python(trace, '"rank"')


def count_ops(lines: list[str], marker: str) -> tuple[int, collections.Counter[str], bool]:
    """Metadata calls before the marker's ``stat`` (all of them if it is not there)."""
    ops: collections.Counter[str] = collections.Counter()
    for line in lines:
        m = CALL.match(line)
        if not m:
            continue
        name, args = m.groups()
        if marker in args:
            return sum(ops.values()), ops, True
        if name in COUNTED and "AT_EMPTY_PATH" not in args:
            ops[name] += 1
    return sum(ops.values()), ops, False


def traced(cfg: Config, argv: list[str], tag: str) -> list[list[str]]:
    """Run ``argv`` under ``strace -ff``; the trace lines of each process."""
    out = cfg.fresh(f"p9-{tag}-trace")
    out.mkdir(parents=True)
    run_timed(["strace", "-ff", "-qq", "-o", str(out / "t"), "-e", "trace=%file,getdents64",
               *argv], env=cfg.env, timeout=600)  # fmt: skip
    files = [f.read_text(errors="replace").splitlines() for f in sorted(out.glob("t.*"))]
    rm(out)
    return files


def p9(cfg: Config) -> dict[str, Any]:
    """Start-up metadata operations per rank: hpc-curator rank vs import of mpi4py + numpy."""
    if shutil.which("strace") is None:
        raise RuntimeError("strace is not installed (apt-get install strace)")
    marker = "/hpc-curator-p9-marker"
    rows: list[dict[str, Any]] = []
    medians: dict[str, float | None] = {}
    for ranks in (2,) if cfg.quick else (2, 16):
        base_code = f"import mpi4py.MPI, numpy, os\ntry: os.stat({marker!r})\nexcept OSError: pass"
        base = traced(cfg, [h.mpiexec(), "-n", str(ranks), h.PYTHON, "-c", base_code], "base")
        floor = [count_ops(t, marker) for t in base if is_python(t, '"-c"')]
        d = cfg.fresh("p9-run")
        argv = [*h.hpc_curate(), "run", f"{WORKLOADS}:w0mark", "-p", f"n={ranks}", "-p",
                f"marker={marker}", "--ranks", str(ranks), "--run-dir", str(d), "-q"]  # fmt: skip
        procs = traced(cfg, argv, "hpc")
        rm(d)
        rank = [count_ops(t, marker) for t in procs if is_rank(t)]
        whole = sum(count_ops(t, "\0never\0")[0] for t in procs)
        if len(rank) != ranks or not all(found for _, _, found in rank):
            raise RuntimeError(f"P9: found {len(rank)} rank traces with markers, want {ranks}")
        f_vals = [float(n) for n, _, _ in floor]
        r_vals = [float(n) for n, _, _ in rank]
        fl = derived_row(f"floor_{ranks}", f"import mpi4py.MPI, numpy: ops per process, "
                         f"{ranks} ranks", f_vals, "")  # fmt: skip
        rk = derived_row(f"rank_{ranks}", f"hpc-curator rank, exec to first index, {ranks} "
                         "ranks", r_vals, "")  # fmt: skip
        top = sum((c for _, c, _ in rank), collections.Counter()).most_common(4)
        rk["note"] = ", ".join(f"{k} {v // ranks}" for k, v in top)
        rows += [fl, rk]
        rows.append(derived_row(f"whole_{ranks}", f"  whole command ({ranks} ranks, parent + "
                                "mpiexec + ranks, to exit)", [float(whole)], ""))  # fmt: skip
        ratio = (rk["median"] or 0) / max(fl["median"] or 1, 1)
        rows.append(derived_row(f"ratio_{ranks}", f"  ratio rank / floor ({ranks} ranks)",
                                [ratio], "x"))  # fmt: skip
        medians[f"ratio_{ranks}"] = ratio
    return {
        "title": "Start-up metadata operations",
        "description": "File-system metadata calls (strace) of each rank from exec to its "
        "first index, next to a process that only imports mpi4py.MPI (MPI_Init) and numpy "
        "under the same mpiexec.",
        "rows": rows,
        "targets": [
            target(
                f"T5 rank start-up metadata ops <= 1.5x the floor ({k.split('_')[1]} ranks)",
                v,
                1.5,
                "x",
            )
            for k, v in medians.items()
        ],
    }
