"""``hpc-curate report``: one self-contained HTML file describing a run (finished or not).

The package is a chain without cycles: :mod:`~hpc_curator.report.data` reads the run directory
into a :class:`ReportData`; :mod:`~hpc_curator.report.figures` draws its matplotlib figures (Agg,
PNG bytes) and :mod:`~hpc_curator.report.page` renders the HTML page (inline CSS, figures
embedded as base64, no external reference, so the file opens anywhere after ``scp``); both
import only ``data``. :func:`build_report` here ties the three together.
"""

from __future__ import annotations

from pathlib import Path

from hpc_curator.report.data import ReportData, collect, pipeline_label
from hpc_curator.report.figures import draw_figures
from hpc_curator.report.page import render_html
from hpc_curator.store.atomic import atomic_write

__all__ = ["ReportData", "build_report", "collect", "draw_figures", "pipeline_label", "render_html"]


def build_report(
    run_dir: str | Path, out_html: str | Path, png_dir: str | Path | None = None
) -> Path:
    """Write the self-contained HTML report of a run.

    Parameters
    ----------
    run_dir
        The run directory (finished, running or crashed).
    out_html
        Path of the HTML file to write (atomically).
    png_dir
        If given, also write each figure there as ``<out stem>-<figure>.png``.

    Returns
    -------
    Path
        ``out_html``.

    Raises
    ------
    RunDirError
        When ``run_dir`` is not a run directory.
    """
    data = collect(run_dir)
    figs = draw_figures(data)
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, render_html(data, figs), durable=False)
    if png_dir is not None:
        target = Path(png_dir)
        target.mkdir(parents=True, exist_ok=True)
        for name, png in figs.items():
            atomic_write(target / f"{out.stem}-{name}.png", png, durable=False)
    return out
