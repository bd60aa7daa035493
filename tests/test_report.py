"""The HTML report: finished, running, crashed and failing runs; numbers match the manifest."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpc_curator.components import read_fieldstats
from hpc_curator.report import build_report, collect
from hpc_curator.store import attempt_records, journal, manifest, rundir
from tests.conftest import FIXTURE_PIPELINES, cli, commit_count, read_manifest

STATS = f"{FIXTURE_PIPELINES}:stats"
NASTY = "<script>alert('x')</script> & <b>bold</b>"


def failing_spec(path: Path) -> Path:
    """A component spec whose failures carry HTML in their message (must be escaped)."""
    doc = {
        "source": {"class": "SyntheticSource", "params": {"n": 60, "shape": "8x8"}},
        "filters": [
            {"class": "FailOn", "params": {"indices": "3,7,11", "error": NASTY}},
            {"class": "FieldStats", "params": {"name": "stats"}},
        ],
    }
    path.write_text(json.dumps(doc))
    return path


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hpc_curator", "run", *args, "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def report_data(html: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html)
    assert m, "report data block missing"
    return json.loads(m.group(1).replace("<\\/", "</"))


def card(html: str, name: str) -> str:
    m = re.search(rf'id="card-{name}">([^<]*)<', html)
    assert m, name
    return m.group(1)


def counts_of(doc: dict[str, Any]) -> dict[str, int]:
    return {k: doc["counts"][k] for k in ("total", "ok", "failed", "pending")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Four real runs made with the CLI in parallel; the 'running' one is frozen by SIGSTOP."""
    base = tmp_path_factory.mktemp("report-runs")
    d = {k: base / k for k in ("finished", "failures", "running", "crashed")}
    common = ("--backend", "process_pool", "-j", "2", "--commit-every", "10")
    procs = {
        "finished": start(STATS, "-p", "n=60", "--run-dir", str(d["finished"]), *common),
        "failures": start(
            str(failing_spec(base / "fail.json")), "--run-dir", str(d["failures"]), *common
        ),
        "running": start(
            *(STATS, "-p", "n=2000", "-p", "sleep=0.01", "--run-dir", str(d["running"])),
            *("--commit-every", "10"),
        ),
        "crashed": start(
            f"{FIXTURE_PIPELINES}:killer",
            *("-p", "n=120", "-p", "at=50", "--run-dir", str(d["crashed"]), "--commit-every", "10"),
        ),
    }
    live = procs["running"]
    deadline = time.monotonic() + 60
    while commit_count(d["running"]) < 3:
        assert time.monotonic() < deadline and live.poll() is None, live.stderr
        time.sleep(0.05)
    os.kill(live.pid, signal.SIGSTOP)  # alive but frozen: the numbers hold still
    try:
        assert procs["finished"].wait(60) == 0
        assert procs["failures"].wait(60) == 1
        procs["retry"] = start(
            str(base / "fail.json"), "--run-dir", str(d["failures"]), "--retry-failed"
        )
        assert procs["retry"].wait(60) == 1  # a second attempt; the same indices fail again
        assert procs["crashed"].wait(60) == -signal.SIGKILL
        yield d
    finally:
        os.kill(live.pid, signal.SIGKILL)
        live.wait(30)
        for p in procs.values():
            p.wait(30)
            if p.stderr:
                p.stderr.close()


def make(run_dir: Path, tmp_path: Path) -> str:
    out = build_report(run_dir, tmp_path / "report.html")
    assert out == tmp_path / "report.html"
    return out.read_text()


def assert_self_contained(html: str) -> None:
    assert not re.search(r'(src|href)="(?!data:)', html), "external reference"
    images = re.findall(
        r'<img id="fig-([\w-]+)" alt="[^"]*" src="data:image/png;base64,([^"]+)"', html
    )
    assert [name for name, _ in images] == ["throughput", "durations", "load-balance", "memory"]
    for _, b64 in images:
        assert base64.b64decode(b64).startswith(b"\x89PNG\r\n\x1a\n")


def test_finished_run_report_matches_the_manifest(runs: dict[str, Path], tmp_path: Path) -> None:
    d = runs["finished"]
    doc = read_manifest(d)
    html = make(d, tmp_path)
    data = report_data(html)
    assert data["counts"] == doc["counts"] and data["status"] == doc["status"] == "complete"
    assert data["source"] == "manifest.json" and data["state"] == "ended"
    assert data["world_size"] == doc["world_size"] == 2
    assert data["nodes"] == sorted({r["node"] for r in doc["ranks"]})
    assert (data["attempts"], data["requeues"]) == (1, 0)
    assert data["executions"] == 60 and data["throughput"] > 0
    assert data["busy_seconds"] == pytest.approx(doc["timing"]["busy_seconds"])
    assert card(html, "ok") == "60" and card(html, "failed") == "0"
    assert card(html, "pending") == "0" and card(html, "world-size") == "2"
    assert "No failed indices." in html and "Slowest 20 indices" in html
    stats = read_fieldstats(doc["outputs"]["stats"]["path"])
    for name, s in stats.items():  # the merged FieldStats table
        row = f'<td>{name}</td><td class="n">{s["count"]:,}</td><td class="n">{s["mean"]:.6g}'
        assert row in html
    versions = doc["versions"]
    assert f"<td>numpy</td><td>{versions['numpy']}</td>" in html
    assert_self_contained(html)


def test_failures_report_groups_and_escapes(runs: dict[str, Path], tmp_path: Path) -> None:
    d = runs["failures"]
    doc = read_manifest(d)
    html = make(d, tmp_path)
    data = report_data(html)
    assert data["counts"] == doc["counts"] == {"total": 60, "ok": 57, "failed": 3, "pending": 0}
    assert data["failure_types"] == doc["failure_types"] == {"RuntimeError": 3}
    assert (data["attempts"], data["requeues"]) == (2, 1)
    assert data["executions"] == 63  # 60 + the 3 retried
    assert card(html, "failed") == "3" and card(html, "attempts") == "2"
    group = re.search(r'<table class="failure-group">(.*?)</table>', html)
    assert group and "RuntimeError" in group.group(1) and "3 indices" in group.group(1)
    assert "<td>3, 7, 11</td>" in group.group(1)
    # every message and traceback is escaped: no markup from the run reaches the page
    assert NASTY not in html and "alert('x')" not in html
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;"
    assert f"{escaped} at index 3" in html
    tb = re.search(r"<summary>first traceback \(([^)]*)\)</summary><pre>(.*?)</pre>", html, re.S)
    assert tb and tb.group(2).startswith("Traceback (most recent call last):")
    assert f"RuntimeError: {escaped} at index" in tb.group(2)
    assert html.count("<script") == 2  # only the report's own data block and script
    assert_self_contained(html)


def test_running_report_uses_the_journals(runs: dict[str, Path], tmp_path: Path) -> None:
    d = runs["running"]
    assert not (d / "manifest.json").exists()
    rd = rundir.RunDir(d)
    expected = manifest.summarize(rd, journal.scan(rd))
    html = make(d, tmp_path)
    data = report_data(html)
    assert data["counts"] == expected["counts"]
    assert data["state"] == "running" and data["source"] == "journals (live summary)"
    c = data["counts"]
    assert c["ok"] >= 30 and c["pending"] == 2000 - c["ok"] and c["failed"] == 0
    assert card(html, "pending") == f"{c['pending']:,}"
    # the FieldStats output is not merged yet: a partial table from the committed segments
    assert "stats (not merged yet)" in html
    assert f'<td>u</td><td class="n">{64 * c["ok"]:,}</td>' in html
    assert_self_contained(html)


def test_crashed_report(runs: dict[str, Path], tmp_path: Path) -> None:
    d = runs["crashed"]
    html = make(d, tmp_path)
    data = report_data(html)
    assert data["counts"] == {"total": 120, "ok": 50, "failed": 0, "pending": 70}
    assert data["state"] == "crashed (no end record)" and data["status"] == "incomplete"
    assert "no end record" in html
    assert collect(d).workers[0]["span"] > 0


def test_cli_report_with_pngs(runs: dict[str, Path], tmp_path: Path) -> None:
    proc = cli("report", str(runs["failures"]), "-o", str(tmp_path / "out" / "r.html"), "--png")
    assert proc.returncode == 0, proc.stderr
    assert f"report: {tmp_path / 'out' / 'r.html'}" in proc.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        "r-durations.png",
        "r-load-balance.png",
        "r-memory.png",
        "r-throughput.png",
        "r.html",
    ]
    assert (tmp_path / "out" / "r-memory.png").read_bytes().startswith(b"\x89PNG")
    assert cli("report", str(tmp_path / "nope")).returncode != 0


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\nfrom hpc_curator.cli import main\n"
        "for argv in (['--help'], ['report', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('numpy', 'matplotlib', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "report" in out.stdout


def test_report_before_the_first_commit(tmp_path: Path) -> None:
    """A run that has just started (no journal, then a start record only) still reports."""
    import socket

    import numpy as np

    rd = rundir.RunDir(tmp_path / "run")
    rundir.create_or_open(rd, {"kind": "factory", "ref": "x.py:f", "params": {}}, np.arange(10), {})
    data = collect(rd.path).numbers()
    assert data["state"] == "not started" and data["counts"]["pending"] == 10
    identity = {"host": socket.gethostname(), "pid": os.getpid(), "job_id": None}
    attempt_records.start_attempt(rd, identity, "test")
    writer = journal.JournalWriter(rd.journal_path(1, 0, "00000000"), fsync=False)
    writer.append({"t": "start", "attempt": 1, "time": time.time(), "rank": 0, "node": "n0"})
    writer.close()
    html = make(rd.path, tmp_path)
    data = report_data(html)
    assert data["state"] == "running" and data["nodes"] == ["n0"]
    assert data["counts"] == {"total": 10, "ok": 0, "failed": 0, "pending": 10}
    assert_self_contained(html)


def test_report_without_matplotlib_says_how_to_install(tmp_path: Path) -> None:
    """A missing optional dependency is one line naming the pip command, not a traceback."""
    code = (
        "import importlib.machinery, importlib.util\n"
        "# hide matplotlib from this interpreter only\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'matplotlib' else "
        "importlib.machinery.PathFinder.find_spec(n)\n"
        "from hpc_curator.cli import main\n"
        f"main(['report', {str(tmp_path)!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "Error: hpc-curate report needs matplotlib, which is not installed "
        "(pip install 'hpc-curator[report]')"
    ]
