"""Open the HTML report in headless Chromium: it renders, its figures decode, no console errors.

Skipped when Chromium is missing, except in CI (``CI=true``), where ``.ci/run`` installs it and
a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FIXTURE_PIPELINES, cli

TIMEOUT = 90
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def chromium() -> str:
    """Path of the Chromium binary, or skip (fail in CI) when it is not installed."""
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed (.ci/run installs the Debian 'chromium' package)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def run_chromium(exe: str, profile: Path, *args: str) -> tuple[str, str]:
    """Run Chromium in its own process group; kill that group if it hangs."""
    proc = subprocess.Popen(
        [exe, *FLAGS, f"--user-data-dir={profile}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {TIMEOUT} s: {' '.join(args)}")
    assert proc.returncode == 0, err[-2000:]
    return out, err


def console_messages(stderr: str) -> list[str]:
    """Page console output in Chromium's log (the report logs nothing, so any is an error)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("browser")
    d = base / "run"
    proc = cli(
        *("run", f"{FIXTURE_PIPELINES}:stats", "-p", "n=80", "-p", "fail=3,7"),
        *("--run-dir", str(d), "--backend", "process_pool", "-j", "2", "--commit-every", "10"),
    )
    assert proc.returncode == 1, proc.stderr  # two indices fail, on purpose
    from hpc_curator.report import build_report

    return build_report(d, base / "report.html")


def test_report_renders_in_chromium_without_console_errors(report: Path, tmp_path: Path) -> None:
    exe = chromium()
    url = report.as_uri()
    dom, err = run_chromium(
        exe,
        tmp_path / "profile-dom",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        "--dump-dom",
        url,
    )
    assert console_messages(err) == []
    assert 'data-figures="4/4"' in dom  # the page's own check: every figure decoded
    for text in ("Throughput over time", "Slowest 20 indices", "RuntimeError", "FieldStats"):
        assert text in dom
    assert 'id="card-failed">2<' in dom and 'id="card-ok">78<' in dom

    shot = tmp_path / "report.png"
    run_chromium(
        exe, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2400", url
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 2400)
    from matplotlib.image import imread

    pixels = imread(str(shot))
    assert pixels.std() > 0.05  # not a blank page
