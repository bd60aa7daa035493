"""submitit glue: submit the rank program as an MPI job, requeue it on time limits.

``submitit`` pickles :class:`RankJob`, submits the script rendered by our own template (so
``--dry-run`` shows exactly what is submitted), tracks job ids and per-task logs. Each ``srun``
task unpickles the same :class:`RankJob` and runs the rank program; MPI comes from
``srun --mpi=<plugin>``. Ranks shard by their *global* MPI rank.

Time limits and pre-emption: ``#SBATCH --signal=USR2@<delay>`` delivers SIGUSR2 to every task
before the limit. :class:`RankJob` installs the rank program's handlers (replacing submitit's,
which would exit rank 0 mid-index): every rank stops taking indices, commits, and the world
finishes collectively (merged outputs and manifest describe the partial state). Rank 0 then
asks for a requeue while restarts remain, and the job script requeues once ``srun`` returned
(:mod:`hpc_curator.slurm.requeue`); the next run resumes from the journals. SIGTERM
(pre-emption, ``scontrol requeue``, ``scancel``) also commits and exits; Slurm itself decides
whether the job comes back.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_curator.engine.values import RunSettings
from hpc_curator.errors import LaunchError, UsageError
from hpc_curator.slurm.options import SlurmOptions
from hpc_curator.slurm.script import render
from hpc_curator.store import rundir
from hpc_curator.store.atomic import atomic_write

SUBMITIT_ENV = {"SUBMITIT_EXECUTOR": "slurm"}


def resolve_mpi(opts: SlurmOptions, *, check_cluster: bool) -> SlurmOptions:
    """``opts`` with ``--mpi auto`` replaced by the plugin the local MPI library needs.

    An explicit plugin known not to work with that library is refused; with
    ``check_cluster``, the plugin must be one ``srun --mpi=list`` offers.
    """
    from dataclasses import replace

    from hpc_curator.slurm import mpi_plugin

    vendor = mpi_plugin.local_vendor()
    # the job runs this very environment unless its python or setup lines change it: only
    # then is the local library the ranks' library, and an explicit mismatch surely wrong
    same_env = opts.python is None and not opts.setup and not opts.modules and not opts.container
    plugins = mpi_plugin.offered() if check_cluster else None
    return replace(opts, mpi=mpi_plugin.choose(opts.mpi, vendor, plugins, strict=same_env))


def job_env(opts: SlurmOptions, base: dict[str, str] | None = None) -> dict[str, str]:
    """Variables the job script exports for every task (GPU binding, submitit's marker)."""
    from hpc_curator.runtime.gpus import GPUS_PER_RANK_ENV

    env = dict(base or {})
    if opts.gpus_per_rank:
        env[GPUS_PER_RANK_ENV] = str(opts.gpus_per_rank)
    return env


def log_pattern(rd: rundir.RunDir) -> str:
    """Per-task log path pattern (submitit's naming: ``<job>_<task>_log``)."""
    return rd.submitit_log_pattern()


@dataclass
class RankJob:
    """The callable submitit runs on every task: the rank program for one run directory.

    Parameters
    ----------
    run_dir
        The run directory (created at submission).
    settings
        Rank-loop settings.
    """

    run_dir: str
    settings: RunSettings

    def __call__(self) -> dict[str, Any]:
        from hpc_curator.engine.attempt import rank_main

        world, result, requeued = rank_main(self.run_dir, self.settings, launcher="slurm")
        return {
            "rank": world.rank,
            "exit_code": result.exit_code,
            "status": result.status,
            "requeued": requeued,
            "counts": result.counts,
        }

    def checkpoint(self) -> Any:
        """submitit's checkpoint hook: resubmit the same job (state lives in the run dir)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def preflight(opts: SlurmOptions, rd: rundir.RunDir) -> list[str]:
    """Check the environment before submitting; return warnings (raise on errors)."""
    if shutil.which("sbatch") is None:
        raise LaunchError(
            "sbatch is not on PATH (no Slurm here)",
            "use --cluster local to try it on this machine, or hpc-curate run --ranks N",
        )
    opts.container_spec.check_image(rd.path, os.getcwd())
    warnings = []
    if _node_local(rd.path):
        warnings.append(
            f"run dir {rd.path} looks node-local; compute nodes must see it (use a shared "
            f"filesystem such as Lustre/GPFS/NFS)"
        )
    return warnings


def _node_local(path: Path) -> bool:
    text = str(path)
    return text.startswith(("/tmp/", "/var/tmp/", "/dev/shm/")) or "/scratch/local" in text


class CuratorSlurmExecutor:
    """A submitit ``SlurmExecutor`` whose script is our rendered template."""

    def __new__(cls, folder: Path, opts: SlurmOptions, rd: rundir.RunDir) -> Any:
        import submitit

        class _Executor(submitit.SlurmExecutor):  # type: ignore[misc]
            def _make_submission_file_text(self, command: str, uid: str) -> str:
                return render(
                    opts,
                    shlex.split(command),
                    log_pattern=log_pattern(rd),
                    env=job_env(opts, SUBMITIT_ENV),
                    requeue_dir=rd.slurm_dir,
                    run_dir=rd.path,
                )

        ex = _Executor(folder=folder, max_num_timeout=opts.max_requeues)
        ex.update_parameters(
            nodes=opts.nodes, ntasks_per_node=opts.ntasks_per_node, time=opts.timeout_min or 60
        )
        ex.python = shlex.join(opts.python_argv)  # split again by the renderer
        return ex


def submitit_payload(rd: rundir.RunDir, python: Sequence[str] | None = None) -> list[str]:
    """The command submitit's script runs on every task."""
    return [
        *(python or [sys.executable]),
        "-u",
        "-m",
        "submitit.core._submit",
        str(rd.slurm_logs_dir),
    ]


def dry_run(opts: SlurmOptions, rd: rundir.RunDir) -> str:
    """The exact script ``submit`` would hand to sbatch (nothing is created or submitted)."""
    opts = resolve_mpi(opts, check_cluster=False)
    return render(
        opts,
        submitit_payload(rd, opts.python_argv),
        log_pattern=log_pattern(rd),
        env=job_env(opts, SUBMITIT_ENV),
        requeue_dir=rd.slurm_dir,
        run_dir=rd.path,
    )


def sbatch_script(
    opts: SlurmOptions,
    rd: rundir.RunDir,
    settings: RunSettings,
    spec: dict[str, Any] | None,
    indices: str | None = None,
) -> str:
    """A standalone sbatch script (no submitit) running the rank program."""
    opts = resolve_mpi(opts, check_cluster=False)
    opts.container_spec.check_image(rd.path, os.getcwd())
    from hpc_curator.backends.base import Launch
    from hpc_curator.backends.mpi import rank_command

    launch = Launch(run_dir=str(rd.path), settings=settings, spec=spec, indices=indices)
    return render(
        opts,
        rank_command(launch, opts.python_argv),
        log_pattern=rd.sbatch_log_pattern(),
        env=job_env(opts) or None,
        requeue_dir=rd.slurm_dir,
        run_dir=rd.path,
    )


def submit(opts: SlurmOptions, rd: rundir.RunDir, settings: RunSettings) -> dict[str, Any]:
    """Submit one job for the run in ``rd`` and record it; return the submission record."""
    opts = resolve_mpi(opts, check_cluster=True)

    folder = rd.slurm_logs_dir
    folder.mkdir(parents=True, exist_ok=True)
    executor = CuratorSlurmExecutor(folder, opts, rd)
    job_fn = RankJob(str(rd.path), settings)
    try:
        # submitit prints sbatch's stderr itself before raising; we say it once, below
        with scrubbed_env(), contextlib.redirect_stderr(io.StringIO()):
            job = executor.submit(job_fn)
    except Exception as exc:  # submitit raises bare errors with sbatch's output
        first = str(exc).strip().splitlines()
        raise LaunchError(f"sbatch refused the job: {first[-1] if first else exc}") from None
    record = {
        "job_id": str(job.job_id),
        "submitted": rundir.now_iso(),
        "submitted_ts": time.time(),
        "options": opts.to_json(),
        "settings": settings.__dict__,
        "script": str(rd.submission_script(str(job.job_id))),
        "cwd": os.getcwd(),
        "argv": sys.argv,
    }
    record_submission(rd, record)
    return record


#: Variables an enclosing allocation sets that would leak into a new job (datatrove #248).
_INHERITED = ("SLURM_", "SLURMD_", "SRUN_", "SUBMITIT_")
_KEEP = ("SLURM_CONF",)


@contextlib.contextmanager
def scrubbed_env() -> Iterator[None]:
    """Hide inherited ``SLURM_*``/``SRUN_*`` variables while submitting from an allocation.

    ``SLURM_CONF`` (which cluster to talk to) and the user's ``SBATCH_*`` defaults stay.
    """
    saved = {
        k: os.environ.pop(k)
        for k in list(os.environ)
        if k.startswith(_INHERITED) and k not in _KEEP
    }
    try:
        yield
    finally:
        os.environ.update(saved)


def record_submission(rd: rundir.RunDir, record: dict[str, Any]) -> Path:
    """Write ``D/slurm/submissions/<job>.json`` atomically."""
    path = rd.submission_path(str(record["job_id"]))
    atomic_write(path, json.dumps(record, indent=2, default=repr))
    return path


def submissions(rd: rundir.RunDir) -> list[dict[str, Any]]:
    """Every recorded submission, oldest first."""
    folder = rd.submissions_dir
    recs = []
    for p in folder.glob("*.json") if folder.is_dir() else []:
        try:
            recs.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(recs, key=lambda r: r.get("submitted_ts", 0))


def last_options(rd: rundir.RunDir) -> tuple[SlurmOptions, RunSettings]:
    """Options and settings of the latest submission (for ``resume`` and ``retry``)."""
    recs = submissions(rd)
    if not recs:
        raise UsageError(
            f"{rd.path} has no recorded Slurm submission",
            "use hpc-curate submit SPEC --run-dir D, or hpc-curate run to resume locally",
        )
    rec = recs[-1]
    return SlurmOptions.from_json(rec["options"]), RunSettings(**rec["settings"])
