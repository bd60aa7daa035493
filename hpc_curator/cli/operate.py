"""Commands that operate a run: status, logs, failed, retry, cancel."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from hpc_curator.cli.options import slurm_options
from hpc_curator.config import profile_option


def _job_ids(rd: Any) -> list[str]:
    from hpc_curator.slurm.submit import submissions
    from hpc_curator.store import attempt_records

    jobs = [r["job_id"] for r in submissions(rd)]
    jobs += [str(a["job_id"]) for a in attempt_records.list_attempts(rd) if a.get("job_id")]
    return list(dict.fromkeys(jobs))


def status_doc(rd: Any) -> dict[str, Any]:
    """Job states plus progress: exact counts (journal scan) and, from the same
    :class:`~hpc_curator.ui.progress.ProgressModel` as the live views, per-rank rows of the
    current attempt, stale ranks, throughput and ETA."""
    from hpc_curator.slurm.status import describe_jobs
    from hpc_curator.store import journal
    from hpc_curator.store.manifest import summarize
    from hpc_curator.ui.progress import ProgressModel

    doc = summarize(rd, journal.scan(rd, with_outputs=False))
    model = ProgressModel(rd.path)
    model.poll()
    snap = model.snapshot()
    current = snap.attempt
    ranks = [
        {
            "rank": row.rank,
            "node": row.node,
            "pid": row.pid,
            "done": row.done,
            "failed": row.failed,
            "last_commit_age": round(row.since_commit or 0.0, 1),
            "state": row.state,
            "ended": row.state not in ("running", "stale"),
            "stale": row.stale,
            "stale_after": round(row.stale_after, 1),
            "running_index": row.current,
            "uncommitted": row.uncommitted,
        }
        for row in snap.rows
        if row.attempt == current
    ]
    live = snap.attempt_state == "running"
    doc.update(
        jobs=describe_jobs(_job_ids(rd)[-5:]),
        live=live,
        current_attempt=current,
        rank_progress=ranks,
        throughput=snap.totals.rate if live and snap.totals.rate > 0 else None,
        eta_seconds=snap.totals.eta if live else None,
        uncommitted=snap.totals.uncommitted if live else 0,
    )
    return doc


@click.command("status")
@click.argument("run_dir")
@click.option("--watch", is_flag=True, help="Live view until Ctrl-C (never touches the run).")
@click.option(
    "--interval", type=float, default=2.0, show_default=True, help="Refresh interval for --watch."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_cmd(run_dir: str, watch: bool, interval: float, as_json: bool) -> None:
    """Job state (squeue/sacct) and progress (journals) of RUN_DIR."""
    from hpc_curator.store import rundir

    rd = rundir.RunDir(run_dir)
    rundir.load(rd)
    if watch:
        from hpc_curator.ui.console import LiveView

        LiveView(str(rd.path), interval=interval).run_until(None)
        return
    doc = status_doc(rd)
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=repr))
        return
    _show_status(doc)


def _show_status(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    c = doc["counts"]
    rate = f"{doc['throughput']:.1f}/s" if doc["throughput"] else "-"
    eta = f"{doc['eta_seconds']:.0f}s" if doc["eta_seconds"] else "-"
    con.print(
        f"[bold]{doc['run_dir']}[/]  {doc['status']}{' (running)' if doc['live'] else ''}"
        f"  {c['ok']} ok, {c['failed']} failed, {c['pending']} pending of {c['total']}"
        f"  rate {rate}  eta {eta}"
        + (f"  ({doc['uncommitted']} finished, not committed yet)" if doc["uncommitted"] else "")
    )
    if doc["jobs"]:
        t = Table("job", "state", "nodes", "elapsed", title="Slurm jobs")
        for j in doc["jobs"]:
            t.add_row(j["job_id"], j.get("state", "?"), j.get("nodes", ""), j.get("elapsed", ""))
        con.print(t)
    if doc["rank_progress"]:
        t = Table(
            "rank",
            "node",
            "done",
            "failed",
            "last commit",
            "running",
            "",
            title=f"attempt {doc['current_attempt']}",
        )
        for r in doc["rank_progress"]:
            flag = "[red]STALE" if r["stale"] else ("ended" if r["ended"] else "")
            running = r["running_index"]
            t.add_row(
                str(r["rank"]),
                str(r["node"]),
                str(r["done"]) + (f" +{r['uncommitted']}" if r["uncommitted"] else ""),
                str(r["failed"]),
                f"{r['last_commit_age']:.0f}s ago",
                "-" if running is None else f"i={running}",
                flag,
            )
        con.print(t)


@click.command("logs")
@click.argument("run_dir")
@click.option(
    "--rank", "--task", "rank", type=int, default=0, show_default=True,
    help="Rank (or elastic task) to show.",
)  # fmt: skip
@click.option("--index", type=int, default=None, help="Only the lines this index printed.")
@click.option("--attempt", type=int, default=None, help="Attempt (default: the latest).")
@click.option("--job", default=None, help="The Slurm task log of this job instead.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
def logs_cmd(
    run_dir: str, rank: int, index: int | None, attempt: int | None, job: str | None, follow: bool
) -> None:
    """Print what a rank of RUN_DIR printed and logged (D/logs/aNNNN-rankRRRRR.log).

    \b
    --index I   the lines written while index I ran (its rank and attempt are looked up)
    --job J     the Slurm stdout/stderr of task --rank of job J (MPI and C-level output too)
    """
    from hpc_curator.engine.ranklog import lines_of
    from hpc_curator.errors import UsageError
    from hpc_curator.store import rundir

    rd = rundir.RunDir(run_dir)
    rundir.load(rd)
    if index is not None:
        tagged = _logs_of_index(rd, index)
        if not tagged:
            raise UsageError(f"no rank log of {rd.path} mentions index {index}")
        for f in tagged:
            click.secho(f"==> {f} (index {index}) <==", bold=True)
            for line in lines_of(f, index):
                click.echo(line.decode(errors="replace"), nl=False)
        return
    files: list[Path] = []
    jobs = _job_ids(rd)
    if job is not None or (jobs and attempt is None):  # the Slurm task's stdout/stderr
        files = [f for f in rd.task_logs(job or jobs[-1], rank) if f.exists()]
    if job is None:  # then what the rank's user code printed and logged
        logs = sorted(rd.logs_dir.glob(f"a*-rank{rank:05d}.log")) if rd.logs_dir.is_dir() else []
        if attempt is not None:
            logs = [p for p in logs if p == rd.rank_log(attempt, rank)]
        files += logs[-1:]
    if not files:
        raise UsageError(
            f"no log of rank {rank}" + (f" of job {job}" if job else "") + f" yet in {rd.path}",
            "a Slurm job may still be pending; see hpc-curate status",
        )
    _print_files(files, follow)


def _logs_of_index(rd: Any, index: int) -> list[Path]:
    """The rank logs of the attempts that ran ``index`` (from its journal records)."""
    from hpc_curator.store import journal

    scan = journal.scan(rd, with_outputs=False)
    hits = [(int(a), int(r)) for a, r in zip(scan.attempt[scan.idx == index],
            scan.rank[scan.idx == index], strict=True)]  # fmt: skip
    files = [rd.rank_log(a, r) for a, r in dict.fromkeys(hits)]
    if not files:  # running now, or died with it: look through the latest attempt's logs
        latest = sorted(rd.logs_dir.glob("a*-rank*.log")) if rd.logs_dir.is_dir() else []
        files = [p for p in latest if p.name[:5] == (latest[-1].name[:5] if latest else "")]
    tag = f" i={index} ".encode()
    return [f for f in files if f.exists() and tag in f.read_bytes()]


def _print_files(files: list[Path], follow: bool) -> None:
    offsets = dict.fromkeys(files, 0)
    while True:
        for f in files:
            with open(f, "rb") as fh:
                fh.seek(offsets[f])
                data = fh.read()
            if data:
                if not follow:
                    click.secho(f"==> {f} <==", bold=True)
                click.echo(data.decode(errors="replace"), nl=False)
                offsets[f] += len(data)
        if not follow:
            return
        try:
            time.sleep(1.0)
        except KeyboardInterrupt:
            return


#: Launchers whose workers are elastic tasks (journals named by task, not MPI rank).
TASKS = ("array", "elastic")


@click.command("failed")
@click.argument("run_dir")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--lines", type=int, default=3, show_default=True, help="Traceback lines shown.")
def failed_cmd(run_dir: str, as_json: bool, lines: int) -> None:
    """List failed indices: index, rank, node, exception and the traceback's tail."""
    from hpc_curator.store import journal, rundir
    from hpc_curator.store.manifest import MAX_LISTED_FAILURES, summarize

    rd = rundir.RunDir(run_dir)
    rundir.load(rd)
    doc = summarize(rd, journal.scan(rd, with_outputs=False))
    failures = doc["failures"]
    if as_json:
        click.echo(json.dumps(failures, indent=2))
    else:
        elastic = {a["attempt"] for a in doc.get("attempts", []) if a.get("launcher") in TASKS}
        for f in failures:
            stage = f"  in {f['stage']}" if f.get("stage") else ""
            who = "task" if f["attempt"] in elastic else "rank"
            click.secho(
                f"index {f['index']}  {who} {f['rank']}  node {f['node']}  "
                f"attempt {f['attempt']}{stage}: {f['type']}: {f['message']}",
                fg="red",
            )
            for line in f["traceback"].rstrip().splitlines()[-lines:]:
                click.echo(f"    {line}")
            if f.get("log"):
                click.echo(f"    its output: hpc-curate logs {rd.path} --index {f['index']}")
        total = doc["counts"]["failed"]
        if total > MAX_LISTED_FAILURES:
            click.echo(f"... {total - MAX_LISTED_FAILURES} more (see manifest.parquet)")
        click.echo(
            f"{total} failed index(es)" + (f"; retry: hpc-curate retry {rd.path}" if total else "")
        )
    sys.exit(1 if failures else 0)


@click.command("retry")
@click.argument("run_dir")
@profile_option(with_defaults=False)
@slurm_options
@click.option(
    "--cluster",
    type=click.Choice(["slurm", "local", "debug"]),
    default=None,
    help="Where to re-run (default: slurm if the run was submitted, else debug).",
)
@click.option("--wait", is_flag=True, help="Follow progress and exit with the run's code.")
def retry_cmd(run_dir: str, cluster: str | None, wait: bool, **kw: Any) -> None:
    """Re-run only the failed indices of RUN_DIR as a new attempt."""
    from hpc_curator.cli.submit import relaunch
    from hpc_curator.slurm.submit import submissions
    from hpc_curator.store import rundir

    rd = rundir.RunDir(run_dir)
    rundir.load(rd)
    where = cluster or ("slurm" if submissions(rd) else "debug")
    relaunch(run_dir, kw, where, wait, dry_run=False, retry=True)


@click.command("cancel")
@click.argument("run_dir")
def cancel_cmd(run_dir: str) -> None:
    """Cancel RUN_DIR's Slurm jobs (scancel) or its local run (SIGTERM to its launcher).

    Committed work stays; resume (or re-running the same command) continues it.
    """
    from hpc_curator.slurm.status import cancel
    from hpc_curator.store import rundir

    rd = rundir.RunDir(run_dir)
    rundir.load(rd)
    local = cancel_local(rd)
    jobs = _job_ids(rd)
    done = cancel(jobs) if jobs else []
    for line in local:
        click.echo(line)
    if done or not local:
        click.echo(f"cancelled {', '.join(done)}" if done else "no active job to cancel")
    click.echo(f"resume later with: hpc-curate resume {rd.path}" if jobs else "")


def cancel_local(rd: Any, wait: float = 30.0) -> list[str]:
    """SIGTERM the live local attempts of ``rd`` (this host, no Slurm job); wait for them.

    The launcher (``hpc-curate run`` parent, or the process running the pool) passes it on:
    every rank commits and stops; the attempt ends as ``SIGTERM``.
    """
    import os
    import signal
    import socket

    from hpc_curator.store import attempt_records

    lines = []
    for rec in attempt_records.list_attempts(rd):
        if rec.get("job_id") or rec.get("ended") or not attempt_records.attempt_alive(rd, rec):
            continue
        if rec.get("host") != socket.gethostname():
            lines.append(f"attempt {rec['attempt']} runs on {rec.get('host')}: cancel it there")
            continue
        pid = int(rec.get("launcher_pid") or rec["pid"])
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and attempt_records.attempt_alive(rd, rec):
            time.sleep(0.2)
            rec = next(
                (a for a in attempt_records.list_attempts(rd) if a["attempt"] == rec["attempt"]),
                rec,
            )
        lines.append(f"stopped local attempt {rec['attempt']} (pid {pid}); committed work is kept")
    return lines


def verify_run(rd: Any) -> tuple[int, list[str], list[dict[str, Any]]]:
    """Check every committed segment and every merged output against its recorded checksum,
    and that each merged output holds exactly the accepted commits' segments.

    Returns the number of files checked, one line per problem and the commits the acceptance
    rule rejected (:mod:`hpc_curator.store.ledger`: reported, not problems).
    """
    from hpc_curator.store import journal, manifest, rundir
    from hpc_curator.store.checksum import mismatch

    scan = journal.scan(rd, with_outputs=False)
    problems = [
        f"{b['file']}:{b['line']}: malformed commit record: {b['reason']}" for b in scan.bad
    ]
    checked = 0
    for name, segments in sorted(scan.segments.items()):
        for seg in segments:
            path = rd.shard_dir(name) / seg
            recorded = scan.segment_sums.get((name, seg))
            checked += 1
            if recorded is None:
                if not path.exists():
                    problems.append(f"{path}: committed segment is missing")
                continue
            problem = mismatch(path, recorded)
            if problem:
                problems.append(f"{path}: {problem}")
    if rd.manifest_json.exists():
        outputs = json.loads(rd.manifest_json.read_text()).get("outputs", {})
        for name, out in sorted(outputs.items()):
            checked += 1
            path = rundir.output_location(rd, out)
            problem = mismatch(path, [out.get("bytes"), out.get("sha256")], "in the manifest")
            if problem:
                problems.append(f"{path}: merged output of {name!r} {problem}")
            elif not manifest.holds(out, scan.segments.get(name, [])):
                problems.append(
                    f"{path}: merged output of {name!r} does not hold exactly the accepted "
                    "commits (the journals changed since it was merged: resume the run or call "
                    "gather_pipeline(D) to merge again)"
                )
    return checked, problems, scan.rejected


@click.command("verify")
@click.argument("run_dir")
def verify_cmd(run_dir: str) -> None:
    """Check RUN_DIR's committed shard segments and merged outputs against their checksums.

    Exit code 0 when every file matches, 4 when any is missing, changed or malformed.
    """
    from hpc_curator.store import rundir

    rd = rundir.RunDir(run_dir)
    rundir.load(rd)
    checked, problems, rejected = verify_run(rd)
    for r in rejected:  # the rule working as meant (a duplicate writer), not damage
        click.echo(f"{r['file']}:{r['line']}: commit rejected: {r['reason']}", err=True)
    for line in problems:
        click.secho(line, fg="red", err=True)
    if problems:
        click.echo(f"verify: {len(problems)} problem(s) in {checked} file(s) checked", err=True)
        sys.exit(4)
    click.echo(f"verify: {checked} file(s) match their checksums")


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    for cmd in (status_cmd, logs_cmd, failed_cmd, retry_cmd, cancel_cmd, verify_cmd):
        group.add_command(cmd)
