"""Site defaults: config files, profiles, HPC_CURATE_<OPTION> variables and their precedence.

Each test runs the real ``hpc-curate`` in a subprocess with its own config files and reads
what the command did: the sbatch script it would submit, the manifest of a real run, or
``config show --json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, cli, read_manifest

SITE = """
[defaults]
account = "site-acct"
time = "1:00:00"
qos = "normal"

[profiles.gpu]
partition = "site-gpu"
"""

USER = """
default_profile = "cpu"

[defaults]
time = "2:00:00"
ntasks-per-node = 8

[profiles.cpu]
partition = "cpu"

[profiles.gpu]
partition = "gpu"
gpus-per-rank = 1
modules = ["cuda/12.4"]
setup = ["source /apps/venv/bin/activate"]
container = "/images/curate.sif"
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    site, user = tmp_path / "site.toml", tmp_path / "user.toml"
    site.write_text(SITE)
    user.write_text(USER)
    return {"HPC_CURATE_SITE_CONFIG": str(site), "HPC_CURATE_CONFIG": str(user)}


def sbatch_lines(script: str) -> dict[str, str]:
    out = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line[len("#SBATCH --") :].partition("=")
            out[key] = value
    return out


def dry_run(tmp_path: Path, env: dict[str, str], *args: str) -> str:
    proc = cli("submit", EXAMPLE, "--run-dir", str(tmp_path / "run"), "--dry-run", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_precedence_command_line_env_profile_defaults(
    tmp_path: Path, files: dict[str, str]
) -> None:
    env = {**files, "HPC_CURATE_NODES": "3", "HPC_CURATE_PARTITION": "from-env"}
    script = dry_run(tmp_path, env, "--profile", "gpu", "--time", "5")
    lines = sbatch_lines(script)
    assert lines["time"] == "5"  # command line beats user and site defaults
    assert lines["nodes"] == "3"  # environment
    assert lines["partition"] == "from-env"  # environment beats both profiles
    assert lines["ntasks-per-node"] == "8"  # user defaults
    assert lines["account"] == "site-acct"  # site defaults
    assert "module load cuda/12.4" in script and "source /apps/venv/bin/activate" in script
    assert "HPC_CURATOR_GPUS_PER_RANK=1" in script
    assert "apptainer exec --bind" in script and "/images/curate.sif" in script

    # without the env var the user's profile beats the site's profile of the same name
    script = dry_run(tmp_path, files, "--profile", "gpu")
    assert sbatch_lines(script)["partition"] == "gpu"
    # with no --profile, the user file's default_profile applies
    assert sbatch_lines(dry_run(tmp_path, files))["partition"] == "cpu"
    # HPC_CURATE_PROFILE chooses too
    env = {**files, "HPC_CURATE_PROFILE": "gpu"}
    assert sbatch_lines(dry_run(tmp_path, env))["partition"] == "gpu"


def test_repeatable_options_from_environment(tmp_path: Path, files: dict[str, str]) -> None:
    env = {
        **files,
        "HPC_CURATE_SETUP": "module load a\nsource /x y/activate\n",
        "HPC_CURATE_SRUN_ARG": "--cpu-bind=cores --overlap",
        "HPC_CURATE_EXCLUSIVE": "1",
    }
    script = dry_run(tmp_path, env)
    assert "\nmodule load a\nsource /x y/activate\n" in script  # one line each, not per word
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert "--cpu-bind=cores --overlap" in srun
    assert "#SBATCH --exclusive" in script


def test_config_show_names_every_source(tmp_path: Path, files: dict[str, str]) -> None:
    env = {**files, "HPC_CURATE_NODES": "3"}
    proc = cli("config", "show", "submit", "--profile", "gpu", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    rows = {r["option"]: r for r in doc["options"]}
    assert doc["profile"] == "gpu"
    assert rows["--nodes"] == {
        "option": "--nodes",
        "value": "3",
        "source": "environment HPC_CURATE_NODES",
    }
    assert rows["--partition"]["value"] == "gpu"
    assert rows["--partition"]["source"] == f"user profile gpu ({files['HPC_CURATE_CONFIG']})"
    assert rows["--account"]["source"] == f"site defaults ({files['HPC_CURATE_SITE_CONFIG']})"
    assert rows["--module"]["value"] == ["cuda/12.4"]
    assert rows["--qos"]["value"] == "normal"
    assert rows["--mem"]["source"] == "built-in default"
    text = cli("config", "show", "submit", env=env).stdout
    assert "profile: cpu" in text and "environment HPC_CURATE_NODES" in text


def test_run_takes_its_defaults_from_the_config(tmp_path: Path) -> None:
    user = tmp_path / "user.toml"
    user.write_text('[defaults]\nbackend = "process_pool"\nn-jobs = 2\ncommit-every = 3\n')
    run_dir = tmp_path / "run"
    env = {"HPC_CURATE_CONFIG": str(user)}
    proc = cli("run", EXAMPLE, "-p", "n=12", "--run-dir", str(run_dir), "-q", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = read_manifest(run_dir)
    assert doc["status"] == "complete"
    assert doc["counts"]["ok"] == 12
    assert doc["attempts"][0]["launcher"] == "process_pool"
    assert doc["world_size"] == 2
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["settings"]["commit_every"] == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[defaults]\nnodes = ", "is not valid TOML"),
        ("[defaults]\nnodez = 4\n", "'nodez' is not an option of any hpc-curate command"),
        ("[defaults]\nnodes = 'four'\n", "nodes = 'four'"),
        ("partition = 'x'\n", "unknown top-level key 'partition'"),
        ("[defaults]\ntime = 'soon'\n", "--time 'soon' is not a Slurm time limit"),
    ],
)
def test_bad_config_is_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    user = tmp_path / "user.toml"
    user.write_text(text)
    proc = cli(
        "submit", EXAMPLE, "--run-dir", str(tmp_path / "r"), "--dry-run",
        env={"HPC_CURATE_CONFIG": str(user)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert message in lines[0]
    if "time" not in text:
        assert str(user) in lines[0]
    assert not (tmp_path / "r").exists()


def test_unknown_profile_lists_the_defined_ones(tmp_path: Path, files: dict[str, str]) -> None:
    proc = cli(
        "submit", EXAMPLE, "--run-dir", str(tmp_path / "r"), "--dry-run", "--profile", "tpu",
        env=files,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "no profile 'tpu'" in proc.stderr and "profiles defined: cpu, gpu" in proc.stderr


def test_resume_ignores_defaults_but_takes_a_named_profile(
    tmp_path: Path, files: dict[str, str]
) -> None:
    run_dir = tmp_path / "run"
    cli("run", EXAMPLE, "-p", "n=4", "--run-dir", str(run_dir), "-q", check=True)
    script = cli("resume", str(run_dir), "--dry-run", env=files).stdout
    lines = sbatch_lines(script)
    assert "partition" not in lines and "account" not in lines and "time" not in lines
    script = cli("resume", str(run_dir), "--dry-run", "--profile", "gpu", env=files).stdout
    assert sbatch_lines(script)["partition"] == "gpu"


def test_rank_program_ignores_option_variables(tmp_path: Path) -> None:
    # the ranks inherit the user's shell: HPC_CURATE_<OPTION> must reach them only through
    # the launcher's explicit arguments
    run_dir = tmp_path / "run"
    env = {"HPC_CURATE_INDICES": "0:2", "HPC_CURATE_COMMIT_EVERY": "1"}
    proc = cli("rank", str(run_dir), "--spec", f"{EXAMPLE}", "-p", "n=5", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = read_manifest(run_dir)
    assert doc["counts"]["ok"] == 5 and doc["counts"]["total"] == 5
