"""The report's figures: matplotlib PNGs (bytes), one function per figure.

Figures use only matplotlib's object-oriented API (``Figure`` + ``FigureCanvasAgg``): no
pyplot, no global backend switch, no display needed, safe in threads and on clusters.
matplotlib is imported when the first figure is drawn, not with this module.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from hpc_curator.report.data import ReportData

DPI = 100
WIDTH = 11.0
OK_COLOR = "#3b7dd8"
FAIL_COLOR = "#d8453b"
MAX_LINES = 16
MAX_LABELS = 32


def _figure(height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return fig, axes


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _time_unit(span: float) -> tuple[float, str]:
    if span > 3 * 3600:
        return 3600.0, "h"
    if span > 180:
        return 60.0, "min"
    return 1.0, "s"


def throughput(
    finish: np.ndarray,
    worker: np.ndarray,
    labels: Sequence[str],
    t0: float,
    attempt_starts: Sequence[float] = (),
) -> bytes:
    """Indices finished per second over time (left) and cumulative per rank (right).

    Parameters
    ----------
    finish
        Estimated finish time of every recorded index (seconds since the epoch).
    worker
        Position in ``labels`` of the worker that ran each index.
    labels
        One label per worker (e.g. ``a1 r3``).
    t0
        Time origin of the x axis (start of the first attempt).
    attempt_starts
        Start times of later attempts, drawn as dashed vertical lines.

    Returns
    -------
    bytes
        The figure as PNG.
    """
    fig, (ax, ax2) = _figure(3.6, 2)
    if len(finish) == 0:
        for a in (ax, ax2):
            a.text(0.5, 0.5, "nothing committed yet", ha="center", transform=a.transAxes)
        return _png(fig)
    rel = finish - t0
    span = max(float(rel.max()), 1e-3)
    scale, unit = _time_unit(span)
    nbins = int(min(60, max(5, np.sqrt(len(rel)))))
    edges = np.linspace(0.0, span * 1.0001, nbins + 1)
    counts, _ = np.histogram(rel, bins=edges)
    width = edges[1] - edges[0]
    ax.bar(edges[:-1] / scale, counts / width, width=width / scale, align="edge", color=OK_COLOR)
    ax.set_xlabel(f"time since start ({unit})")
    ax.set_ylabel("indices / s")
    ax.set_title("throughput (all ranks)")
    order = np.argsort(rel, kind="stable")
    for w in range(len(labels)):
        sel = order[worker[order] == w]
        if len(sel) == 0:
            continue
        x = np.concatenate([[rel[sel[0]]], rel[sel]]) / scale
        y = np.concatenate([[0], np.arange(1, len(sel) + 1)])
        kw = {"label": labels[w]} if len(labels) <= MAX_LINES else {"color": OK_COLOR}
        ax2.step(x, y, where="post", lw=1.2, alpha=0.9 if len(labels) <= MAX_LINES else 0.4, **kw)
    for start in attempt_starts:
        for a in (ax, ax2):
            a.axvline((start - t0) / scale, color="grey", ls="--", lw=1)
    ax2.set_xlabel(f"time since start ({unit})")
    ax2.set_ylabel("indices done")
    ax2.set_title("cumulative per rank")
    if 1 < len(labels) <= MAX_LINES:
        ax2.legend(fontsize="small", ncols=2 if len(labels) > 6 else 1)
    return _png(fig)


def durations(wall: np.ndarray, ok: np.ndarray) -> bytes:
    """Histogram of per-index wall time, ok and failed stacked (log x axis for wide ranges).

    Parameters
    ----------
    wall
        Wall seconds of each index (its current record).
    ok
        1 for ok, 0 for failed, aligned with ``wall``.

    Returns
    -------
    bytes
        The figure as PNG.
    """
    fig, (ax,) = _figure(3.2)
    if len(wall) == 0:
        ax.text(0.5, 0.5, "nothing committed yet", ha="center", transform=ax.transAxes)
        return _png(fig)
    w = np.maximum(np.asarray(wall, dtype=float), 1e-7)
    lo, hi = float(w.min()), float(w.max())
    if hi / lo > 100:
        edges = np.geomspace(lo, hi * 1.0001, 41)
        ax.set_xscale("log")
    else:
        edges = np.linspace(lo, max(hi, lo * 1.0001 + 1e-9), 41)
    ax.hist(
        [w[ok == 1], w[ok == 0]],
        bins=edges,
        stacked=True,
        color=[OK_COLOR, FAIL_COLOR],
        label=["ok", "failed"],
    )
    med = float(np.median(w))
    ax.axvline(med, color="black", lw=1, ls="--")
    ax.annotate(f" median {med:.3g} s", (med, 0.95), xycoords=("data", "axes fraction"))
    ax.set_xlabel("wall time per index (s)")
    ax.set_ylabel("indices")
    ax.set_title("per-index duration")
    if (ok == 0).any():
        ax.legend(fontsize="small")
    return _png(fig)


def _bars(
    ax: Any, labels: Sequence[str], values: np.ndarray, color: str = OK_COLOR, **kw: Any
) -> None:
    x = np.arange(len(labels))
    ax.bar(x, values, color=color, **kw)
    if len(labels) <= MAX_LABELS:
        ax.set_xticks(x, labels, rotation=45 if len(labels) > 8 else 0, ha="right")
    else:
        ax.set_xlabel(f"{len(labels)} ranks")


def load_balance(
    labels: Sequence[str],
    busy: np.ndarray,
    span: np.ndarray,
    nodes: Sequence[str],
    node_busy: np.ndarray,
    node_indices: np.ndarray,
) -> bytes:
    """Busy time per rank against its time alive (left) and busy time per node (right).

    Parameters
    ----------
    labels, busy, span
        Per worker (attempt, rank): label, summed wall seconds of its indices, seconds alive.
    nodes, node_busy, node_indices
        Per node: name, summed busy seconds, indices run.

    Returns
    -------
    bytes
        The figure as PNG.
    """
    fig, (ax, ax2) = _figure(3.6, 2)
    x = np.arange(len(labels))
    ax.bar(x, span, color="#c9d6ea", label="alive")
    _bars(ax, labels, busy, label="busy")
    if len(busy):
        ax.axhline(float(np.mean(busy)), color="black", ls="--", lw=1, label="mean busy")
        ax.set_ylim(0, max(float(np.max(span, initial=0)), float(busy.max())) * 1.25 or 1)
        ax.legend(fontsize="small", loc="upper center", ncols=3)
    ax.set_ylabel("seconds")
    ax.set_title("busy time per rank (load balance)")
    _bars(ax2, nodes, node_busy, color="#5a9f68")
    for i, n in enumerate(node_indices):
        ax2.annotate(f"{int(n)} idx", (i, node_busy[i]), ha="center", va="bottom", fontsize=8)
    ax2.set_ylabel("busy seconds")
    ax2.set_title("per node")
    return _png(fig)


def memory(labels: Sequence[str], peak_bytes: np.ndarray) -> bytes:
    """Peak resident memory per worker, drawn in MiB.

    Parameters
    ----------
    labels
        One label per worker (e.g. ``a1 r3``).
    peak_bytes
        Peak RSS of each worker in bytes, aligned with ``labels``.

    Returns
    -------
    bytes
        The figure as PNG.
    """
    fig, (ax,) = _figure(3.0)
    mib = np.asarray(peak_bytes, dtype=float) / 2**20
    _bars(ax, labels, mib, color="#8a6bbf")
    ax.set_ylabel("MiB")
    ax.set_title("peak memory (RSS) per rank")
    return _png(fig)


def draw_figures(data: ReportData) -> dict[str, bytes]:
    """Draw every figure of the report.

    Parameters
    ----------
    data
        What :func:`hpc_curator.report.data.collect` read.

    Returns
    -------
    dict
        ``{name: PNG bytes}`` for ``throughput``, ``durations``, ``load-balance``, ``memory``.
    """
    labels = [w["label"] for w in data.workers]
    pos = data.scan.latest()
    later = [a["started_ts"] for a in data.attempts[1:] if a.get("started_ts")]
    return {
        "throughput": throughput(data.finish, data.worker_of, labels, data.t0, later),
        "durations": durations(data.scan.wall[pos], data.scan.ok[pos]),
        "load-balance": load_balance(
            labels,
            np.array([w["busy"] for w in data.workers]),
            np.array([w["span"] for w in data.workers]),
            [n["node"] for n in data.nodes],
            np.array([n["busy"] for n in data.nodes]),
            np.array([n["indices"] for n in data.nodes]),
        ),
        "memory": memory(labels, np.array([w["peak_rss"] for w in data.workers])),
    }
