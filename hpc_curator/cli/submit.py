"""Commands that put a run on Slurm: submit, sbatch-script, resume."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any

import click

from hpc_curator.cli.options import (
    make_settings,
    settings_options,
    slurm_changes,
    slurm_options,
    spec_options,
)
from hpc_curator.config import profile_option


def _create_run(
    run_dir: str, spec: str, params: tuple[str, ...], indices: str | None, settings: Any
) -> Any:
    """Validate the spec and create (or re-open) the run dir at submission time."""
    from dataclasses import asdict

    from hpc_curator.model import fingerprint, partition
    from hpc_curator.model import spec as specmod
    from hpc_curator.store import rundir

    pipeline, frozen = specmod.load(spec, specmod.parse_params(params))
    rd = rundir.RunDir(run_dir)
    index_list = None
    if indices is not None or not rd.exists():
        index_list = partition.parse_indices(indices, len(pipeline.source))
    code = fingerprint.fingerprint(pipeline, frozen)
    info = rundir.create_or_open(rd, frozen, index_list, asdict(settings), code=code)
    # refuse changed code here, on the login node, rather than in the job
    fingerprint.check_run(rd, info, code, settings.accept_code_change)
    return rd, frozen


def launch_slurm(rd: Any, opts: Any, settings: Any, cluster: str, wait: bool) -> None:
    """Submit (or run locally / in-process) and report; exits with the run's code if waiting."""
    from hpc_curator.slurm import submit as sub
    from hpc_curator.store import attempt_records

    if cluster == "debug":
        from hpc_curator.cli.run import print_result
        from hpc_curator.engine.attempt import run_here

        result = run_here(str(rd.path), settings, launcher="debug")

        print_result(result)
        sys.exit(result.exit_code)
    if cluster == "local":
        _local(rd, opts, settings, wait)
        return
    if opts.array:
        _array(rd, opts, settings, wait)
        return
    for warning in sub.preflight(opts, rd):
        click.secho(f"Warning: {warning}", fg="yellow", err=True)
    attempt_records.check_not_busy(rd)
    record = sub.submit(opts, rd, settings)
    job = record["job_id"]
    click.echo(
        f"Submitted job {job}: {opts.nodes} node(s) x {opts.ntasks_per_node} rank(s), "
        f"run dir {rd.path}"
    )
    click.echo(f"  watch:  hpc-curate status {rd.path} --watch")
    click.echo(f"  logs:   hpc-curate logs {rd.path} --rank 0")
    click.echo(f"  cancel: hpc-curate cancel {rd.path}")
    if wait:
        sys.exit(wait_for(rd, [job]))


def _array(rd: Any, opts: Any, settings: Any, wait: bool) -> None:
    """``--array N``: begin the attempt here, submit the array and its finisher job."""
    from hpc_curator.engine.tasks import begin_elastic
    from hpc_curator.slurm import array
    from hpc_curator.slurm import submit as sub
    from hpc_curator.store import attempt_records, rundir

    for warning in sub.preflight(opts, rd):
        click.secho(f"Warning: {warning}", fg="yellow", err=True)
    attempt_records.check_not_busy(rd)
    plan, chunks = begin_elastic(str(rd.path), settings, opts.array * (opts.workers or 1), "array")
    try:
        jobs = array.submit_array(opts, rd, plan.attempt, opts.array, opts.array_parallel)
    except BaseException:
        attempt_records.end_attempt(rd, plan.attempt, reason="not submitted")
        raise
    # the attempt lives as long as the array does, not as long as this process
    attempt_records.update_attempt(rd, plan.attempt, job_id=jobs["job_id"], pid=None)
    record = {
        "job_id": jobs["job_id"],
        "finisher_job_id": jobs["finisher_job_id"],
        "submitted": rundir.now_iso(),
        "submitted_ts": time.time(),
        "options": opts.to_json(),
        "settings": settings.__dict__,
        "script": jobs["script"],
        "attempt": plan.attempt,
        "argv": sys.argv,
    }
    sub.record_submission(rd, record)
    if jobs["note"]:
        click.secho(f"Note: {jobs['note']}", fg="yellow", err=True)
    click.echo(
        f"Submitted job array {jobs['job_id']}: {jobs['tasks']} task(s) claiming {chunks} "
        f"chunk(s), finisher job {jobs['finisher_job_id']}, run dir {rd.path}"
    )
    click.echo(f"  watch:  hpc-curate status {rd.path} --watch")
    click.echo(f"  cancel: hpc-curate cancel {rd.path}")
    if wait:
        sys.exit(wait_for(rd, [jobs["job_id"], jobs["finisher_job_id"]]))


def _local(rd: Any, opts: Any, settings: Any, wait: bool) -> None:
    """``--cluster local``: submitit's LocalExecutor starts one process running mpiexec."""
    import submitit

    from hpc_curator.slurm.local import LocalMPIJob

    folder = rd.local_job_dir
    ex = submitit.LocalExecutor(folder=folder)
    ex.update_parameters(timeout_min=opts.timeout_min or 60 * 24)
    job = ex.submit(LocalMPIJob(str(rd.path), settings, opts.world_size))
    click.echo(f"Started local job {job.job_id} ({opts.world_size} MPI ranks), run dir {rd.path}")
    if wait:
        code = job.result()
        from hpc_curator.backends.mpi import result_from_run_dir
        from hpc_curator.cli.run import print_result

        result = result_from_run_dir(rd, code, f"local job exited with code {code}")
        print_result(result)
        sys.exit(result.exit_code)


def wait_for(rd: Any, jobs: list[str], poll: float = 2.0) -> int:
    """Follow progress until the jobs leave the queue; return the run's exit code."""
    from hpc_curator.backends.mpi import result_from_run_dir
    from hpc_curator.cli.run import print_result
    from hpc_curator.slurm.status import ACTIVE, describe_jobs, job_state
    from hpc_curator.ui.progress import ProgressModel

    model = ProgressModel(rd.path)
    last_line = 0.0
    while True:
        model.poll()
        totals = model.snapshot().totals
        states = [job_state(j) or "unknown" for j in jobs]
        if time.monotonic() - last_line > 10:
            click.echo(
                f"{time.strftime('%H:%M:%S')} jobs {','.join(states)}: {totals.done} done, "
                f"{totals.failed} failed",
                err=True,
            )
            last_line = time.monotonic()
        if all(s not in ACTIVE and s != "unknown" for s in states):
            break
        time.sleep(poll)
    what, hint = job_outcome(rd, describe_jobs(jobs))
    result = result_from_run_dir(rd, 0, what, hint)
    print_result(result)
    return result.exit_code  # 5 when the job failed by itself (values.exit_code_for)


def job_outcome(rd: Any, rows: list[dict[str, Any]]) -> tuple[str, str]:
    """How the jobs ended, as sacct says, and what to do about a run they left unfinished.

    Re-running is suggested only when it can help (the job was cancelled, pre-empted, ran out
    of time or lost a node); a job that failed by itself (an MPI_Init abort, a wrong plugin, out
    of memory) gets the first error lines of its tasks' logs instead.
    """
    from hpc_curator.backends.mpi import RESUME_HINT
    from hpc_curator.slurm.status import RESUMABLE, first_error_lines

    parts = []
    for row in rows:
        code = row.get("exit_code")
        parts.append(
            f"job {row['job_id']} ended {row.get('state', 'unknown')}"
            + (f" (exit code {code})" if code else "")
        )
    what = ", ".join(parts) or "the job ended"
    failed = [r for r in rows if r.get("state") not in RESUMABLE]
    if not failed:
        return what, RESUME_HINT
    job = str(failed[-1]["job_id"])
    errors = first_error_lines(rd.job_task_logs(job))
    said = f": {' | '.join(errors)}" if errors else ""
    return what, (
        f"the job itself failed{said}; re-running will not help until that is fixed "
        f"(hpc-curate logs {rd.path} --job {job} --rank 0)"
    )


@click.command("submit")
@click.argument("spec")
@profile_option()
@click.option("--run-dir", required=True, help="Run directory on a shared filesystem.")
@spec_options
@slurm_options
@settings_options
@click.option(
    "--cluster",
    type=click.Choice(["slurm", "local", "debug"]),
    default="slurm",
    show_default=True,
    help="local: this machine via mpiexec; debug: in-process.",
)
@click.option("--wait", is_flag=True, help="Follow progress and exit with the run's code.")
@click.option("--dry-run", is_flag=True, help="Print the sbatch script; submit nothing.")
def submit_cmd(
    spec: str,
    run_dir: str,
    params: tuple[str, ...],
    indices: str | None,
    cluster: str,
    wait: bool,
    dry_run: bool,
    **kw: Any,
) -> None:
    """Submit the pipeline SPEC to Slurm as one MPI job (nodes x ntasks-per-node ranks).

    The job requeues itself before its time limit (SIGUSR2, --signal-delay) and resumes from
    the journals; hpc-curate resume resubmits a cancelled or failed run.
    """
    from hpc_curator.errors import CuratorError
    from hpc_curator.model import spec as specmod
    from hpc_curator.slurm import submit as sub
    from hpc_curator.slurm.options import SlurmOptions, check_value
    from hpc_curator.store import attempt_records, rundir

    check_value("--run-dir", run_dir)  # it reaches #SBATCH --output lines
    opts = SlurmOptions(**slurm_changes(kw))
    settings = make_settings(kw)
    if dry_run:
        specmod.load(spec, specmod.parse_params(params))
        click.echo(_dry_run(opts, rundir.RunDir(run_dir)), nl=False)
        return
    if cluster == "slurm":
        sub.preflight(opts, rundir.RunDir(run_dir))
    created = not rundir.RunDir(run_dir).exists()
    rd, _ = _create_run(run_dir, spec, params, indices, settings)
    try:
        launch_slurm(rd, opts, settings, cluster, wait)
    except CuratorError:
        if created and not attempt_records.list_attempts(rd) and not sub.submissions(rd):
            shutil.rmtree(rd.path, ignore_errors=True)  # leave no partial state behind
        raise


def _dry_run(opts: Any, rd: Any) -> str:
    from hpc_curator.slurm import submit as sub
    from hpc_curator.store import attempt_records

    if not opts.array:
        return str(sub.dry_run(opts, rd))
    from hpc_curator.slurm.array import render_both

    attempt = len(attempt_records.list_attempts(rd)) + 1 if rd.exists() else 1
    return render_both(opts, rd, attempt, opts.array, opts.array_parallel)


@click.command("sbatch-script")
@click.argument("spec")
@profile_option()
@click.option("--run-dir", required=True, help="Run directory on a shared filesystem.")
@spec_options
@slurm_options
@settings_options
def sbatch_script_cmd(
    spec: str, run_dir: str, params: tuple[str, ...], indices: str | None, **kw: Any
) -> None:
    """Print a standalone sbatch script (no submitit) that runs SPEC: sbatch it yourself.

    \b
      hpc-curate sbatch-script SPEC --run-dir D --nodes 4 > job.sbatch && sbatch job.sbatch
    Rank 0 creates the run dir when the job starts; re-submitting the script resumes.
    """
    from hpc_curator.model import spec as specmod
    from hpc_curator.slurm import submit as sub
    from hpc_curator.slurm.options import SlurmOptions, check_value
    from hpc_curator.store import attempt_records, rundir

    check_value("--run-dir", run_dir)  # it reaches #SBATCH --output lines
    opts = SlurmOptions(**slurm_changes(kw))
    settings = make_settings(kw)
    rd = rundir.RunDir(run_dir)
    if opts.array:  # the tasks claim from a board published now, on this node
        from hpc_curator.engine.tasks import begin_elastic
        from hpc_curator.slurm.array import render_array

        _create_run(run_dir, spec, params, indices, settings)
        plan, _ = begin_elastic(str(rd.path), settings, opts.array * (opts.workers or 1), "array")
        attempt_records.update_attempt(rd, plan.attempt, pid=None)
        script = render_array(opts, rd, plan.attempt, opts.array, opts.array_parallel)
        rd.slurm_logs_dir.mkdir(parents=True, exist_ok=True)
        click.echo(script, nl=False)
        return
    _, frozen = specmod.load(spec, specmod.parse_params(params))
    script = sub.sbatch_script(opts, rd, settings, frozen, indices)  # validated: bash -n
    # sbatch opens the --output files before the job starts: their directory must exist
    rd.logs_dir.mkdir(parents=True, exist_ok=True)
    click.echo(script, nl=False)


@click.command("resume")
@click.argument("run_dir")
@profile_option(with_defaults=False)
@slurm_options
@click.option(
    "--cluster", type=click.Choice(["slurm", "local", "debug"]), default="slurm", show_default=True
)
@click.option("--wait", is_flag=True, help="Follow progress and exit with the run's code.")
@click.option("--dry-run", is_flag=True, help="Print the sbatch script; submit nothing.")
def resume_cmd(run_dir: str, cluster: str, wait: bool, dry_run: bool, **kw: Any) -> None:
    """Resubmit RUN_DIR with its recorded Slurm options (override any, e.g. --nodes 2).

    Only indices not yet committed run; the journals of every earlier attempt are kept.
    """
    relaunch(run_dir, kw, cluster, wait, dry_run, retry=False)


def relaunch(
    run_dir: str, kw: dict[str, Any], cluster: str, wait: bool, dry_run: bool, retry: bool
) -> None:
    """Shared by resume and retry: recorded options + overrides, then launch."""
    from dataclasses import replace

    from hpc_curator.slurm import submit as sub
    from hpc_curator.slurm.options import SlurmOptions
    from hpc_curator.store import rundir

    rd = rundir.RunDir(run_dir)
    info = rundir.load(rd)
    changes = slurm_changes(kw)
    if sub.submissions(rd):
        opts, settings = sub.last_options(rd)
        opts = opts.override(**changes)
    else:
        from hpc_curator.engine.values import RunSettings

        opts = SlurmOptions(**changes)
        recorded = info.meta.get("settings", {})
        settings = RunSettings(**{k: v for k, v in recorded.items() if k != "retry_failed"})
    settings = replace(settings, retry_failed=retry)
    if dry_run:
        click.echo(_dry_run(opts, rd), nl=False)
        return
    launch_slurm(rd, opts, settings, cluster, wait)


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    for cmd in (submit_cmd, sbatch_script_cmd, resume_cmd):
        group.add_command(cmd)
