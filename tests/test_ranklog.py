"""Per-rank logs of user code and live progress between commits, on every launcher."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc_curator.engine.poison import IDLE, CurrentIndex, read_live
from hpc_curator.ui.progress import ProgressModel
from tests.conftest import FIXTURE_PIPELINES, cli, commit_count, read_manifest

SPEC = f"{FIXTURE_PIPELINES}:chatty"
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} i=(\d+|-) (out|err|hpc|log)\| (.*)$")


def parse(path: Path) -> list[tuple[str, str, str]]:
    out = []
    for line in path.read_text().splitlines():
        m = LINE.match(line)
        assert m, f"untagged line in {path.name}: {line!r}"
        out.append((m.group(1), m.group(2), m.group(3)))
    return out


@pytest.mark.parametrize(
    ("launcher", "ranks"),
    [(["--ranks", "2"], 2), (["-j", "2"], 2), (["--backend", "sequential"], 1)],
)
def test_every_rank_logs_its_user_output_tagged_by_index(
    tmp_path: Path, launcher: list[str], ranks: int
) -> None:
    d = tmp_path / "run"
    proc = cli("run", SPEC, "-p", "fail=5", "--run-dir", str(d), "-q", *launcher)
    assert proc.returncode == 1, proc.stderr
    assert "hello from index 3 line 0" in proc.stdout  # still echoed where the user watches
    logs = sorted((d / "logs").glob("a0001-rank*.log"))
    assert [p.name for p in logs] == [f"a0001-rank{r:05d}.log" for r in range(ranks)]
    seen: dict[str, set[str]] = {}
    for path in logs:
        for index, stream, text in parse(path):
            seen.setdefault(index, set()).add(f"{stream}:{text}")
    for i in range(12):
        lines = seen[str(i)]
        assert f"out:hello from index {i} line 0" in lines
        assert f"err:to stderr from {i}" in lines
        assert any(t.startswith("err:") and f"careful with {i}" in t for t in lines)
        assert f"err:WARNING user.code: logged at {i}" in lines
    assert "hpc:failed: RuntimeError: injected failure at index 5" in seen["5"]
    # the failure record points at its log lines
    rec = next(
        json.loads(line)
        for p in (d / "journal").glob("*.jsonl")
        for line in p.read_text().splitlines()
        if '"err":{"' in line
    )
    err = next(iter(rec["err"].values()))
    start, end = err["log"]["bytes"]
    text = (d / err["log"]["file"]).read_bytes()[start:end].decode()
    assert "hello from index 5" in text and "injected failure at index 5" in text
    assert "index 4" not in text
    shown = cli("logs", str(d), "--index", "5", check=True).stdout
    assert "hello from index 5 line 0" in shown and "from index 6" not in shown


def test_a_chatty_rank_is_capped_with_a_note(tmp_path: Path) -> None:
    d = tmp_path / "run"
    cli("run", SPEC, "-p", "lines=50", "--run-dir", str(d), "-q",
        env={"HPC_CURATOR_LOG_MAX_BYTES": "4000"}, check=True)  # fmt: skip
    log = d / "logs" / "a0001-rank00000.log"
    assert log.stat().st_size <= 4000 + 200
    assert "log cap of 4000 bytes reached" in log.read_text().splitlines()[-1]
    assert read_manifest(d)["status"] == "complete"


def test_live_counters_between_commits(tmp_path: Path) -> None:
    current = CurrentIndex(tmp_path / "x.current")
    current.set(7)
    assert read_live(tmp_path / "x.current")[:3] == (7, 0, 0)
    current.finished(1)
    current.set(8)
    current.finished(0)
    index, done, failed, at = read_live(tmp_path / "x.current")  # type: ignore[misc]
    assert (index, done, failed) == (IDLE, 2, 1) and abs(at - time.time()) < 5
    current.close()


def test_status_shows_uncommitted_work_and_the_running_index(tmp_path: Path) -> None:
    d = tmp_path / "run"
    cmd = [sys.executable, "-m", "hpc_curator", "run", SPEC, "-p", "n=400", "-p", "sleep=0.01",
           "--ranks", "2", "--run-dir", str(d), "-q", "--commit-every", "100000",
           "--commit-seconds", "600"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "HPC_CURATOR_EXPECTED_SIZE"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        model = ProgressModel(d)
        deadline = time.monotonic() + 60
        snap = None
        while time.monotonic() < deadline:
            time.sleep(1.1)
            model.poll()
            snap = model.snapshot()
            if snap.totals.uncommitted >= 20 and len(snap.rows) == 2:
                break
        assert snap is not None and snap.totals.uncommitted >= 20, snap
        assert snap.totals.done == 0 and commit_count(d) == 0  # nothing committed yet
        assert all(r.rate > 0 for r in snap.rows)
        doc = json.loads(cli("status", str(d), "--json", check=True).stdout)
        assert doc["uncommitted"] >= 20
        assert any(r["running_index"] is not None for r in doc["rank_progress"])
        text = cli("status", str(d), check=True).stdout
        assert "finished, not committed yet" in text
    finally:
        proc.send_signal(2)
        proc.communicate(timeout=60)
    assert commit_count(d) >= 1  # the stop committed what was done
