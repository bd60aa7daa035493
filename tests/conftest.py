"""Shared fixtures: run directories, a CLI runner in a real subprocess, result readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = f"{ROOT}/examples/synthetic.py:build"
FIXTURE_PIPELINES = Path(__file__).resolve().parent / "pipelines.py"

# Tests never read the developer's own config files (hpc_curator.config); a test that wants
# one points these at its own files.
os.environ["HPC_CURATE_CONFIG"] = str(ROOT / "tests" / "no-such-user-config.toml")
os.environ["HPC_CURATE_SITE_CONFIG"] = str(ROOT / "tests" / "no-such-site-config.toml")
for _name in [n for n in os.environ if n.startswith("HPC_CURATE_") and "CONFIG" not in n]:
    del os.environ[_name]  # nor the developer's HPC_CURATE_<OPTION> variables


def cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 240,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m hpc_curator ARGS`` in a subprocess and capture its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "hpc_curator", *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a test's ``hpc-curate`` process (``extra`` added)."""
    full = dict(os.environ, **(extra or {}))
    full.pop("HPC_CURATOR_EXPECTED_SIZE", None)
    return full


def start_cli(
    *args: str, env: dict[str, str] | None = None, quiet: bool = False, **popen: Any
) -> subprocess.Popen[str]:
    """Start ``python -m hpc_curator ARGS`` without waiting (output piped, or discarded when
    ``quiet``); the caller stops it by its pid."""
    out = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen(
        [sys.executable, "-m", "hpc_curator", *args],
        env=cli_env(env),
        stdout=out,
        stderr=out,
        text=True,
        **popen,
    )


def journal_file(run_dir: Path, attempt: int, rank: int) -> Path:
    """The journal of ``rank`` in ``attempt`` (its name carries a writer token); a path that
    does not exist yet while the rank has not started, or if it never does."""
    stem = f"a{attempt:04d}-rank{rank:05d}"
    found = sorted((Path(run_dir) / "journal").glob(f"{stem}-w*.jsonl"))
    return found[0] if found else Path(run_dir) / "journal" / f"{stem}-w________.jsonl"


def commit_count(run_dir: Path) -> int:
    """Commit records in every journal of ``run_dir`` so far (0 before the first)."""
    return sum(p.read_bytes().count(b'"t":"commit"') for p in run_dir.glob("journal/*.jsonl"))


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest.json of a run."""
    return json.loads((run_dir / "manifest.json").read_text())


def manifest_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of manifest.parquet, sorted by index."""
    import pyarrow.parquet as pq

    rows = pq.read_table(run_dir / "manifest.parquet").to_pylist()
    return sorted(rows, key=lambda r: r["index"])


def stats(run_dir: Path, name: str = "stats") -> dict[str, dict[str, float]]:
    """Merged FieldStats of a run."""
    from hpc_curator.components import read_fieldstats

    return read_fieldstats(str(run_dir / "outputs" / f"{name}.h5"))


def assert_stats_equal(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> None:
    """Counts/min/max bitwise equal; mean/variance within 1e-12 relative."""
    assert a.keys() == b.keys()
    for field in a:
        for key in ("count", "min", "max"):
            assert a[field][key] == b[field][key], (field, key, a[field][key], b[field][key])
        for key in ("mean", "variance"):
            x, y = a[field][key], b[field][key]
            assert abs(x - y) <= 1e-12 * max(abs(x), abs(y), 1e-300), (field, key, x, y)


@pytest.fixture
def example() -> str:
    """Reference of the example factory."""
    return EXAMPLE


@pytest.fixture
def pipelines() -> Path:
    """Path of the test pipelines module."""
    return FIXTURE_PIPELINES


SHM = Path("/dev/shm")


def _semaphores() -> set[str]:
    return {n for n in os.listdir(SHM) if n.startswith("sem.mp-")} if SHM.is_dir() else set()


@pytest.fixture(scope="session", autouse=True)
def _no_leaked_semaphores() -> Any:
    """Named semaphores of Python multiprocessing that processes the tests killed on purpose
    (a pool's parent by SIGKILL: its resource tracker dies with it) left in /dev/shm; every
    process is gone by the end of the session, so the names this session added are removed."""
    before = _semaphores()
    yield
    for name in _semaphores() - before:
        (SHM / name).unlink(missing_ok=True)
