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
from hpc_curator.config import ENV_PREFIX
from hpc_curator.errors import CuratorError, from_exception


class CuratorGroup(click.Group):
    """A click group that reports :class:`CuratorError` as one line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CuratorError as exc:
            if not getattr(exc, "relayed", False):
                click.echo(f"Error: {exc.format()}", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:  # a full disk, a read-only or missing directory: one line
            error = from_exception(exc, "cannot write")
            click.echo(f"Error: {error.format()}", err=True)
            sys.exit(error.exit_code)


@click.group(cls=CuratorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpc-curate")
def main() -> None:
    """Run data-curation pipelines over many indices: locally, under MPI, or on Slurm.

    \b
    Quick start:
      hpc-curate run examples/synthetic.py:build --ranks 4 --run-dir runs/demo
      hpc-curate manifest runs/demo
    """


def _register_commands() -> None:
    """Import each command module (cheap: they import heavy things inside commands)."""
    import importlib

    for name in ("run", "submit", "operate", "revise", "report", "config", "elastic"):
        try:
            module = importlib.import_module(f"hpc_curator.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hpc_curator.cli.{name}":
                raise
            continue
        module.register(main)
    for name, cmd in main.commands.items():
        if name not in INTERNAL:  # HPC_CURATE_<OPTION> for every user-facing option
            cmd.context_settings.setdefault("auto_envvar_prefix", ENV_PREFIX)


#: Commands whose options are not read from HPC_CURATE_* variables: the rank program
#: inherits the user's environment and must take its settings from its launcher only.
INTERNAL = ("rank", "task", "config")

_register_commands()
