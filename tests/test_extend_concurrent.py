"""Revisions are append-only: concurrent ``hpc-curate extend`` calls all land, none is lost,
and ``run.json`` is never rewritten (real processes started together, real files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_curator import Run
from hpc_curator.errors import RunDirError
from hpc_curator.store import rundir
from tests.conftest import FIXTURE_PIPELINES, assert_stats_equal, cli, manifest_rows, stats

SPEC = f"{FIXTURE_PIPELINES}:stats"


#: ``hpc-curate`` whose extend waits, after its busy check and before it reads the run, until
#: every party of the round got there: the calls then surely race (both read the same list)
RACING_CLI = """
import os, sys, time
from pathlib import Path
from hpc_curator.store import attempt_records, rundir
from hpc_curator.cli import main

barrier, parties = Path(sys.argv.pop(1)), int(sys.argv.pop(1))
original = attempt_records.check_not_busy

def check_not_busy(rd):
    found = original(rd)
    (barrier / str(os.getpid())).touch()
    deadline = time.time() + 60
    while len(os.listdir(barrier)) < parties and time.time() < deadline:
        time.sleep(0.002)
    return found

attempt_records.check_not_busy = check_not_busy
main()
"""


def start_extends(d: Path, barrier: Path, *selections: str) -> list[subprocess.Popen[str]]:
    """One ``hpc-curate extend`` per selection, started together and racing."""
    barrier.mkdir()
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RACING_CLI,
                str(barrier),
                str(len(selections)),
                "extend",
                str(d),
                "--indices",
                selection,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for selection in selections
    ]


def test_concurrent_extends_all_land_and_resume_runs_them_once(tmp_path: Path) -> None:
    d = tmp_path / "run"
    base = ["run", SPEC, "-p", "n=64", "--run-dir", str(d), "-q"]
    cli(*base, "--indices", "0:20", check=True)
    run_json = (d / "run.json").read_bytes()
    added: set[int] = set()
    for r in range(10):  # two extends at once, each adding its own indices
        lo = 20 + 4 * r
        procs = start_extends(d, tmp_path / f"round{r}", f"{lo}:{lo + 2}", f"{lo + 2}:{lo + 4}")
        outputs = [proc.communicate(timeout=120) for proc in procs]  # every pipe closed
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err
            assert "indices added" in out
        added.update(range(lo, lo + 4))
        assert set(rundir.load(rundir.RunDir(d)).indices.tolist()) == set(range(20)) | added
    for same in (60, 61):  # both add the same index: it lands once, or one is refused
        procs = start_extends(d, tmp_path / f"same{same}", str(same), str(same))
        results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
        assert any(code == 0 for code, _ in results), results
        for code, err in results:
            assert code == 0 or (code == 2 and len(err.strip().splitlines()) == 1), results
        added.add(same)
    assert (d / "run.json").read_bytes() == run_json  # never rewritten
    info = rundir.load(rundir.RunDir(d))
    indices = info.indices.tolist()
    assert len(indices) == len(set(indices)) == 20 + len(added)
    assert set(indices) == set(range(20)) | added
    assert [r["revision"] for r in info.meta["revisions"]] == list(
        range(2, 2 + len(info.meta["revisions"]))
    )
    assert sorted(Run(d).pending) == sorted(added)
    cli(*base, check=True)  # resume: exactly the added indices, once
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(62))
    assert {r["index"] for r in rows if r["attempt"] == 2} == added
    ref = tmp_path / "ref"
    cli("run", SPEC, "-p", "n=64", "--run-dir", str(ref), "-q", "--indices", "0:62", check=True)
    assert_stats_equal(stats(d), stats(ref))
    assert stats(d)["u"]["count"] == 62 * 64


def test_extend_records_a_revision_and_refuses_a_gap(tmp_path: Path) -> None:
    d = tmp_path / "run"
    base = ["run", SPEC, "-p", "n=60", "--run-dir", str(d), "-q"]
    cli(*base, "--indices", "0:30", check=True)
    proc = cli("extend", str(d), "--indices", "30:45")
    assert proc.returncode == 0, proc.stderr
    assert "15 indices added: the run has 45 (revision 2)" in proc.stdout
    meta = Run(d).info.meta
    assert meta["revisions"][0]["added"] == [[30, 45, 1]]
    assert meta["revisions"][0]["count_before"] == 30
    assert "revisions" not in json.loads((d / "run.json").read_text())
    record = json.loads((d / "revisions" / "0002.json").read_text())
    assert record["base"] == 1 and record["base_count"] == 30
    assert Run(d).pending == list(range(30, 45))
    proc = cli("extend", str(d), "--indices", "40:50")
    assert proc.returncode == 2 and "in the run already" in proc.stderr
    cli("extend", str(d), "--indices", "50:52", check=True)
    (d / "revisions" / "0002.json").unlink()  # a deleted record: refused, never ignored
    with pytest.raises(RunDirError, match="revision 2 of the index list is missing"):
        rundir.load(rundir.RunDir(d))
    proc = cli("status", str(d))
    assert proc.returncode == 4 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_run_extended_by_the_old_code_still_loads_and_extends(tmp_path: Path) -> None:
    """``run.json`` with ``revisions`` inside (written by versions that rewrote it)."""
    import numpy as np

    d = tmp_path / "run"
    cli("run", SPEC, "-p", "n=60", "--run-dir", str(d), "-q", "--indices", "0:10", check=True)
    rd = rundir.RunDir(d)
    meta = json.loads(rd.run_json.read_text())
    new = np.arange(15)
    meta["indices"] = {"kind": "ranges", "ranges": [[0, 15, 1]], "count": 15}
    meta["indices_hash"] = rundir.hash_indices(new)
    meta["revisions"] = [{"revision": 2, "added": [[10, 15, 1]], "count_before": 10, "count": 15}]
    rd.run_json.write_text(json.dumps(meta))
    assert rundir.load(rd).indices.tolist() == list(range(15))
    proc = cli("extend", str(d), "--indices", "15:20")
    assert proc.returncode == 0 and "(revision 3)" in proc.stdout, proc.stderr
    assert (d / "revisions" / "0003.json").is_file()
    info = rundir.load(rd)
    assert info.indices.tolist() == list(range(20))
    assert [r["revision"] for r in info.meta["revisions"]] == [2, 3]
    cli("run", SPEC, "-p", "n=60", "--run-dir", str(d), "-q", check=True)
    assert [r["index"] for r in manifest_rows(d)] == list(range(20))
