"""Ranks of a Slurm job inside a Charliecloud image (the local 4-node cluster).

``srun`` starts every task as ``ch-run ... IMAGE -- python -m submitit...``: each rank has its
own user namespace, MPICH's PMI-2 wire-up goes through srun, and the run dir is bound in.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    FIXTURE_PIPELINES,
    ROOT,
    assert_stats_equal,
    cli,
    read_manifest,
    stats,
)
from tests.test_container import _image


def test_submit_runs_every_rank_inside_the_image(slurm_cluster: Any, tmp_path: Path) -> None:
    if shutil.which("ch-run") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("ch-run is missing in CI (apt-get install charliecloud-runtime)")
        pytest.skip("ch-run not installed")
    python_home = str(Path(sys.base_prefix).resolve())
    binds = ["/usr", python_home]
    image = _image(tmp_path, [*binds, str(ROOT)])
    d, out = tmp_path / "run", tmp_path / "probe"
    spec = f"{FIXTURE_PIPELINES}:envprobe"
    params = ["-p", "n=24", "-p", f"out={out}", "-p", "names=CH_RUNNING,SLURM_PROCID"]
    proc = cli(
        "submit", spec, *params, "--run-dir", str(d),
        "--nodes", "2", "--ntasks-per-node", "2", "--time", "5",
        "--container", str(image), "--container-runtime", "charliecloud",
        *[a for b in binds for a in ("--container-bind", b)],
        "--python", sys.executable, "--wait",
        cwd=ROOT, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr + slurm_cluster.dump(d)
    doc = read_manifest(d)
    assert doc["status"] == "complete" and doc["world_size"] == 4
    assert len({r["node"] for r in doc["ranks"]}) == 2
    probes = [json.loads((out / f"{i}.json").read_text())[0] for i in range(24)]
    assert {p["env"]["CH_RUNNING"] for p in probes} == {"Weird Al Yankovic"}
    assert {p["env"]["SLURM_PROCID"] for p in probes} == {"0", "1", "2", "3"}
    assert os.readlink("/proc/self/ns/user") not in {p["userns"] for p in probes}
    script = next((d / "slurm" / "logs").glob("*_submission.sh")).read_text()
    assert f"ch-run -b /usr:/usr -b {python_home}:{python_home}" in script
    plain = tmp_path / "plain"
    cli(
        "run", spec, "-p", "n=24", "-p", f"out={tmp_path / 'p2'}", "--run-dir", str(plain), "-q",
        check=True,
    )  # fmt: skip
    assert_stats_equal(stats(d), stats(plain))
