"""--mpi auto: the srun plugin follows the MPI library; known-bad pairs are refused up front."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hpc_curator.errors import LaunchError, UsageError
from hpc_curator.slurm import mpi_plugin
from tests.conftest import EXAMPLE, cli

SRUN_LIST_2205 = """MPI plugin types are...
\tnone
\tcray_shasta
\tpmi2
specific pmix plugin versions available: pmix_v4
"""


def fake_srun(tmp_path: Path, text: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(f"#!/bin/sh\ncat <<'EOF'\n{text}EOF\n")
    srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_auto_follows_the_library() -> None:
    assert mpi_plugin.choose("auto", "MPICH", None) == "pmi2"
    assert mpi_plugin.choose("auto", "Intel MPI", None) == "pmi2"
    assert mpi_plugin.choose("auto", "Open MPI", None) == "pmix"
    assert mpi_plugin.vendor_of("Open MPI v5.0.5, package: Open MPI ...") == "Open MPI"
    assert mpi_plugin.vendor_of("Intel(R) MPI Library 2021.13 for Linux*") == "Intel MPI"
    assert mpi_plugin.vendor_of("MPICH Version:      5.0.2") == "MPICH"


@pytest.mark.parametrize(
    ("vendor", "bad", "good"), [("MPICH", "pmix", "pmi2"), ("Open MPI", "pmi2", "pmix")]
)
def test_known_bad_pairs_are_refused_naming_the_right_plugin(
    vendor: str, bad: str, good: str
) -> None:
    with pytest.raises(UsageError, match=f"use --mpi {good}"):
        mpi_plugin.choose(bad, vendor, None)
    assert mpi_plugin.choose(bad, vendor, None, strict=False) == bad  # another env on the nodes


def test_the_plugin_must_be_offered_by_the_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", fake_srun(tmp_path, SRUN_LIST_2205)["PATH"])
    offered = mpi_plugin.offered()
    assert offered == ["none", "cray_shasta", "pmi2"]
    assert mpi_plugin.choose("auto", "MPICH", offered) == "pmi2"
    with pytest.raises(LaunchError, match=r"does not offer --mpi=pmix \(srun --mpi=list: none"):
        mpi_plugin.choose("auto", "Open MPI", offered)
    assert mpi_plugin.choose("pmix", "Open MPI", ["none", "pmi2", "pmix_v4"]) == "pmix"


def test_cli_resolves_auto_and_refuses_a_bad_explicit_plugin(tmp_path: Path) -> None:
    d = tmp_path / "run"
    auto = cli("submit", EXAMPLE, "--run-dir", str(d), "--dry-run")
    assert auto.returncode == 0, auto.stderr
    assert "srun --unbuffered --mpi=pmi2 " in auto.stdout  # this environment has MPICH
    bad = cli("submit", EXAMPLE, "--run-dir", str(d), "--mpi", "pmix", "--dry-run")
    assert bad.returncode == 2 and "use --mpi pmi2" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    script = cli("sbatch-script", EXAMPLE, "--run-dir", str(d), "--mpi", "auto")
    assert script.returncode == 0 and "--mpi=pmi2" in script.stdout


WHEEL = "MPICH Version:      5.0.2\nMPICH Device:       ch4:ucx ofi\nMPICH ABI: 18:2:6"


OFI = {"MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "^sockets"}
PMI2 = {"SLURM_MPI_TYPE": "pmi2"}


@pytest.mark.parametrize(
    ("library", "env", "expected"),
    [
        (WHEEL, PMI2, OFI),
        (WHEEL, {**PMI2, "FI_PROVIDER": "verbs"}, {"MPIR_CVAR_CH4_NETMOD": "ofi"}),
        (WHEEL, {}, {}),  # mpiexec: Hydra's PMI takes 4,096-byte lines
        (WHEEL, {"SLURM_MPI_TYPE": "pmix"}, {}),
        (WHEEL, {**PMI2, "MPIR_CVAR_CH4_NETMOD": "ucx"}, {}),
        (WHEEL, {**PMI2, "MPICH_CH4_NETMOD": "ucx"}, {}),
        ("MPICH Version: 4.1\nMPICH Device: ch4:ucx", PMI2, {}),
        ("MPICH Version: 4.1\nMPICH Device: ch4:ofi", PMI2, {}),
        ("Intel(R) MPI Library 2021.18 for Linux* OS", PMI2, {}),
    ],
)
def test_srun_netmod_only_for_a_dual_netmod_mpich_under_pmi2(
    library: str, env: dict[str, str], expected: dict[str, str]
) -> None:
    from hpc_curator.runtime.world import srun_netmod

    assert srun_netmod(library, env) == expected


def test_the_chosen_netmod_starts_mpi(tmp_path: Path) -> None:
    """A rank under pmi2 asks for OFI before MPI_Init, and MPI starts on it."""
    import subprocess
    import sys

    code = (
        "from hpc_curator.runtime.world import detect_world\n"
        "w = detect_world()\n"
        "print(w.size, w.mpi.get('netmod'))\n"
    )
    env = {**os.environ, "SLURM_MPI_TYPE": "pmi2"}
    env.pop("HPC_CURATOR_EXPECTED_SIZE", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "1 ofi", proc.stdout
