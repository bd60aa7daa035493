"""The benchmark harness runs end to end in quick mode (issue 6).

Asserts only that ``python -m benchmarks --quick`` completes, prints its table and writes the
JSON and markdown results — never anything about speed (CI machines vary too much).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P11", "P12")


@pytest.mark.mpi
@pytest.mark.timeout(900)
def test_quick_benchmarks_complete(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--out",
            str(out),
            "--work-dir",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    for key in CASES:
        assert f"== {key}:" in proc.stdout
    assert "== targets" in proc.stdout

    (js,) = out.glob("*-quick.json")
    (md,) = out.glob("*-quick.md")
    doc = json.loads(js.read_text())
    assert doc["quick"] is True
    assert set(doc["cases"]) == set(CASES)
    for key, case in doc["cases"].items():
        assert "error" not in case, f"{key}: {case.get('error')}"
        assert case["rows"], key
    machine = doc["machine"]
    for field in ("cpu_count", "python", "mpi_library", "packages"):
        assert machine[field]
    text = md.read_text()
    assert "| case | target | measured | result |" in text
    for key in CASES:
        assert f"## {key}:" in text


@pytest.mark.mpi
@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_p9_finds_every_rank_and_its_marker(tmp_path: Path) -> None:
    """P9 counts the metadata calls of the processes ``run --ranks`` really starts."""
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "benchmarks", "--quick", "--case", "P9", "--out", str(out),
            "--work-dir", str(tmp_path / "work")]  # fmt: skip
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (js,) = out.glob("*-quick.json")
    case = json.loads(js.read_text())["cases"]["P9"]
    assert "error" not in case, case.get("error")
    rows = {row["name"]: row for row in case["rows"]}
    assert rows["rank_2"]["median"] > rows["floor_2"]["median"] > 100


@pytest.mark.timeout(300)
def test_the_scale_model_runs_on_the_code_as_it_is() -> None:
    """``python -m benchmarks.scale`` drives the real rank loop, claim loop and plan: it must
    keep running as the code changes (SCALE.md's figures come from it)."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scale"], cwd=ROOT,
                          capture_output=True, text=True, timeout=280)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "== MDS operations/s" in proc.stdout
    plan = next(line for line in proc.stdout.splitlines() if line.startswith("Plan bcast"))
    assert "bytes (runs, applied)" in plan, plan
