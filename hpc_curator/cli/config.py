"""``hpc-curate config show``: the settings a command would use, and where each came from."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from hpc_curator import config
from hpc_curator.errors import UsageError


@click.group("config")
def config_group() -> None:
    """Site defaults: config files, profiles and HPC_CURATE_<OPTION> variables.

    \b
    Precedence: command line > HPC_CURATE_<OPTION> > profile > [defaults] > built-in.
    Files: $HPC_CURATE_SITE_CONFIG (else /etc/hpc-curator/config.toml), then
    $HPC_CURATE_CONFIG (else ~/.config/hpc-curator/config.toml).
    """


def resolved(
    ctx: click.Context, command: str, profile: str | None
) -> tuple[str | None, list[dict[str, Any]]]:
    """The profile used and one row per option of ``command``: name, value, source."""
    root = ctx.find_root()
    group = root.command
    assert isinstance(group, click.Group)
    cmd = group.get_command(root, command)
    if cmd is None:
        raise UsageError(f"no command {command!r}", "see hpc-curate --help")
    with_defaults = command not in ("resume", "retry")
    profile = profile or os.environ.get(f"{config.ENV_PREFIX}_PROFILE") or None
    chosen, name = config.layers(profile, with_defaults=with_defaults)
    sub = click.Context(cmd, info_name=command, parent=root)
    values, sources = config.resolve(sub, chosen, config.option_names(group))
    rows = []
    for param in cmd.params:
        if not isinstance(param, click.Option) or param.hidden or not param.name:
            continue
        if param.name in ("profile", "help"):
            continue
        env = config.envvar_name(param)
        if env in os.environ and cmd.context_settings.get("auto_envvar_prefix"):
            value: Any = os.environ[env]
            source = f"environment {env}"
        elif param.name in values:
            value, source = values[param.name], sources[param.name]
        else:
            default = param.get_default(sub, call=True)
            if not isinstance(default, (str, int, float, list, tuple)):
                default = None  # click's "unset" marker, or nothing
            value, source = default, "built-in default"
        if isinstance(value, tuple):
            value = list(value)
        rows.append({"option": param.opts[-1], "value": value, "source": source})
    return name, rows


@config_group.command("show")
@click.argument("command", default="submit")
@click.option("--profile", default=None, metavar="NAME", help="Show with this profile.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def show_cmd(ctx: click.Context, command: str, profile: str | None, as_json: bool) -> None:
    """Print the settings COMMAND (default submit) would use, and where each comes from."""
    name, rows = resolved(ctx, command, profile)
    files = [
        {"kind": kind, "path": str(path), "exists": path.is_file()}
        for kind, path in config.config_files()
    ]
    if as_json:
        doc = {"command": command, "profile": name, "files": files, "options": rows}
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    for f in files:
        click.echo(f"{f['kind']} config: {f['path']}" + ("" if f["exists"] else " (none)"))
    click.echo(f"profile: {name or '(none)'}")
    width = max((len(r["option"]) for r in rows), default=10)
    for row in rows:
        value = row["value"]
        text = "" if value is None else json.dumps(value) if not isinstance(value, str) else value
        click.echo(f"  {row['option']:<{width}}  {text:<24}  {row['source']}")


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    group.add_command(config_group)
