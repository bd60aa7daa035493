"""Elastic runs on Slurm: one job array whose tasks claim chunks (hpc_curator.engine.tasks).

``submit --array N [--array-parallel P]`` begins the attempt on the login node, publishes its
claim board, then submits the array (``#SBATCH --array=0-<N-1>[%P]``, one task = one
``hpc-curate task`` process, no ``srun``, no MPI) and a small finisher job with
``--dependency=afterany`` on it: should every task have left before the run finished (one was
cancelled holding a claim nobody was left to take over), the finisher writes the manifest
honestly (``incomplete``, the pending indices listed) and ``hpc-curate resume D`` submits a
new array for what is left. More tasks than the cluster's ``MaxArraySize`` are capped to it:
tasks claim work until none is left, so fewer tasks still finish the run.
"""

from __future__ import annotations

import shlex
import shutil
import string
import subprocess
from importlib import resources
from typing import Any

from hpc_curator.errors import LaunchError, UsageError
from hpc_curator.runtime.world import THREAD_VARS
from hpc_curator.slurm.options import SlurmOptions, check_value
from hpc_curator.slurm.requeue import requeue_exports, srun_block
from hpc_curator.slurm.script import check_syntax, sbatch_flag, setup_lines
from hpc_curator.store import rundir


def max_array_size() -> int | None:
    """The cluster's ``MaxArraySize`` (``scontrol show config``), or ``None`` if unknown."""
    if shutil.which("scontrol") is None:
        return None
    try:
        out = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    return None


def task_command(opts: SlurmOptions, rd: rundir.RunDir, attempt: int) -> list[str]:
    """What every array task runs (behind the container or launch prefix, if any)."""
    cmd = [*opts.python_argv, "-m", "hpc_curator", "task", "--run-dir", str(rd.path),
           "--attempt", str(attempt), "--workers", str(opts.workers or 1)]  # fmt: skip
    box = opts.container_spec
    return box.wrap(cmd, rd.path, None) if box.active else cmd


def render_array(
    opts: SlurmOptions, rd: rundir.RunDir, attempt: int, tasks: int, parallel: int | None
) -> str:
    """The array job script (validated with ``bash -n``)."""
    if tasks < 1 or (parallel is not None and parallel < 1):
        raise UsageError("--array and --array-parallel must be >= 1")
    pattern = str(rd.slurm_logs_dir / "%A_%a")
    check_value("--run-dir", pattern)
    spec = f"0-{tasks - 1}" + (f"%{parallel}" if parallel else "")
    workers = opts.workers or 1
    pairs: list[tuple[str, Any]] = [("job-name", opts.job_name), ("array", spec)]
    if workers > 1:
        pairs.append(("ntasks", workers))
    optional = [
        ("cpus-per-task", opts.cpus_per_task), ("time", opts.time),
        ("partition", opts.partition), ("account", opts.account), ("qos", opts.qos),
        ("mem", opts.mem), ("gpus-per-task", opts.gpus_per_rank),
        ("constraint", opts.constraint), ("dependency", opts.dependency),
        ("begin", opts.begin),
    ]  # fmt: skip
    pairs += [(k, v) for k, v in optional if v is not None]
    pairs += [
        ("signal", f"USR2@{opts.signal_delay}"),
        ("requeue" if opts.requeue else "no-requeue", None),
        ("open-mode", "append"),
        ("output", pattern + ".out"),
        ("error", pattern + ".err"),
        *opts.sbatch_opts,
    ]
    exports = dict(opts.container_spec.env())
    if opts.gpus_per_rank:
        from hpc_curator.runtime.gpus import GPUS_PER_RANK_ENV

        exports[GPUS_PER_RANK_ENV] = str(opts.gpus_per_rank)
    # one srun step per task: Slurm's --signal reaches the tasks of steps, not the batch shell
    step = ["srun", f"--ntasks={workers}", "--unbuffered", "--mpi=none", *opts.srun_args]
    line = " ".join(shlex.quote(a) for a in [*step, *task_command(opts, rd, attempt)])
    if opts.requeue and opts.max_requeues > 0:
        exports.update(requeue_exports(rd.slurm_dir, opts.max_requeues))
        line = srun_block(line)
    return _render("array.sbatch", opts, pairs, exports, line)


def render_finisher(opts: SlurmOptions, rd: rundir.RunDir, attempt: int) -> str:
    """The finisher job's script: the same setup, modules and container as the array's
    tasks; submitted with ``--dependency=afterany:<array job>`` on sbatch's command line."""
    pattern = str(rd.slurm_logs_dir / "%j_finish")
    check_value("--run-dir", pattern)
    pairs: list[tuple[str, Any]] = [("job-name", f"{opts.job_name}-finish"), ("ntasks", 1)]
    optional = [
        ("time", 10), ("partition", opts.partition), ("account", opts.account),
        ("qos", opts.qos), ("cpus-per-task", opts.cpus_per_task), ("mem", opts.mem),
    ]  # fmt: skip
    pairs += [(k, v) for k, v in optional if v is not None]
    pairs += [("output", pattern + ".out"), ("error", pattern + ".err")]
    cmd = [*opts.python_argv, "-m", "hpc_curator", "task", "--run-dir", str(rd.path),
           "--attempt", str(attempt), "--finish"]  # fmt: skip
    box = opts.container_spec
    if box.active:
        cmd = box.wrap(cmd, rd.path, None)
    line = " ".join(shlex.quote(a) for a in cmd)
    return _render("finish.sbatch", opts, pairs, dict(box.env()), line)


def _render(
    template: str,
    opts: SlurmOptions,
    pairs: list[tuple[str, Any]],
    exports: dict[str, str],
    run_command: str,
) -> str:
    """One job script from a packaged template (validated with ``bash -n``)."""
    threads = opts.cpus_per_task or 1
    env_lines = [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
    env_lines += [f"export {v}=${{{v}:-{threads}}}" for v in THREAD_VARS]
    text = resources.files("hpc_curator.slurm").joinpath("templates", template).read_text()
    text = string.Template(text).substitute(
        sbatch_lines="\n".join(sbatch_flag(k, v) for k, v in pairs),
        setup_lines="\n".join(setup_lines(opts)) or ":",
        env_lines="\n".join(env_lines),
        run_command=run_command,
    )
    check_syntax(text)
    return text


def render_both(
    opts: SlurmOptions, rd: rundir.RunDir, attempt: int, tasks: int, parallel: int | None
) -> str:
    """What ``--dry-run`` shows of an array submission: the array script, then the
    finisher's."""
    return (
        render_array(opts, rd, attempt, tasks, parallel)
        + "\n# ---- the finisher job (sbatch --dependency=afterany:<array job id>) ----\n"
        + render_finisher(opts, rd, attempt)
    )


def submit_array(
    opts: SlurmOptions, rd: rundir.RunDir, attempt: int, tasks: int, parallel: int | None
) -> dict[str, Any]:
    """Submit the array and its finisher; return the submission record's job ids."""
    limit = max_array_size()
    note = None
    if limit is not None and tasks > limit:
        note = f"--array {tasks} is more than this cluster's MaxArraySize ({limit}): {limit} tasks"
        tasks = limit
    script = render_array(opts, rd, attempt, tasks, parallel)
    finish = render_finisher(opts, rd, attempt)
    rd.slurm_logs_dir.mkdir(parents=True, exist_ok=True)
    path = rd.array_script(attempt)
    path.write_text(script)
    fin_path = rd.array_script(attempt, finisher=True)
    fin_path.write_text(finish)
    job = _sbatch([str(path)])
    fin = _sbatch([f"--dependency=afterany:{job}", str(fin_path)])
    return {"job_id": job, "finisher_job_id": fin, "tasks": tasks, "note": note,
            "script": str(path), "finisher_script": str(fin_path)}  # fmt: skip


def _sbatch(args: list[str]) -> str:
    from hpc_curator.slurm.submit import scrubbed_env

    with scrubbed_env():
        proc = subprocess.run(
            ["sbatch", "--parsable", *args], capture_output=True, text=True, timeout=60
        )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise LaunchError(f"sbatch refused the job: {last}")
    return proc.stdout.strip().split(";")[0]
