"""Slurm settings validation, the renderer (golden files) and submit's pre-flight checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpc_curator.engine.values import RunSettings
from hpc_curator.errors import UsageError
from hpc_curator.slurm.options import SlurmOptions, parse_time
from hpc_curator.slurm.script import render
from hpc_curator.slurm.submit import dry_run, sbatch_script
from hpc_curator.store.rundir import RunDir
from tests.conftest import FIXTURE_PIPELINES, cli

GOLDEN = Path(__file__).parent / "golden"
RECORD = os.environ.get("HPC_CURATOR_RECORD_GOLDEN") == "1"
SPEC = f"{FIXTURE_PIPELINES}:stats"


def srun_line(script: str) -> str:
    """The script's ``srun`` line."""
    return next(line for line in script.splitlines() if line.startswith("srun "))


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if RECORD:
        path.write_text(text)
    expected = path.read_text()
    assert text.splitlines() == expected.splitlines(), (
        f"{name} changed; if intended, re-record with HPC_CURATOR_RECORD_GOLDEN=1 pytest {__file__}"
    )


def full_options() -> SlurmOptions:
    return SlurmOptions(
        nodes=4,
        ntasks_per_node=8,
        cpus_per_task=2,
        time="2:00:00",
        partition="gpu",
        account="proj42",
        qos="high",
        mem="64G",
        gpus_per_node=4,
        constraint="a100&ib",
        exclusive=True,
        job_name="curate sims",
        mpi="pmix",
        setup=("module load cuda/12", "source /opt/venv/bin/activate"),
        sbatch_opts=(("mail-type", "END,FAIL"),),
        srun_args=("--cpu-bind=cores",),
        dependency="afterok:123",
        begin="now+1hour",
        signal_delay=120,
        max_requeues=5,
        python="/opt/venv/bin/python",
    )


def test_dry_run_script_matches_golden() -> None:
    check_golden("submit_full.sbatch", dry_run(full_options(), RunDir("/lustre/proj/run 1")))


def test_minimal_script_matches_golden() -> None:
    check_golden(
        "submit_minimal.sbatch", dry_run(SlurmOptions(python="python3"), RunDir("/shared/run"))
    )


def test_sbatch_script_runs_the_rank_program() -> None:
    spec = {"kind": "factory", "ref": "/home/u/p.py:build", "params": {"n": "10"}}
    text = sbatch_script(
        SlurmOptions(nodes=2, ntasks_per_node=2, python="python3"),
        RunDir("/shared/run"),
        RunSettings(commit_every=50),
        spec,
    )
    check_golden("sbatch_script.sbatch", text)
    last = srun_line(text)
    assert last.startswith("srun --unbuffered --mpi=pmi2 ")
    assert "-m hpc_curator rank --run-dir /shared/run --spec-json" in last


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("job_name", "x\n#SBATCH --partition=big"),
        ("partition", "debug\nrm -rf ~"),
        ("account", "a\rb"),
        ("setup", ("module load x\nrm -rf /",)),
        ("srun_args", ("--foo\x00",)),
        ("sbatch_opts", (("mail-type", "END\n#SBATCH --qos=top"),)),
        ("constraint", "a\tb"),
    ],
)
def test_injection_attempts_are_refused(field: str, value: object) -> None:
    with pytest.raises(UsageError, match="newline or control character"):
        SlurmOptions(**{field: value})  # type: ignore[arg-type]


def test_shell_metacharacters_are_quoted_not_executed() -> None:
    opts = SlurmOptions(job_name="$(touch /tmp/pwned)", srun_args=("; rm -rf /",), python="python3")
    text = render(opts, ["python", "-c", "print('$HOME; `id`')"], log_pattern="/r/%j_%t")
    assert '#SBATCH --job-name="$(touch /tmp/pwned)"' in text
    assert "'; rm -rf /'" in text
    assert "'print('\"'\"'$HOME; `id`'\"'\"')'" in text


@pytest.mark.parametrize("bad", ["0", "abc", "1:2:3:4", "-5", "1-", "10:99x", ""])
def test_malformed_time_is_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="not a Slurm time limit"):
        SlurmOptions(time=bad)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("30", 30),
        ("5:30", 6),
        ("2:00:00", 120),
        ("1-0", 1440),
        ("1-2:30", 1590),
        ("1-00:00:01", 1441),
    ],
)
def test_time_parsing(text: str, minutes: int) -> None:
    assert parse_time(text) == minutes


def test_bad_sbatch_opt_key() -> None:
    with pytest.raises(UsageError, match="not an sbatch option name"):
        SlurmOptions(sbatch_opts=(("Bad Key", "x"),))


def test_options_round_trip_json() -> None:
    opts = full_options()
    assert SlurmOptions.from_json(opts.to_json()) == opts
    assert opts.override(nodes=2, time=None).nodes == 2
    assert opts.world_size == 32


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--nodes", "0"], "--nodes must be >= 1"),
        (["--ntasks-per-node", "0"], "--ntasks-per-node must be >= 1"),
        (["--time", "forever"], "not a Slurm time limit"),
        (["--job-name", "a\nb"], "newline"),
        (["--sbatch-opt", "NOPE=1"], "not an sbatch option name"),
    ],
)
def test_submit_bad_options_one_line_no_state(tmp_path: Path, args: list[str], needle: str) -> None:
    d = tmp_path / "run"
    proc = cli("submit", SPEC, "--run-dir", str(d), *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("Error: ")
    assert not d.exists()


def test_submit_without_slurm_says_how_to_run_instead(tmp_path: Path) -> None:
    d = tmp_path / "run"
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = cli("submit", SPEC, "--run-dir", str(d), env={"PATH": str(empty)})
    assert proc.returncode == 5
    assert "sbatch is not on PATH" in proc.stderr and "--cluster local" in proc.stderr
    assert not d.exists()


def test_dry_run_submits_and_creates_nothing(tmp_path: Path) -> None:
    d = tmp_path / "run"
    proc = cli("submit", SPEC, "--run-dir", str(d), "--nodes", "2", "--dry-run")
    assert proc.returncode == 0
    assert proc.stdout.startswith("#!/bin/bash") and "#SBATCH --nodes=2" in proc.stdout
    assert not d.exists()


def test_cluster_debug_runs_in_process(tmp_path: Path) -> None:
    d = tmp_path / "run"
    proc = cli("submit", SPEC, "-p", "n=12", "--run-dir", str(d), "--cluster", "debug")
    assert proc.returncode == 0, proc.stderr
    assert "complete: 12/12 ok" in proc.stderr


@pytest.mark.mpi
def test_cluster_local_runs_ranks_via_mpiexec(tmp_path: Path) -> None:
    d = tmp_path / "run"
    proc = cli(
        "submit",
        SPEC,
        "-p",
        "n=12",
        "--run-dir",
        str(d),
        "--cluster",
        "local",
        "--ntasks-per-node",
        "2",
        "--wait",
    )
    assert proc.returncode == 0, proc.stderr
    assert "complete: 12/12 ok" in proc.stderr
    import json

    assert json.loads((d / "manifest.json").read_text())["world_size"] == 2


def test_sbatch_script_passes_indices_quoted_to_the_rank_program(tmp_path: Path) -> None:
    d = tmp_path / "run"
    proc = cli("sbatch-script", SPEC, "-p", "n=40", "--run-dir", str(d), "--indices", "0:10, 20")
    assert proc.returncode == 0, proc.stderr
    last = srun_line(proc.stdout)
    assert "--indices '0:10, 20'" in last and f"--run-dir {d}" in last


@pytest.mark.parametrize(("fail_first", "signature", "tries", "code"), [
    (1, True, 2, 0),  # the step died on Slurm's pmi2 line limit once: run again, then fine
    (5, True, 3, 7),  # it keeps dying: three tries, the step's own exit code
    (1, False, 1, 7),  # any other failure: no second try
])  # fmt: skip
def test_a_pmi2_step_that_died_on_the_pmi1_line_limit_runs_again(
    tmp_path: Path, fail_first: int, signature: bool, tries: int, code: int
) -> None:
    """The rendered job script, run by bash with a stand-in ``srun`` that writes what Slurm
    22.05's pmi2 plugin logs into the step's task logs and fails ``fail_first`` times."""
    import subprocess

    from hpc_curator.slurm.mpi_plugin import PMI2_SPLIT_LINE

    run = RunDir(tmp_path / "run dir")
    requeues = 0 if tries == 3 else 2  # with and without the requeue block around srun
    text = dry_run(SlurmOptions(nodes=2, python="python3", max_requeues=requeues), run)
    assert text.count("\nsrun --unbuffered --mpi=pmi2 ") == 1
    logs = run.slurm_logs_dir
    logs.mkdir(parents=True)
    task_log = f"{logs}/${{SLURM_JOB_ID}}_1_log.err"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text(
        "#!/bin/bash\n"
        f'n=$(cat {tmp_path}/calls 2>/dev/null || echo 0); echo $((n + 1)) > {tmp_path}/calls\n'
        f'if [ "$n" -lt {fail_first} ]; then\n'
        + (f'  echo "slurmstepd: error: {PMI2_SPLIT_LINE}" >> "{task_log}"\n' if signature else "")
        + "  exit 7\nfi\nexit 0\n"
    )  # fmt: skip
    (fake / "srun").chmod(0o755)
    script = tmp_path / "job.sh"
    script.write_text(text)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SLURM_JOB_ID": "42"}
    proc = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == code, proc.stderr
    assert int((tmp_path / "calls").read_text()) == tries
    assert proc.stderr.count("starting the step again") == tries - 1
