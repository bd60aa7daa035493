"""The report's HTML page: one self-contained string (inline CSS, base64-embedded figures).

The page has no external reference, so the file opens anywhere after ``scp``. Every value
shown is escaped; the headline numbers are also embedded as JSON for machines and tests.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

import numpy as np

from hpc_curator.report.data import ReportData, pipeline_label
from hpc_curator.store import rundir

FAILURE_INDICES_SHOWN = 20

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
    from hpc_curator.ui.progress import format_seconds

    return f"{s:.2f} s" if s < 60 else format_seconds(s)


def _img(name: str, png: bytes, alt: str) -> str:
    b64 = base64.b64encode(png).decode()
    return f'<img id="fig-{name}" alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def render_html(data: ReportData, figs: dict[str, bytes]) -> str:
    """The report as one HTML string (inline CSS, embedded images, no external reference).

    Parameters
    ----------
    data
        What :func:`hpc_curator.report.data.collect` read.
    figs
        The PNGs from :func:`hpc_curator.report.figures.draw_figures`.

    Returns
    -------
    str
        The page; headline numbers are also embedded as JSON (``#report-data``).
    """
    from hpc_curator import __version__

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
        "<h2>Time per stage</h2>",
        _stages_html(data),
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


def _stages_html(data: ReportData) -> str:
    """Source, each filter and sink: total, mean and max seconds per index, share of time."""
    stages = data.doc.get("stages") or {}
    if not stages:
        return "<p>No stage timings recorded.</p>"
    slowest = data.doc.get("slowest_stage")
    rows = [
        [
            name + (" (slowest)" if name == slowest else ""),
            _dur(st["total_s"]),
            "-" if st["mean_s"] is None else f"{st['mean_s'] * 1000:.3f} ms",
            "-" if st["max_s"] is None else f"{st['max_s'] * 1000:.3f} ms",
            f"{st['share']:.1%}",
        ]
        for name, st in stages.items()
    ]
    table = _table(["stage", "total", "mean / index", "max / index", "share"], rows, {1, 2, 3, 4})
    return f'<div id="stages">{table}</div>'


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
