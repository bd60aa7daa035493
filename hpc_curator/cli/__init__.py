"""The ``hpc-curate`` command group and the single error → message + exit-code edge.

Library code raises :class:`~hpc_curator.errors.CuratorError`; only :class:`CuratorGroup`
turns it into ``Error: <one line>`` and the error's exit code. Heavy imports happen inside
commands, so ``hpc-curate --help`` stays fast.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from hpc_curator import __version__
from hpc_curator.errors import CuratorError


class CuratorGroup(click.Group):
    """A click group that reports :class:`CuratorError` as one line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CuratorError as exc:
            if not getattr(exc, "relayed", False):
                click.echo(f"Error: {exc.format()}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=CuratorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpc-curate")
def main() -> None:
    """Run data-curation pipelines over many indices: locally, under MPI, or on Slurm.

    \b
    Quick start:
      hpc-curate run examples/synthetic.py:build --ranks 4 --run-dir runs/demo
      hpc-curate manifest runs/demo
    """


from hpc_curator.cli import run as _run  # noqa: E402  (registers commands)

_run.register(main)

try:  # commands of later layers register themselves when present
    from hpc_curator.cli import operate as _operate

    _operate.register(main)
except ImportError:  # pragma: no cover
    pass
