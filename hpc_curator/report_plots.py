"""Presentation of the report: matplotlib figures (PNG bytes) and the HTML page.

Figures use only matplotlib's object-oriented API (``Figure`` + ``FigureCanvasAgg``): no
pyplot, no global backend switch, no display needed, safe in threads and on clusters. The page
is plain HTML with inline CSS and base64-embedded images; every value shown is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hpc_curator import rundir

if TYPE_CHECKING:
    from hpc_curator.report import ReportData

DPI = 100
WIDTH = 11.0
OK_COLOR = "#3b7dd8"
FAIL_COLOR = "#d8453b"
MAX_LINES = 16
MAX_LABELS = 32
FAILURE_INDICES_SHOWN = 20


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
    """Peak resident memory (``peak_bytes``, drawn in MiB) per worker (``labels``)."""
    fig, (ax,) = _figure(3.0)
    mib = np.asarray(peak_bytes, dtype=float) / 2**20
    _bars(ax, labels, mib, color="#8a6bbf")
    ax.set_ylabel("MiB")
    ax.set_title("peak memory (RSS) per rank")
    return _png(fig)


# -- HTML ----------------------------------------------------------------------------------
CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2330;
background:#f4f6f9}main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid
#d5dbe5;padding-bottom:4px}.sub{color:#5b6475;margin:0 0 16px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
.card{background:#fff;border-radius:8px;padding:10px 12px;box-shadow:0 1px 2px #0001}
.card .v{font-size:20px;font-weight:600}.card .k{color:#5b6475;font-size:12px}
.ok{color:#23803a}.failed{color:#c2352b}.pending{color:#a56a00}
table{border-collapse:collapse;background:#fff;width:100%;margin:6px 0;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid #e4e8ef;text-align:left;vertical-align:top}
th{background:#eef1f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;background:#fff;border-radius:8px;margin:6px 0}
pre{background:#1d2330;color:#e8ecf3;padding:10px;border-radius:6px;overflow-x:auto;
font-size:12px}details{margin:4px 0}code{font-size:12px}.note{color:#5b6475;font-size:12px}
"""


#: Marks the page with how many figures decoded (a self-check; the browser test reads it).
JS = (
    'addEventListener("load",function(){var n=0,a=document.images;'
    "for(var i=0;i<a.length;i++){if(a[i].complete&&a[i].naturalWidth>0)n++}"
    'document.documentElement.setAttribute("data-figures",n+"/"+a.length)});'
)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(head: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    cls = ['<td class="n">' if i in (numeric or ()) else "<td>" for i in range(len(head))]
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"{cls[i]}{_e(c)}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _dur(s: float) -> str:
    from hpc_curator.progress import format_seconds

    return f"{s:.2f} s" if s < 60 else format_seconds(s)


def _img(name: str, png: bytes, alt: str) -> str:
    b64 = base64.b64encode(png).decode()
    return f'<img id="fig-{name}" alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def render_html(data: ReportData, figs: dict[str, bytes]) -> str:
    """The report as one HTML string (inline CSS, embedded images, no external reference).

    Parameters
    ----------
    data
        What :func:`hpc_curator.report.collect` read.
    figs
        The PNGs from :func:`hpc_curator.report.figures`.

    Returns
    -------
    str
        The page; headline numbers are also embedded as JSON (``#report-data``).
    """
    from hpc_curator import __version__
    from hpc_curator.report import pipeline_label

    num = data.numbers()
    c = num["counts"]
    spec = data.info.spec
    title = f"{data.rd.path.name}: {pipeline_label(spec)}"
    cards = [
        ("status", f"status ({num['state']})", num["status"], ""),
        ("ok", "ok", f"{c['ok']:,}", "ok"),
        ("failed", "failed", f"{c['failed']:,}", "failed"),
        ("pending", "pending", f"{c['pending']:,}", "pending"),
        ("total", "total indices", f"{c['total']:,}", ""),
        ("wall", "wall time (attempts)", _dur(num["wall_seconds"]), ""),
        ("throughput", "indices / s", f"{num['throughput']:,.2f}", ""),
        ("world-size", "world size", str(num["world_size"]), ""),
        ("nodes", "nodes", str(len(num["nodes"])), ""),
        ("attempts", f"attempts ({num['requeues']} requeues)", str(num["attempts"]), ""),
    ]
    card_html = "".join(
        f'<div class="card"><div class="v {cls}" id="card-{ident}">{_e(v)}</div>'
        f'<div class="k">{_e(k)}</div></div>'
        for ident, k, v, cls in cards
    )
    parts = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{_e(data.rd.path)} · created {_e(data.info.meta.get("created"))} · '
        f"summary from {_e(data.source)} · report generated {_e(rundir.now_iso())} by "
        f"hpc-curator {_e(__version__)}</p>",
        f'<div class="cards">{card_html}</div>',
    ]
    if data.doc.get("journal_torn_lines"):
        parts.append(
            f'<p class="note">torn journal lines skipped: {_e(data.doc["journal_torn_lines"])}</p>'
        )
    parts += [
        "<h2>Throughput over time</h2>",
        _img("throughput", figs["throughput"], "throughput over time"),
        f'<p class="note">{num["executions"]:,} index executions in {_dur(num["wall_seconds"])} '
        f"of attempt wall time ({_dur(num['elapsed_seconds'])} from first start to last "
        f"activity); busy {_dur(num['busy_seconds'])} summed over ranks. Finish times are "
        "estimated from commit times and per-index wall times.</p>",
        "<h2>Per-index duration</h2>",
        _img("durations", figs["durations"], "per-index duration histogram"),
        f"<h3>Slowest {len(data.slowest)} indices</h3>",
        _table(
            ["index", "status", "wall (s)", "cpu (s)", "worker", "node"],
            [
                [
                    s["index"],
                    s["status"],
                    f"{s['wall']:.4g}",
                    f"{s['cpu']:.4g}",
                    s["worker"],
                    s["node"],
                ]
                for s in data.slowest
            ],
            {0, 2, 3},
        ),
        "<h2>Load balance: ranks and nodes</h2>",
        _img("load-balance", figs["load-balance"], "busy time per rank and node"),
        _balance_note(data),
        _table(
            [
                "attempt",
                "rank",
                "node",
                "host",
                "indices",
                "failed",
                "busy (s)",
                "alive (s)",
                "utilisation",
                "peak RSS",
                "end",
            ],
            [
                [
                    w["attempt"],
                    w["rank"],
                    w["node"],
                    w["host"],
                    w["indices"],
                    w["failed"],
                    f"{w['busy']:.2f}",
                    f"{w['span']:.2f}",
                    f"{w['busy'] / w['span']:.0%}" if w["span"] else "-",
                    _mib(w["peak_rss"]),
                    w["reason"],
                ]
                for w in data.workers
            ],
            {0, 1, 4, 5, 6, 7, 8, 9},
        ),
        _table(
            ["node", "workers", "indices", "failed", "busy (s)", "peak RSS"],
            [
                [
                    n["node"],
                    n["workers"],
                    n["indices"],
                    n["failed"],
                    f"{n['busy']:.2f}",
                    _mib(n["peak_rss"]),
                ]
                for n in data.nodes
            ],
            {1, 2, 3, 4, 5},
        ),
        "<h2>Peak memory per rank</h2>",
        _img("memory", figs["memory"], "peak memory per rank"),
        "<h2>Failures</h2>",
        _failures_html(data),
        "<h2>Stateful-filter outputs</h2>",
        _outputs_html(data),
        "<h2>Attempts</h2>",
        _table(
            ["attempt", "launcher", "job", "host", "started", "ended", "reason", "world size"],
            [
                [
                    a.get("attempt"),
                    a.get("launcher"),
                    a.get("job_id") or "-",
                    a.get("host"),
                    a.get("started"),
                    a.get("ended") or "-",
                    a.get("reason") or ("running" if data.state == "running" else "no end record"),
                    a.get("world_size") or "-",
                ]
                for a in data.attempts
            ],
            {0},
        ),
        "<h2>Pipeline and versions</h2>",
        f"<pre>{_e(json.dumps(spec, indent=2, default=repr))}</pre>",
        _table(["package", "version"], [list(kv) for kv in sorted(_versions(data).items())]),
    ]
    blob = json.dumps(num, default=repr).replace("</", "<\\/")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>hpc-curator report: {_e(title)}</title>'
        f"<style>{CSS}</style></head><body><main>{''.join(parts)}</main>"
        f'<script type="application/json" id="report-data">{blob}</script>'
        f"<script>{JS}</script></body></html>\n"
    )


def _balance_note(data: ReportData) -> str:
    busy = np.array([w["busy"] for w in data.workers if w["indices"]])
    if len(busy) < 2 or busy.mean() <= 0:
        return ""
    return (
        f'<p class="note">load imbalance (max / mean busy time): '
        f'<b id="imbalance">{busy.max() / busy.mean():.2f}</b> over {len(busy)} ranks.</p>'
    )


def _failures_html(data: ReportData) -> str:
    if not data.failure_groups:
        return '<p class="ok">No failed indices.</p>'
    out = []
    for g in data.failure_groups:
        idx = g["indices"][:FAILURE_INDICES_SHOWN]
        more = len(g["indices"]) - len(idx)
        shown = ", ".join(map(str, idx)) + (f" … (+{more})" if more else "")
        out.append(
            f'<table class="failure-group"><tr><th>{_e(g["type"])}</th>'
            f'<td class="n">{len(g["indices"])} indices</td></tr>'
            f"<tr><td>indices</td><td>{_e(shown)}</td></tr>"
            f"<tr><td>ranks</td><td>{_e(', '.join(map(str, sorted(g['ranks']))))}</td></tr>"
            f"<tr><td>first message</td><td>{_e(g['message'])}</td></tr></table>"
            f"<details><summary>first traceback ({_e(g['where'])})</summary>"
            f"<pre>{_e(g['tb'])}</pre></details>"
        )
    return "".join(out)


def _outputs_html(data: ReportData) -> str:
    if not data.outputs:
        return '<p class="note">This pipeline has no stateful filters.</p>'
    out = []
    for o in data.outputs:
        if o["merged"]:
            head = (
                f'<h3>{_e(o["name"])}</h3><p class="note">{_e(o.get("class"))} → '
                f"<code>{_e(o.get('path'))}</code>, {o.get('segments')} segments, "
                f"{o.get('bytes', 0):,} bytes, sha256 {_e(str(o.get('sha256', ''))[:16])}…</p>"
            )
        else:
            head = (
                f'<h3>{_e(o["name"])} (not merged yet)</h3><p class="note">partial: '
                f"{o['segments']} committed segments; the merged output is written when the "
                "attempt finishes.</p>"
            )
        out.append(head)
        if o.get("stats"):
            out.append(
                _table(
                    ["field", "count", "mean", "std", "min", "max"],
                    [
                        [
                            f,
                            f"{s['count']:,}",
                            f"{s['mean']:.6g}",
                            f"{s['std']:.6g}",
                            f"{s['min']:.6g}",
                            f"{s['max']:.6g}",
                        ]
                        for f, s in o["stats"].items()
                    ],
                    {1, 2, 3, 4, 5},
                )
            )
    return "".join(out)


def _versions(data: Any) -> dict[str, str]:
    versions = data.info.meta.get("versions") or {}
    return {str(k): str(v) for k, v in versions.items()}
