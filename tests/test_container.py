"""Ranks inside a container: rendered scripts per runtime, refusals, and real Charliecloud runs.

Apptainer, Singularity and pyxis are not installable here (no Debian 12 package; pyxis needs
enroot and a Slurm plugin): their job scripts are checked against golden files. Charliecloud
(Debian's ``charliecloud-runtime``, unprivileged) runs for real: ``run --ranks 2`` inside an
image directory built from this machine's ``/usr``, each rank in its own user namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from hpc_curator.errors import UsageError
from hpc_curator.runtime.container import Container
from hpc_curator.slurm.options import SlurmOptions
from hpc_curator.slurm.script import render
from tests.conftest import EXAMPLE, FIXTURE_PIPELINES, ROOT, cli, read_manifest
from tests.test_slurm_script import check_golden, srun_line

RUN_DIR = "/lustre/me/run1"
WORKDIR = "/home/me/project"
PAYLOAD = ["python3", "-m", "hpc_curator", "rank", "--run-dir", RUN_DIR]


def script(**opts: object) -> str:
    return render(
        SlurmOptions(nodes=2, ntasks_per_node=4, **opts),  # type: ignore[arg-type]
        PAYLOAD,
        log_pattern=f"{RUN_DIR}/slurm/logs/%j_%t",
        run_dir=RUN_DIR,
        workdir=WORKDIR,
    )


@pytest.mark.parametrize(
    ("name", "opts"),
    [
        ("apptainer", {"container": "/images/curate.sif", "gpus_per_rank": 1}),
        ("singularity", {"container": "/images/c.sif", "container_runtime": "singularity"}),
        (
            "pyxis",
            {
                "container": "nvcr.io#nvidia/pytorch:24.05-py3",
                "container_runtime": "pyxis",
                "container_bind": ("/lustre/data:/data",),
            },
        ),
        (
            "charliecloud",
            {
                "container": "/images/curate",
                "container_runtime": "charliecloud",
                "container_bind": ("/lustre",),
            },
        ),
        ("prefix", {"launch_prefix": "numactl --interleave=all", "python": "conda run -n c py"}),
    ],
)
def test_rendered_scripts_per_runtime(name: str, opts: dict[str, object]) -> None:
    text = script(**opts)
    check_golden(f"container_{name}.sbatch", text)


def test_srun_lines_say_what_each_runtime_needs() -> None:
    line = srun_line(script(container="/images/curate.sif", gpus_per_rank=1))
    assert line.endswith(
        f"apptainer exec --bind {RUN_DIR}:{RUN_DIR},{WORKDIR}:{WORKDIR} --nv --pwd {WORKDIR} "
        f"/images/curate.sif {' '.join(PAYLOAD)}"
    )
    text = script(container="/c", container_runtime="charliecloud", container_bind=("/lustre",))
    # the run dir lies inside the /lustre bind: bound once
    assert f"ch-run -b /lustre:/lustre -b {WORKDIR}:{WORKDIR} -c {WORKDIR} /c --" in text
    assert 'export USER="${USER:-$(id -un)}"' in text
    assert "export MPIR_CVAR_CH4_CMA_ENABLE=${MPIR_CVAR_CH4_CMA_ENABLE:-0}" in text
    line = srun_line(script(container="img.sqsh", container_runtime="pyxis"))
    assert "--container-image=img.sqsh" in line and "python3 -m hpc_curator" in line
    assert "ch-run" not in line and "apptainer" not in line
    line = srun_line(script(launch_prefix="nsys profile -o 'r %q{SLURM_PROCID}'"))
    assert "nsys profile -o 'r %q{SLURM_PROCID}' python3 -m hpc_curator rank" in line


def test_multi_word_python_is_split_not_quoted(tmp_path: Path) -> None:
    proc = cli(
        "sbatch-script", EXAMPLE, "--run-dir", str(tmp_path / "r"),
        "--python", "/opt/wrap --flag /opt/venv/bin/python",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "/opt/wrap --flag /opt/venv/bin/python -m hpc_curator rank" in srun_line(proc.stdout)
    proc = cli("submit", EXAMPLE, "--run-dir", str(tmp_path / "s"), "--dry-run", "--python", "a b")
    assert " a b -u -m submitit.core._submit " in srun_line(proc.stdout) + " "


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runtime": "docker", "image": "x"}, "--container-runtime 'docker' is not one of"),
        ({"launch_prefix": "a 'b"}, '--launch-prefix "a \'b" cannot be split'),
        ({"binds": ("data",), "image": "x"}, "--container-bind 'data' is not an absolute path"),
    ],
)
def test_bad_container_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        Container(**kwargs)  # type: ignore[arg-type]


def test_run_refuses_what_cannot_work_in_one_line(tmp_path: Path) -> None:
    image = tmp_path / "img"
    image.mkdir()
    cases = [
        (
            [
                "--container",
                str(image),
                "--container-runtime",
                "charliecloud",
                "--container-bind",
                "/usr",
            ],
            "has no directory /usr",
        ),
        (["--ranks", "2", "--container", "x.sqsh", "--container-runtime", "pyxis"], "srun"),
        (["--container", "/no/such.sif"], "add --ranks N"),
        (["--ranks", "2", "--container", "/no/such.sif"], "does not exist"),
    ]
    for extra, message in cases:
        if "charliecloud" in extra:
            extra = ["--ranks", "2", *extra]
        run_dir = tmp_path / "run"
        proc = cli("run", EXAMPLE, "--run-dir", str(run_dir), "-q", *extra)
        assert proc.returncode == 2, (extra, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (extra, proc.stderr)
        assert not run_dir.exists()


# -- Charliecloud, for real ---------------------------------------------------------------------


def _image(tmp_path: Path, binds: list[str]) -> Path:
    """An image directory: mount points only; the host's /usr and Python are bound in."""
    image = tmp_path / "image"
    for d in ("usr", "etc", "proc", "dev", "sys", "tmp", "root", "home", "run", "var", "mnt"):
        (image / d).mkdir(parents=True)
    for d in ("bin", "lib", "lib64", "sbin"):
        (image / d).symlink_to(f"usr/{d}")
    for f in ("passwd", "group", "hosts", "resolv.conf"):
        (image / "etc" / f).touch()
    for bind in binds:
        (image / bind.lstrip("/")).mkdir(parents=True, exist_ok=True)
    return image


@pytest.fixture
def charliecloud() -> str:
    exe = shutil.which("ch-run")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("ch-run is missing in CI (apt-get install charliecloud-runtime)")
        pytest.skip("ch-run not installed (apt-get install charliecloud-runtime)")
    return exe


def test_charliecloud_ranks_run_inside_the_image(charliecloud: str, tmp_path: Path) -> None:
    python_home = str(Path(sys.base_prefix).resolve())
    binds = ["/usr", python_home]
    image = _image(tmp_path, [*binds, str(ROOT)])
    run_dir, out = tmp_path / "run", tmp_path / "probe"
    env = {k: v for k, v in os.environ.items() if k != "USER"}  # ch-run needs it: we set it
    args = [
        "run", f"{FIXTURE_PIPELINES}:envprobe", "-p", "n=12", "-p", f"out={out}",
        "-p", "names=CH_RUNNING,MPIR_CVAR_CH4_CMA_ENABLE,USER",
        "--ranks", "2", "--run-dir", str(run_dir), "-q",
        "--container", str(image), "--container-runtime", "charliecloud",
        *[a for b in binds for a in ("--container-bind", b)],
        "--python", sys.executable,
    ]  # fmt: skip
    proc = cli(*args, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "UCX  ERROR" not in proc.stderr, proc.stderr
    doc = read_manifest(run_dir)
    assert doc["status"] == "complete" and doc["counts"]["ok"] == 12
    assert doc["world_size"] == 2
    probes = [json.loads((out / f"{i}.json").read_text())[0] for i in range(12)]
    host_ns = os.readlink("/proc/self/ns/user")
    assert {p["env"]["CH_RUNNING"] for p in probes} == {"Weird Al Yankovic"}
    assert all(p["env"]["MPIR_CVAR_CH4_CMA_ENABLE"] == "0" and p["env"]["USER"] for p in probes)
    namespaces = {p["userns"] for p in probes}
    assert host_ns not in namespaces and len({p["pid"] for p in probes}) == 2
    # the same run outside the image gives the same statistics
    plain = tmp_path / "plain"
    cli(
        "run", f"{FIXTURE_PIPELINES}:envprobe", "-p", "n=12", "-p", f"out={tmp_path / 'p2'}",
        "--run-dir", str(plain), "-q", check=True,
    )  # fmt: skip
    from tests.conftest import assert_stats_equal, stats

    assert_stats_equal(stats(run_dir), stats(plain))
