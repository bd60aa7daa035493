"""The ``report`` command: a self-contained HTML report of a run (finished or running)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "-o",
    "--output",
    default=None,
    metavar="FILE.html",
    help="HTML file to write (default: RUN_DIR/report.html).",
)
@click.option("--png", is_flag=True, help="Also write each figure as a PNG beside the HTML.")
def report_cmd(run_dir: str, output: str | None, png: bool) -> None:
    """Write a self-contained HTML report of the run in RUN_DIR.

    Works for a finished run and for one still running (summary from the journals). The file
    embeds its CSS and images, so it can be copied anywhere and opened in a browser.
    """
    import importlib.util

    from hpc_curator.errors import UsageError

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError(
            "hpc-curate report needs matplotlib, which is not installed",
            "pip install 'hpc-curator[report]'",
        )
    from hpc_curator.report import build_report
    from hpc_curator.store.rundir import RunDir

    out = Path(output) if output else RunDir(run_dir).report_html
    path = build_report(run_dir, out, png_dir=out.parent if png else None)
    click.echo(f"report: {path}", err=True)
    if png:
        click.echo(f"figures: {path.parent}/{path.stem}-*.png", err=True)


def register(group: click.Group) -> None:
    """Add the ``report`` command to ``group``."""
    group.add_command(report_cmd)
