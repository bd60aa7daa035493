"""A job that dies in MPI_Init: ``--wait``, ``status`` and the manifest say so honestly.

MPICH ranks under ``srun --mpi=pmix`` abort in MPI_Init ("unsupported PMI version PMIx").
``--mpi auto`` would never choose that, and an explicit ``--mpi pmix`` is refused when the job
runs this very environment; a ``--setup`` line makes the environment the job's own, so the
pairing reaches the cluster, as a wrong site module would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import FIXTURE_PIPELINES, cli

SPEC = f"{FIXTURE_PIPELINES}:stats"


def test_an_mpi_init_abort_is_reported_with_slurms_state_and_the_ranks_error(
    slurm_cluster: Any, tmp_path: Path
) -> None:
    d = tmp_path / "run"
    proc = cli(
        "submit", SPEC, "-p", "n=40", "--run-dir", str(d), "--nodes", "2",
        "--ntasks-per-node", "2", "--time", "5", "--mpi", "pmix", "--setup", "true", "--wait",
        timeout=240,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 5, out + slurm_cluster.dump(d)  # a launch error, not 3 ("resume")
    assert "ended FAILED" in out, out
    assert "the job itself failed" in out and "re-running will not help" in out, out
    said = out.split("the job itself failed: ")[1].split("; re-running")[0]
    assert "PMI" in said or "exit code" in said, out  # the ranks' or srun's first error lines
    assert "re-run the same command to resume" not in out
    doc = json.loads(cli("status", str(d), "--json", check=True).stdout)
    assert doc["jobs"][-1]["state"].startswith("FAILED"), doc["jobs"]
    assert doc["counts"]["ok"] == 0 and doc["counts"]["pending"] == 40
