"""Timing, interleaving, statistics, machine description and result files.

Every comparison runs its contenders interleaved in the same invocation — rep 1: A B C, rep 2:
C B A, rep 3: A B C, ... (the order alternates so no contender always follows the same one) —
and reports, per contender, the median and min-max of its times and, per pair, the median and
min-max of the per-repetition ratios, because absolute times on a shared machine drift.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import treerss

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PYTHON = sys.executable
#: Bytecode cache of the timed commands (kept between runs, outside the repository).
PYCACHE = Path(tempfile.gettempdir()) / "hpc-curator-bench-pycache"


def hpc_curate() -> list[str]:
    """The ``hpc-curate`` console script next to this interpreter (what users type)."""
    exe = BIN / "hpc-curate"
    return [str(exe)] if exe.exists() else [PYTHON, "-m", "hpc_curator"]


def mpiexec() -> str:
    """The mpiexec matching mpi4py (next to python, as ``hpc-curate run --ranks`` picks it)."""
    exe = BIN / "mpiexec"
    return str(exe) if exe.exists() else (shutil.which("mpiexec") or "mpiexec")


# -- running commands ----------------------------------------------------------------------
class CommandFailed(RuntimeError):
    """A timed command exited non-zero (its stderr tail is in the message)."""


@dataclass
class Run:
    """One timed command."""

    seconds: float
    stdout: str
    stderr: str
    returncode: int
    result: dict[str, Any] = field(default_factory=dict)


def run_timed(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 900,
    ok_codes: tuple[int, ...] = (0,),
) -> Run:
    """Run ``cmd`` and time it from the outside (wall clock, whole command).

    The command is reaped with ``wait4``, whose ``ru_maxrss`` is the peak RSS of the largest
    process of its tree (itself and every descendant its parents waited for: mpiexec, the
    ranks, pool workers); :func:`peak_rss_since` reads the maximum over the commands run.
    Meanwhile :class:`treerss.TreeSampler` samples the RSS of the whole tree every 20 ms
    (:func:`tree_rss_since`).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd), env=env, cwd=str(cwd or ROOT), stdout=out, stderr=err,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        sampler = treerss.TreeSampler(proc.pid) if treerss.supported() else None
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            if sampler is not None:
                _TREE_PEAKS.append(sampler.stop())
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    _PEAKS.append(usage.ru_maxrss / 1024)
    if proc.returncode not in ok_codes:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-8:])
        raise CommandFailed(f"exit {proc.returncode}: {' '.join(cmd)[:200]}\n{tail}")
    result: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
    return Run(seconds, stdout, stderr, proc.returncode, result)


#: peak RSS (MiB) of the largest process of each command :func:`run_timed` ran
_PEAKS: list[float] = []


def peak_rss_since(mark: int) -> float | None:
    """The largest :func:`run_timed` peak RSS (MiB) since ``len(_PEAKS)`` was ``mark``."""
    return max(_PEAKS[mark:], default=None)


#: peak RSS (MiB) summed over the process tree of each command :func:`run_timed` ran
_TREE_PEAKS: list[float] = []


def tree_rss_since(mark: int) -> float | None:
    """The largest :func:`run_timed` peak tree RSS (MiB) since ``len(_TREE_PEAKS)`` was ``mark``."""
    return max(_TREE_PEAKS[mark:], default=None)


def snapshot_head(dest: Path) -> str:
    """Extract the committed ``hpc_curator`` package (git HEAD) into ``dest``; return the commit.

    For shared checkouts that others edit while the benchmarks run: with ``dest`` first on
    ``PYTHONPATH`` every process imports this frozen copy instead of the working tree.
    """
    dest.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD", "hpc_curator", "slurm_templates"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return commit


def bench_env(
    blas_threads: str | None, pycache: Path | None, first_on_path: Path | None = None
) -> dict[str, str]:
    """Environment of every timed command.

    BLAS threads are pinned unless ``blas_threads`` is None. With ``pycache`` the bytecode
    cache is on and kept under that directory (``PYTHONPYCACHEPREFIX``, so nothing is written
    into the repository): an installed package has its ``.pyc`` files, and a sandbox that sets
    ``PYTHONDONTWRITEBYTECODE`` would otherwise recompile every module of every process.
    """
    env = dict(os.environ)
    env.pop("HPC_CURATOR_PARENT", None)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    if blas_threads is not None:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = blas_threads
    front = [str(first_on_path)] if first_on_path else []
    env["PYTHONPATH"] = os.pathsep.join(
        [*front, str(ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    return env


# -- statistics ----------------------------------------------------------------------------
def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and count of ``values`` (``None`` fields when empty)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


@dataclass
class Contender:
    """One side of a comparison: a name and a function running one repetition.

    ``fn(rep)`` returns the measured value (seconds unless ``unit`` says otherwise) and a
    dict of extra facts (checked results, breakdowns) kept per repetition.
    """

    name: str
    fn: Callable[[int], tuple[float, dict[str, Any]]]
    unit: str = "s"
    label: str = ""
    unavailable: str | None = None
    required: bool = False


def interleave(
    contenders: list[Contender], reps: int, *, warmup: bool = True, log: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Run every contender once per repetition, interleaved, alternating the order.

    A contender that raises is marked unavailable with the reason and skipped afterwards
    (the comparison goes on without it) — unless it is ``required`` (hpc-curator itself), then
    the error propagates and the case fails.
    """
    data: dict[str, dict[str, Any]] = {
        c.name: {"values": [], "extra": [], "unavailable": c.unavailable} for c in contenders
    }
    live = [c for c in contenders if c.unavailable is None]
    if warmup:
        for c in live:
            try:
                c.fn(-1)
            except Exception as exc:
                data[c.name]["unavailable"] = f"failed in warm-up: {exc}"
                log(f"    {c.name}: UNAVAILABLE ({str(exc).splitlines()[0]})")
        live = [c for c in live if data[c.name]["unavailable"] is None]
    for rep in range(reps):
        order = live if rep % 2 == 0 else list(reversed(live))
        for c in order:
            if data[c.name]["unavailable"] is not None:
                continue
            mark, tree_mark = len(_PEAKS), len(_TREE_PEAKS)
            try:
                value, extra = c.fn(rep)
                if (peak := peak_rss_since(mark)) is not None:
                    extra = {**extra, "max_rss_mib": peak}
                if (tree := tree_rss_since(tree_mark)) is not None:
                    extra = {**extra, "tree_rss_mib": tree}
            except Exception as exc:
                data[c.name]["unavailable"] = f"failed in repetition {rep + 1}: {exc}"
                log(f"    {c.name}: FAILED ({str(exc).splitlines()[0]})")
                continue
            data[c.name]["values"].append(value)
            data[c.name]["extra"].append(extra)
            log(f"    rep {rep + 1}/{reps} {c.name:<28} {fmt(value, c.unit)}")
    for c in contenders:
        data[c.name].update(summary(data[c.name]["values"]), unit=c.unit, label=c.label or c.name)
    return data


def ratios(data: dict[str, dict[str, Any]], num: str, den: str) -> dict[str, Any]:
    """Per-repetition ratios ``num / den`` (paired by repetition), summarised."""
    a, b = data[num]["values"], data[den]["values"]
    if data[num].get("unavailable") or data[den].get("unavailable"):
        return summary([])
    return summary([x / y for x, y in zip(a, b, strict=False) if y])


# -- formatting ----------------------------------------------------------------------------
def fmt(value: float | None, unit: str = "s") -> str:
    """Human-readable value with its unit."""
    if value is None:
        return "-"
    if unit == "s":
        if abs(value) < 1e-3:
            return f"{value * 1e6:.0f} µs"
        if abs(value) < 1:
            return f"{value * 1e3:.0f} ms"
        return f"{value:.2f} s"
    if unit == "x":
        return f"{value:.3f}x"
    if unit == "us":
        return f"{value:.2f} µs"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    return f"{value:.4g} {unit}".strip()


def fmt_spread(row: dict[str, Any]) -> str:
    """``median (min-max)``."""
    unit = row.get("unit", "s")
    if row.get("median") is None:
        return "-"
    if row.get("n", 0) <= 1:
        return fmt(row["median"], unit)
    return f"{fmt(row['median'], unit)} ({fmt(row['min'], unit)} - {fmt(row['max'], unit)})"


def render_markdown(results: dict[str, Any]) -> str:
    """The results as markdown: machine, one table per case, then the targets."""
    m = results["machine"]
    lines = [
        f"# hpc-curator benchmarks — {results['date']} on {m['host']}"
        + (" (quick mode)" if results["quick"] else ""),
        "",
        f"- CPU: {m['cpu_model']} — {m['cpu_count']} CPUs ({m['cpus_usable']} usable), "
        f"{m['mem_gib']:.0f} GiB RAM, {m['kernel']}",
        f"- Python {m['python']}; MPI: {m['mpi_library']}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        "- hpc-curator: "
        + (
            f"snapshot of commit {results['settings']['snapshot']} (git HEAD)"
            if results["settings"].get("snapshot")
            else f"working tree at commit {m.get('git_commit', '?')}"
            + (" (+ uncommitted changes)" if m.get("git_dirty") else "")
        ),
        f"- BLAS threads per process: {results['settings']['blas_threads']}; "
        f"repetitions: {results['settings']['reps']} (median, min - max over repetitions)",
        f"- bytecode cache: {results['settings'].get('pyc_cache')}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in m.get('load_average_at_start', []))} "
        "(the machine is shared: other jobs ran during the measurements)",
        f"- total harness time: {results.get('elapsed_s', 0):.0f} s",
        "",
    ]
    for key, case in results["cases"].items():
        lines += [f"## {key}: {case['title']}", ""]
        if case.get("description"):
            lines += [case["description"], ""]
        if case.get("load_average"):
            la = case["load_average"]
            lines += [
                f"Load average before/after: {la[0]:.1f} / {la[1]:.1f}; "
                f"case time {case.get('elapsed_s', 0):.0f} s.",
                "",
            ]
        if case.get("error"):
            lines += [f"**case failed:** `{case['error']}`", ""]
        rows = case.get("rows", [])
        if rows:
            lines += [
                "| measurement | median (min - max) | reps | ratio | note |",
                "|---|---|---|---|---|",
            ]
            for r in rows:
                note = r.get("note", "")
                if r.get("unavailable"):
                    note = f"unavailable: {r['unavailable']}"
                lines.append(
                    f"| {r['label']} | {fmt_spread(r)} | {r.get('n', 0)} | {r.get('ratio', '')} "
                    f"| {note} |"
                )
            lines.append("")
    lines += ["## Targets", "", "| case | target | measured | result |", "|---|---|---|---|"]
    for key, case in results["cases"].items():
        for t in case.get("targets", []):
            verdict = {True: "pass", False: "MISS", None: "n/a"}[t["pass"]]
            lines.append(f"| {key} | {t['name']} | {t['measured']} | {verdict} {t.get('by', '')} |")
    lines.append("")
    return "\n".join(lines)


def render_console(results: dict[str, Any]) -> str:
    """A plain-text table for the terminal."""
    out = []
    for key, case in results["cases"].items():
        out.append(f"\n== {key}: {case['title']}")
        if case.get("error"):
            out.append(f"   case failed: {case['error']}")
        for r in case.get("rows", []):
            extra = (
                f"unavailable: {r['unavailable']}" if r.get("unavailable") else r.get("note", "")
            )
            ratio = r.get("ratio", "")
            out.append(
                f"   {r['label'][:46]:<46} {fmt_spread(r):<34} {ratio:<26} {extra[:60]}".rstrip()
            )
    out.append("\n== targets")
    for key, case in results["cases"].items():
        for t in case.get("targets", []):
            verdict = {True: "pass", False: "MISS", None: "n/a "}[t["pass"]]
            out.append(f"   {key} {verdict} {t['name']:<52} {t['measured']} {t.get('by', '')}")
    return "\n".join(out)


# -- the machine ---------------------------------------------------------------------------
PACKAGES = (
    "hpc-curator",
    "numpy",
    "h5py",
    "pyarrow",
    "mpi4py",
    "mpich",
    "click",
    "joblib",
    "dask",
    "datatrove",
)


def machine() -> dict[str, Any]:
    """CPU count and model, memory, Python, MPI library, package versions, git commit."""
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "mem_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_version()} ({sys.executable})",
        "mpi_library": _mpi_library(),
        "mpiexec": mpiexec(),
        "load_average_at_start": list(os.getloadavg()),
        "packages": {},
    }
    for pkg in PACKAGES:
        try:
            info["packages"][pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info["packages"][pkg] = "not installed"
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        info["git_dirty"] = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "hpc_curator"],
                cwd=ROOT,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    except OSError:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mpi_library() -> str:
    """``MPI.Get_library_version()`` (its version and device lines), from a fresh process."""
    try:
        out = subprocess.run(
            [PYTHON, "-c", "from mpi4py import MPI; print(MPI.Get_library_version())"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = [" ".join(line.split()) for line in out.splitlines() if line.strip()]
    keep = [line for line in lines if "Version" in line or "Device" in line] or lines[:1]
    return "; ".join(keep) or "unknown"


def write_results(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``<date>-<host>[-quick].json`` and ``.md``; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{results['date']}-{results['machine']['host']}" + (
        "-quick" if results["quick"] else ""
    )
    js = out_dir / f"{stem}.json"
    md = out_dir / f"{stem}.md"
    js.write_text(json.dumps(results, indent=2, default=repr) + "\n")
    md.write_text(render_markdown(results))
    return js, md


def today() -> str:
    """UTC date for result file names."""
    return datetime.now(UTC).strftime("%Y-%m-%d")
