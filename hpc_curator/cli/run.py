"""Commands that run things or look at one run: run, rank, backends, manifest."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from hpc_curator.cli.options import (
    container_options,
    make_container,
    make_settings,
    settings_options,
    spec_options,
)
from hpc_curator.config import profile_option


def print_result(result: Any, quiet: bool = False) -> None:
    """Print the outcome of an attempt (one summary line, then the first failures)."""
    doc = result.manifest or {}
    color = {"complete": "green", "failed": "red"}.get(result.status, "yellow")
    click.secho(f"{result.status}: {result.message}", fg=color, err=True)
    for f in doc.get("failures", [])[:5]:
        click.echo(
            f"  index {f['index']} (rank {f['rank']}, {f['node']}): {f['type']}: {f['message']}",
            err=True,
        )
    if not quiet:
        click.echo(f"run dir: {result.run_dir}", err=True)
        if result.exit_code == 3 and result.resumable:
            click.echo("resume: re-run the same command (only pending indices run)", err=True)
        elif result.exit_code == 1:
            click.echo(f"details: hpc-curate manifest {result.run_dir}", err=True)


@click.command("run")
@click.argument("spec")
@profile_option()
@click.option("--run-dir", default=None, help="Run directory (default: ./hpc-curator-runs/<new>).")
@spec_options
@click.option(
    "--backend",
    default=None,
    help="sequential, process_pool, loky, dask or mpi (default: sequential; process_pool with "
    "-j N; mpi with --ranks).",
)
@click.option(
    "-j",
    "--n-jobs",
    type=int,
    default=1,
    show_default=True,
    help="Workers for process_pool/loky/dask; -1 = the CPUs this process may use.",
)
@click.option(
    "--ranks",
    type=click.IntRange(min=1),
    default=None,
    help="Run N MPI ranks with mpiexec (local-mpi).",
)
@click.option(
    "--elastic",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Run N independent processes that claim chunks (the job-array mode, no MPI).",
)
@click.option("--mpiexec", default=None, help="mpiexec to use (default: the one matching mpi4py).")
@click.option(
    "--mpiexec-arg",
    "mpiexec_args",
    multiple=True,
    metavar="ARG",
    help="Extra argument for mpiexec (repeatable), e.g. --mpiexec-arg=--bind-to=core.",
)
@click.option(
    "--gpus-per-rank",
    type=click.IntRange(min=1),
    default=None,
    help="GPUs each rank (or pool worker) sees, bound by local rank (CUDA_VISIBLE_DEVICES).",
)
@container_options
@click.option(
    "--python",
    default=None,
    help="Python for each rank (default: this one; python3 in a --container).",
)
@settings_options
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def run_cmd(
    spec: str,
    run_dir: str | None,
    params: tuple[str, ...],
    indices: str | None,
    backend: str | None,
    n_jobs: int,
    ranks: int | None,
    elastic: int | None,
    mpiexec: str | None,
    mpiexec_args: tuple[str, ...],
    gpus_per_rank: int | None,
    python: str | None,
    quiet: bool,
    **kw: Any,
) -> None:
    """Run the pipeline SPEC over its indices in run directory --run-dir.

    SPEC is path/to/file.py:FACTORY, package.module:FACTORY or a pipeline .yaml/.json.
    Re-running the same command resumes: only indices not yet committed run again.
    """
    from hpc_curator.backends import get_backend
    from hpc_curator.backends.base import Launch, default_backend, new_run_dir
    from hpc_curator.errors import UsageError
    from hpc_curator.model import spec as specmod

    settings = make_settings(kw)
    box = make_container(kw, gpus=gpus_per_rank is not None)
    if (box.active or python) and ranks is None:
        raise UsageError(
            "--container, --launch-prefix and --python apply to MPI ranks",
            "add --ranks N (or use submit for Slurm)",
        )
    if ranks is not None and backend not in (None, "mpi"):
        raise UsageError(
            f"--ranks starts MPI ranks; it cannot be combined with --backend {backend}"
        )
    if elastic is not None:
        if ranks is not None or backend not in (None, "elastic"):
            raise UsageError("--elastic N starts its own processes; drop --ranks/--backend")
        backend, n_jobs = "elastic", elastic
    name = "mpi" if ranks is not None else default_backend(backend, n_jobs)
    if name == "mpi" and quiet:
        # nothing to show, so nothing to count: rank 0 builds and validates the pipeline
        # (bad input still gives one line and no state); the parent stays light
        pipeline, frozen = None, specmod.make_spec(spec, specmod.parse_params(params))
    else:
        pipeline, frozen = specmod.load(spec, specmod.parse_params(params))
    options: dict[str, Any] = {}
    if name == "mpi":
        options = dict(
            mpiexec=mpiexec, extra_args=mpiexec_args, container=box, python=_python_argv(python)
        )
    instance = get_backend(name, **options)
    if name == "mpi":
        box.check_image(run_dir or os.getcwd(), os.getcwd())
        from hpc_curator.backends.mpi import find_mpiexec

        find_mpiexec(mpiexec)  # fail before anything is created
    target = run_dir or new_run_dir()
    launch = Launch(
        run_dir=target,
        settings=settings,
        spec=frozen,
        indices=indices,
        n_jobs=ranks or n_jobs,
        pipeline=pipeline if name != "mpi" else None,
        gpus_per_rank=gpus_per_rank,
    )
    if quiet:
        result = instance.launch(launch)
    else:
        from hpc_curator.ui.console import ProgressView

        assert pipeline is not None
        todo = _todo(target, len(pipeline), indices)
        with ProgressView(todo, label=name, run_dir=target) as view:
            result = instance.launch(launch, on_commit=view.on_commit)
    print_result(result, quiet)
    if name == "mpi":  # the result is on disk and printed: no teardown (~15 ms, measured);
        from hpc_curator.runtime.world import (
            exit_process,  # a pool's parent joins its workers in it
        )

        exit_process(result.exit_code)
    sys.exit(result.exit_code)


def _python_argv(python: str | None) -> list[str] | None:
    import shlex

    from hpc_curator.errors import UsageError

    if python is None:
        return None
    try:
        argv = shlex.split(python)
    except ValueError as exc:
        raise UsageError(f"--python {python!r} is not a command ({exc})") from None
    if not argv:
        raise UsageError("--python is empty")
    return argv


def _todo(run_dir: str, n: int, indices: str | None) -> int:
    from hpc_curator.model.partition import parse_indices
    from hpc_curator.store import journal, rundir

    rd = rundir.RunDir(run_dir)
    if rd.exists():
        doc_total = rundir.load(rd).n
        return max(0, doc_total - len(journal.scan(rd, with_outputs=False).recorded()))
    try:
        return len(parse_indices(indices, n))
    except Exception:
        return n


@click.command("rank")
@click.argument("run_dir_arg", metavar="[RUN_DIR]", required=False)
@click.option("--run-dir", default=None, help="Run directory (alternative to the argument).")
@click.option("--spec", default=None, help="Pipeline SPEC; needed when the run dir is new.")
@click.option("--spec-json", default=None, hidden=True, help="Frozen spec (set by launchers).")
@click.option(
    "--pipeline-blob", default=None, hidden=True, help="Pickled pipeline (set by launchers)."
)
@spec_options
@settings_options
def rank_cmd(
    run_dir_arg: str | None,
    run_dir: str | None,
    spec: str | None,
    spec_json: str | None,
    pipeline_blob: str | None,
    params: tuple[str, ...],
    indices: str | None,
    **kw: Any,
) -> None:
    """The rank program: run this rank's share of the run in RUN_DIR.

    Start it N times with mpiexec -n N or srun --mpi=pmi2; alone it is a world of one. Rank 0
    creates the run dir (from --spec) if it does not exist yet; the other ranks wait for it.
    """
    from hpc_curator.engine.rankprog import run_rank
    from hpc_curator.errors import UsageError
    from hpc_curator.model import spec as specmod

    target = run_dir or run_dir_arg
    if not target:
        raise UsageError("rank needs a run directory", "pass RUN_DIR or --run-dir")
    settings = make_settings(kw)
    frozen = (
        json.loads(spec_json)
        if spec_json
        else (specmod.make_spec(spec, specmod.parse_params(params)) if spec else None)
    )
    run_rank(target, settings, frozen, indices, pipeline_blob)


@click.command("backends")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backends_cmd(as_json: bool) -> None:
    """List the backends, whether they are available here and what they need."""
    from hpc_curator.backends import list_backends

    rows = list_backends()
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("backend", "available", "needs", "install", "what")
    for r in rows:
        table.add_row(
            r.name,
            "[green]yes" if r.available else "[red]no",
            ", ".join(r.requires) or "-",
            r.install or "",
            r.description,
        )
    Console().print(table)


@click.command("manifest")
@click.argument("run_dir")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def manifest_cmd(run_dir: str, as_json: bool) -> None:
    """Summarise a finished or running run: counts, failures, outputs, attempts."""
    from hpc_curator.store import journal, rundir
    from hpc_curator.store.manifest import summarize

    rd = rundir.RunDir(run_dir)
    rundir.load(rd)
    outputs = {}
    if rd.manifest_json.exists():
        outputs = json.loads(rd.manifest_json.read_text()).get("outputs", {})
    doc = summarize(rd, journal.scan(rd), outputs=outputs)
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=repr))
        return
    show_summary(doc)


def show_summary(doc: dict[str, Any]) -> None:
    """Render a manifest summary with rich."""
    from rich.console import Console
    from rich.table import Table

    con = Console()
    c = doc["counts"]
    color = {"complete": "green", "failed": "red"}.get(doc["status"], "yellow")
    con.print(
        f"[bold]{doc['run_dir']}[/]  [{color}]{doc['status']}[/]  "
        f"{c['ok']}/{c['total']} ok, {c['failed']} failed, {c['pending']} pending, "
        f"world size {doc['world_size']}"
    )
    if doc["failure_types"]:
        t = Table("index", "rank", "node", "error", title="failures (first 10)")
        for f in doc["failures"][:10]:
            t.add_row(
                str(f["index"]), str(f["rank"]), str(f["node"]), f"{f['type']}: {f['message']}"
            )
        con.print(t)
    if doc["outputs"]:
        t = Table("filter", "output", "segments", "bytes", title="merged outputs")
        for name, o in doc["outputs"].items():
            t.add_row(name, o["path"], str(o["segments"]), str(o["bytes"]))
        con.print(t)
    if doc.get("stages"):
        t = Table("stage", "total s", "mean ms", "max ms", "share", title="time per stage")
        for name, st in doc["stages"].items():
            slowest = " (slowest)" if name == doc.get("slowest_stage") else ""
            t.add_row(
                name + slowest,
                f"{st['total_s']:.3f}",
                "-" if st["mean_s"] is None else f"{st['mean_s'] * 1000:.3f}",
                "-" if st["max_s"] is None else f"{st['max_s'] * 1000:.3f}",
                f"{st['share']:.1%}",
            )
        con.print(t)
    t = Table("attempt", "launcher", "job", "started", "ended", "reason", title="attempts")
    for a in doc["attempts"]:
        t.add_row(
            str(a["attempt"]),
            str(a["launcher"]),
            str(a.get("job_id") or "-"),
            str(a["started"]),
            str(a["ended"] or "-"),
            str(a["reason"] or "-"),
        )
    con.print(t)
    if doc["journal_torn_lines"]:
        con.print(f"[yellow]torn journal lines skipped: {doc['journal_torn_lines']}")
    for bad in doc.get("journal_bad_records", [])[:10]:
        con.print(
            f"[red]malformed journal record skipped: {bad['file']}:{bad['line']}: {bad['reason']}"
        )
    if doc.get("journal_duplicate_records"):
        con.print(f"[yellow]repeated commit records ignored: {doc['journal_duplicate_records']}")


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    for cmd in (run_cmd, rank_cmd, backends_cmd, manifest_cmd):
        group.add_command(cmd)
