"""Per-stage wall time of every index, the failing stage, and opt-in peak memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FIXTURE_PIPELINES, cli, manifest_rows, read_manifest

SPEC = f"{FIXTURE_PIPELINES}:stats"


@pytest.mark.parametrize("launcher", [["--backend", "sequential"], ["--ranks", "2"], ["-j", "2"]])
def test_each_stage_gets_its_own_time(tmp_path: Path, launcher: list[str]) -> None:
    d = tmp_path / "run"
    proc = cli("run", SPEC, "-p", "n=16", "-p", "sleep=0.02", "-p", "fail=3",
               "-p", f"out={tmp_path / 'out'}", "--run-dir", str(d), "-q", *launcher)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    rows = manifest_rows(d)
    names = ["source", "1.Sleep", "2.FailOn", "3.FieldStats", "sink"]
    assert all(f"time_{n}" in rows[0] for n in names)
    for r in rows:
        parts = [r[f"time_{n}"] for n in names]
        assert r["time_1.Sleep"] >= 0.019  # the sleep is where it happens, not upstream
        assert all(v >= 0 for v in parts)
        assert r["time_source"] < r["time_1.Sleep"] and r["time_3.FieldStats"] < r["time_1.Sleep"]
        assert abs(sum(parts) - r["wall_s"]) < 0.005, (parts, r["wall_s"])  # all accounted
    sources = sorted(r["time_source"] for r in rows)
    assert sources[len(sources) // 2] < 0.005  # (a worker's first index may import things)
    doc = read_manifest(d)
    assert doc["slowest_stage"] == "1.Sleep" and doc["stages"]["1.Sleep"]["share"] > 0.5
    failure = doc["failures"][0]
    assert failure["index"] == 3 and failure["stage"] == "2.FailOn"
    text = cli("failed", str(d)).stdout
    assert "index 3" in text and "in 2.FailOn: RuntimeError" in text
    shown = cli("manifest", str(d), check=True).stdout
    assert "time per stage" in shown and "1.Sleep (slowest)" in shown


def test_track_memory_records_each_index_peak(tmp_path: Path) -> None:
    d, plain = tmp_path / "run", tmp_path / "plain"
    spec = f"{FIXTURE_PIPELINES}:alloc"
    cli("run", spec, "-p", "mib=8", "--run-dir", str(d), "-q", "--track-memory", "--ranks", "2",
        check=True)  # fmt: skip
    rows = manifest_rows(d)
    assert all(8 << 20 <= r["py_peak_bytes"] < 40 << 20 for r in rows), rows
    assert read_manifest(d)["max_py_peak_bytes"] >= 8 << 20
    cli("run", spec, "-p", "mib=8", "--run-dir", str(plain), "-q", check=True)
    assert "py_peak_bytes" not in manifest_rows(plain)[0]  # opt-in
    journal = next((plain / "journal").glob("*.jsonl")).read_text()
    assert '"pymem"' not in journal


def test_track_gpu_without_torch_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("hpc_curator")
    try:
        import torch  # noqa: F401

        pytest.skip("torch is installed here")
    except ImportError:
        pass
    d = tmp_path / "run"
    proc = cli("run", SPEC, "--run-dir", str(d), "-q", "--track-gpu")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "Error: --track-gpu needs PyTorch (torch.cuda peak memory), which is not importable "
        "here (install torch in the ranks' environment, or drop --track-gpu)"
    ]
    assert not d.exists()


def test_the_report_shows_the_stage_breakdown(tmp_path: Path) -> None:
    d = tmp_path / "run"
    cli("run", SPEC, "-p", "n=6", "-p", "sleep=0.01", "--run-dir", str(d), "-q", check=True)
    html = d / "r.html"
    cli("report", str(d), "-o", str(html), check=True)
    text = html.read_text()
    section = text[text.index('<div id="stages">') :]
    assert "1.Sleep (slowest)" in section[:2000]
    data = json.loads(text.split('id="report-data">')[1].split("</script>")[0])
    assert data["counts"]["ok"] == 6
