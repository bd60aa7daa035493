"""Moving over from physicsnemo-curator: legacy stateful filters, directory states, keywords.

The filters (tests/legacy_filters.py) record which indices reached their state, so every test
checks exactness: each successful index exactly once, failed ones never, after real MPI
ranks, pool workers, and a SIGKILL + resume.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpc_curator import LegacyStatefulFilter, Param, Pipeline
from hpc_curator.api import run_pipeline
from hpc_curator.components import SyntheticSource
from hpc_curator.errors import UsageError
from hpc_curator.store.atomic import temp_name
from hpc_curator.store.checksum import file_digest
from tests.conftest import ROOT, cli, read_manifest
from tests.legacy_filters import LegacyMeans, read_result

SPEC = f"{ROOT}/tests/legacy_filters.py:legacy"
N = 40


def expected(n: int, failed: set[int]) -> dict[str, Any]:
    """What a correct merge holds, computed from the source directly."""
    src = SyntheticSource(n=n, shape="4x4", fields=("u",), seed=3)
    seen = [i for i in range(n) if i not in failed]
    arrays = [item["u"] for i in seen for item in src[i]]
    return {"count": sum(a.size for a in arrays), "total": sum(float(a.sum()) for a in arrays),
            "seen": seen}  # fmt: skip


def check(result: dict[str, Any], want: dict[str, Any]) -> None:
    assert sorted(result["seen"]) == want["seen"]  # each once, no failed index
    assert result["count"] == want["count"]
    assert result["total"] == pytest.approx(want["total"], rel=1e-12)


def output_of(run_dir: Path, name: str) -> dict[str, Any]:
    return read_manifest(run_dir)["outputs"][name]


@pytest.mark.parametrize(
    ("kind", "launcher", "name"),
    [
        ("parquet", ["--ranks", "2"], "legacy"),
        ("zarr", ["-j", "2"], "legacy"),
        ("zarr", ["--ranks", "2"], "legacy"),
        ("dir", ["--ranks", "2"], "dirseen"),
        ("dir", ["--backend", "sequential"], "dirseen"),
    ],
)
def test_legacy_and_directory_states_are_exact(
    tmp_path: Path, kind: str, launcher: list[str], name: str
) -> None:
    d = tmp_path / "run"
    proc = cli(
        "run", SPEC, "-p", f"n={N}", "-p", f"kind={kind}", "-p", "fail=3,11",
        "-p", f"out={tmp_path / 'merged'}", "--run-dir", str(d), "--commit-every", "4", "-q",
        *launcher,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # two indices failed, by design
    out = output_of(d, name)
    assert out["segments"] >= 2
    check(read_result(out["path"]), expected(N, {3, 11}))
    assert out["sha256"] == file_digest(out["path"])
    assert cli("verify", str(d)).returncode == 0
    segments = list((d / "shards" / name).iterdir())
    if kind in ("zarr", "dir"):
        assert all(p.is_dir() for p in segments) and Path(out["path"]).is_dir()
    assert not [p for p in d.rglob(".tmp-*")]


def test_sigkill_mid_run_then_resume_counts_every_index_once(tmp_path: Path) -> None:
    d = tmp_path / "run"
    merged = tmp_path / "merged"
    args = ["run", SPEC, "-p", f"n={N}", "-p", "kind=zarr", "-p", f"out={merged}",
            "-p", "at=25", "--run-dir", str(d), "--commit-every", "3", "-q"]  # fmt: skip
    first = cli(*args)
    assert first.returncode == -signal.SIGKILL, first.stderr
    shard_dir = d / "shards" / "legacy"
    before = {p.name for p in shard_dir.iterdir()}
    assert before  # some windows were committed before the kill
    # a store half written when the process died (as a kill inside flush leaves it)
    stale = temp_name(shard_dir / "legacy.rank00000.a0001-999999.zarr")
    (stale / "seen").mkdir(parents=True)
    again = cli(*args, env={"HPC_TEST_NO_KILL": "1"})
    assert again.returncode == 0, again.stderr
    assert not stale.exists()
    doc = read_manifest(d)
    assert doc["status"] == "complete" and doc["counts"]["ok"] == N
    check(read_result(doc["outputs"]["legacy"]["path"]), expected(N, set()))
    # tampering with a committed directory segment is caught by verify
    victim = sorted(p for p in shard_dir.iterdir() if p.name in before)[0]
    (victim / "zarr.json").write_text((victim / "zarr.json").read_text() + " ")
    bad = cli("verify", str(d))
    assert bad.returncode != 0 and victim.name in bad.stdout + bad.stderr


def test_pool_and_mpi_agree_with_sequential(tmp_path: Path) -> None:
    results = []
    for launcher in (["--backend", "sequential"], ["-j", "2"], ["--ranks", "2"]):
        d = tmp_path / launcher[-1]
        cli("run", SPEC, "-p", "n=24", "-p", "kind=parquet", "-p", f"out={d}-out",
            "--run-dir", str(d), "-q", *launcher, check=True)  # fmt: skip
        results.append(read_result(output_of(d, "legacy")["path"]))
    assert results[0]["seen"] == results[1]["seen"] == results[2]["seen"] == list(range(24))
    assert results[0]["count"] == results[1]["count"] == results[2]["count"]
    assert results[1]["total"] == pytest.approx(results[0]["total"])
    assert results[2]["total"] == pytest.approx(results[0]["total"])


def test_an_unwrapped_legacy_filter_is_refused_naming_the_adapter(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="LegacyStatefulFilter"):
        Pipeline(SyntheticSource(n=2, shape="2x2")).filter(LegacyMeans("s.parquet"))
    d = tmp_path / "run"
    proc = cli("run", f"{ROOT}/tests/legacy_filters.py:unwrapped", "--run-dir", str(d), "-q")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "would be lost" in lines[0], proc.stderr
    assert "LegacyStatefulFilter(LegacyMeans(...))" in lines[0]
    assert not d.exists()


def test_a_flush_that_writes_nowhere_is_an_error_not_a_lost_shard(tmp_path: Path) -> None:
    d = tmp_path / "run"
    proc = cli("run", SPEC, "-p", "n=6", "-p", "kind=lost", "--run-dir", str(d), "-q",
               env={"TMPDIR": str(tmp_path)})  # fmt: skip
    assert proc.returncode not in (0, 1), proc.stderr
    assert "flush() wrote nothing to its _output_path" in proc.stderr
    doc = read_manifest(d) if (d / "manifest.json").exists() else {"status": "none"}
    assert doc["status"] != "complete"


def test_adapter_needs_the_legacy_contract() -> None:
    with pytest.raises(UsageError, match="no flush"):
        LegacyStatefulFilter(object())

    class NoMerge:
        _output_path = "x.parquet"

        def flush(self) -> None: ...

    with pytest.raises(UsageError, match="no merge"):
        LegacyStatefulFilter(NoMerge())
    f = LegacyStatefulFilter(LegacyMeans("/data/stats_{worker_id}.parquet"))
    assert f.name == "stats" and f.output == "/data/stats_merged.parquet"
    assert f.suffix == ".parquet"


@pytest.mark.parametrize(
    ("keyword", "says"),
    [
        ("use_tui", "progress=True/False"),
        ("db_dir", "run_dir=..."),
        ("resume", "always resumes"),
        ("commit_evry", "unknown keyword 'commit_evry'"),
    ],
)
def test_the_originals_run_pipeline_keywords_say_what_replaces_them(
    tmp_path: Path, keyword: str, says: str
) -> None:
    pipe = Pipeline(SyntheticSource(n=2, shape="2x2"))
    with pytest.raises(UsageError, match=says.replace("(", r"\(").replace(".", r"\.")):
        run_pipeline(pipe, run_dir=tmp_path / "r", progress=False, **{keyword: True})
    assert not (tmp_path / "r").exists()


def test_param_takes_both_argument_orders_and_checks_choices(tmp_path: Path) -> None:
    ours = Param("n", int, 5, "count")
    theirs = Param("n", "count", type=int, default=5)
    assert ours == theirs and theirs.description == "count" == ours.help
    assert Param("m", "required by default").default is Param.REQUIRED
    mode = Param("mode", "what", choices=("a", "b"))
    assert mode.convert("a") == "a"
    with pytest.raises(ValueError, match="'c' is not one of 'a', 'b'"):
        mode.convert("c")
    assert Param("k", int, choices=(1, 2)).convert("2") == 2
    spec = tmp_path / "p.yaml"
    spec.write_text(
        json.dumps({"source": {"class": "tests.legacy_filters:Modes", "params": {"n": 3}}})
    )
    ok = cli("run", str(spec), "-p", "source.mode=ones", "--run-dir", str(tmp_path / "a"),
             "-q", cwd=ROOT)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    bad = cli("run", str(spec), "-p", "source.mode=twos", "--run-dir", str(tmp_path / "b"),
              "-q", cwd=ROOT)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "Error: --param mode='twos' for tests.legacy_filters:Modes: 'twos' is not one of "
        "'zeros', 'ones'"
    ]
    assert np.asarray([1]).size == 1
