"""Commands that correct a run: invalidate, extend."""

from __future__ import annotations

import click


@click.command("invalidate")
@click.argument("run_dir")
@click.option(
    "--indices", required=True, metavar="SEL", help="Indices to run again, e.g. 17,40:50."
)
def invalidate_cmd(run_dir: str, indices: str) -> None:
    """Make indices of RUN_DIR pending again; the next resume re-runs them.

    Their outputs and stateful contributions are excluded from the next merge, so the counts
    stay exact; indices committed in the same batch as them re-run too.
    """
    from hpc_curator.model import partition
    from hpc_curator.store import revise, rundir

    rd = rundir.RunDir(run_dir)
    info = rundir.load(rd)
    wanted = partition.parse_indices(indices, int(info.indices.max()) + 1 if info.n else 0)
    again = revise.invalidate(rd, wanted)
    if not len(again):
        click.echo(f"none of the {len(wanted)} indices had a committed record: nothing to do")
        return
    extra = len(again) - len(wanted)
    click.echo(
        f"{len(again)} indices are pending again ({len(wanted)} named"
        + (f", {extra} more committed in the same batches" if extra > 0 else "")
        + f"); resume with: hpc-curate run/resume {rd.path}"
    )


@click.command("extend")
@click.argument("run_dir")
@click.option("--indices", required=True, metavar="SEL", help="Indices to add, e.g. 1000:2000.")
def extend_cmd(run_dir: str, indices: str) -> None:
    """Append indices to RUN_DIR's frozen index list (recorded as a new revision)."""
    from hpc_curator.model import partition
    from hpc_curator.model import spec as specmod
    from hpc_curator.store import revise, rundir

    rd = rundir.RunDir(run_dir)
    info = rundir.load(rd)
    n = len(specmod.build(info.spec).source)
    added = partition.parse_indices(indices, n)
    new = revise.extend(rd, added, n)
    revision = new.meta["revisions"][-1]["revision"]
    click.echo(f"{len(added)} indices added: the run has {new.n} (revision {revision})")


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    for cmd in (invalidate_cmd, extend_cmd):
        group.add_command(cmd)
