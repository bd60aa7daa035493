"""Option groups defined once and shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

F = Callable[..., Any]


def failure_budget(value: str | None) -> float | None:
    """Parse ``--max-failures``: a count (``10``) or a fraction (``0.01`` or ``1%``)."""
    if value is None:
        return None
    text = value.strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a count or a fraction (e.g. 10, 0.01, 1%)"
        ) from None
    if number < 0:
        raise click.BadParameter(f"{value!r} must not be negative")
    return number


def settings_options(f: F) -> F:
    """Commit, schedule and failure-budget options (→ ``RunSettings``)."""
    opts = [
        click.option(
            "--commit-every",
            type=click.IntRange(min=1),
            default=1000,
            show_default=True,
            help="Commit (flush shards + journal) after this many indices.",
        ),
        click.option(
            "--commit-seconds",
            type=click.FloatRange(min=0.001),
            default=30.0,
            show_default=True,
            help="... or after this many seconds.",
        ),
        click.option(
            "--max-failures",
            default=None,
            metavar="N|FRACTION",
            help="Stop once more indices failed than this (count, 0.01 or 1%).",
        ),
        click.option(
            "--schedule",
            type=click.Choice(["strided", "block", "dynamic"]),
            default="strided",
            show_default=True,
            help="How pending indices are split across ranks.",
        ),
        click.option(
            "--chunk-size",
            type=click.IntRange(min=1),
            default=None,
            help="Indices per claim with --schedule dynamic.",
        ),
        click.option("--retry-failed", is_flag=True, help="Re-run only the failed indices."),
        click.option(
            "--no-fsync", is_flag=True, hidden=True, help="Do not fsync journals (benchmarks only)."
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def make_settings(kw: dict[str, Any]) -> Any:
    """Pop the settings options from ``kw`` into a ``RunSettings``."""
    from hpc_curator.rank import RunSettings

    return RunSettings(
        commit_every=kw.pop("commit_every"),
        commit_seconds=kw.pop("commit_seconds"),
        max_failures=failure_budget(kw.pop("max_failures")),
        schedule=kw.pop("schedule"),
        chunk_size=kw.pop("chunk_size"),
        retry_failed=kw.pop("retry_failed"),
        fsync=not kw.pop("no_fsync"),
    )


def spec_options(f: F) -> F:
    """``--param`` and ``--indices``."""
    f = click.option(
        "--indices",
        default=None,
        metavar="SEL",
        help="Indices to run, e.g. 0:1000,2000:3000:2 (default: all).",
    )(f)
    f = click.option(
        "-p",
        "--param",
        "params",
        multiple=True,
        metavar="KEY=VALUE",
        help="Parameter for the pipeline factory (repeatable).",
    )(f)
    return f
