"""The ``hpc-curate`` command group and the single error → message + exit-code edge.

Library code raises :class:`~hpc_curator.errors.CuratorError`; only :class:`CuratorGroup`
turns it into ``Error: <one line>`` and the error's exit code. Heavy imports happen inside
commands, so ``hpc-curate --help`` stays fast.
"""

from __future__ import annotations

from typing import Any

import click

from hpc_curator import __version__
from hpc_curator.config import ENV_PREFIX
from hpc_curator.errors import CuratorError, exit_with


class CuratorGroup(click.Group):
    """A click group that reports :class:`CuratorError` as one line and its exit code, and
    imports a command's module only when that command is asked for."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            _load(module)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        for module in sorted(set(COMMAND_MODULES.values())):
            _load(module)
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (CuratorError, OSError) as exc:  # OSError: a full disk, a read-only dir
            exit_with(exc)


@click.group(cls=CuratorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpc-curate")
def main() -> None:
    """Run data-curation pipelines over many indices: locally, under MPI, or on Slurm.

    \b
    Quick start:
      hpc-curate run examples/synthetic.py:build --ranks 4 --run-dir runs/demo
      hpc-curate manifest runs/demo
    """


#: Which module of this package defines each command: a command line imports only the module
#: of the command it runs (the rank program and ``run`` skip the others: ~15 ms per process).
COMMAND_MODULES = {
    "run": "run", "rank": "run", "backends": "run", "manifest": "run",
    "submit": "submit", "sbatch-script": "submit", "resume": "submit",
    "status": "operate", "logs": "operate", "failed": "operate", "retry": "operate",
    "cancel": "operate", "verify": "operate",
    "invalidate": "revise", "extend": "revise",
    "report": "report", "config": "config", "task": "elastic",
}  # fmt: skip

#: Commands whose options are not read from HPC_CURATE_* variables: the rank program
#: inherits the user's environment and must take its settings from its launcher only.
INTERNAL = ("rank", "task", "config")


def _load(module_name: str) -> None:
    """Import ``hpc_curator.cli.<module_name>`` and add its commands to :data:`main`."""
    import importlib

    module = importlib.import_module(f"hpc_curator.cli.{module_name}")
    module.register(main)
    for name, cmd in main.commands.items():
        if name not in INTERNAL:  # HPC_CURATE_<OPTION> for every user-facing option
            cmd.context_settings.setdefault("auto_envvar_prefix", ENV_PREFIX)
