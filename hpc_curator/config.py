"""Site and user defaults: TOML config files with named profiles.

Where a command's option values come from, highest first:

1. the command line;
2. an environment variable ``HPC_CURATE_<OPTION>`` (click's ``auto_envvar_prefix``:
   ``HPC_CURATE_PARTITION=gpu``, ``HPC_CURATE_NODES=4``; repeatable options split on
   whitespace, ``HPC_CURATE_SETUP`` on newlines);
3. the chosen profile (``--profile NAME`` or ``HPC_CURATE_PROFILE``, else the files'
   ``default_profile``): ``[profiles.NAME]`` of the user file, then of the site file;
4. ``[defaults]`` of the user file, then of the site file;
5. the built-in default.

The site file is ``$HPC_CURATE_SITE_CONFIG``, else ``/etc/hpc-curator/config.toml``; the user
file is ``$HPC_CURATE_CONFIG``, else ``$XDG_CONFIG_HOME/hpc-curator/config.toml`` (by default
``~/.config/hpc-curator/config.toml``). Keys are option names (``ntasks-per-node`` or
``ntasks_per_node``); a key no command knows is refused, with the file it is in::

    default_profile = "cpu"

    [defaults]
    account = "proj123"
    time = "2:00:00"

    [profiles.gpu]
    partition = "gpu"
    gpus-per-rank = 1
    modules = ["cuda/12.4"]
    setup = ["source /apps/venvs/curate/bin/activate"]

Only ``submit``, ``sbatch-script`` and ``run`` take ``[defaults]``; ``resume`` and ``retry``
reuse the options recorded with the run and apply a profile only when one is named.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from hpc_curator.errors import UsageError

ENV_PREFIX = "HPC_CURATE"
CONFIG_ENV = "HPC_CURATE_CONFIG"
SITE_CONFIG_ENV = "HPC_CURATE_SITE_CONFIG"
SITE_CONFIG = Path("/etc/hpc-curator/config.toml")
SOURCES_KEY = "hpc_curator.config_sources"
_TOP_KEYS = ("default_profile", "defaults", "profiles")
#: Plural spellings of repeatable options, as a config file reads best.
ALIASES = {
    "modules": "module",
    "srun_args": "srun_arg",
    "sbatch_opts": "sbatch_opt",
    "container_binds": "container_bind",
    "mpiexec_arg": "mpiexec_args",
}


def config_files() -> list[tuple[str, Path]]:
    """``(kind, path)`` of the site and the user config file, lowest precedence first."""
    site = Path(os.environ.get(SITE_CONFIG_ENV) or SITE_CONFIG)
    user_env = os.environ.get(CONFIG_ENV)
    if user_env:
        user = Path(user_env)
    else:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        user = Path(base) / "hpc-curator" / "config.toml"
    return [("site", site), ("user", user)]


@dataclass(frozen=True)
class Layer:
    """One table of settings from one file: its ``[defaults]`` or one ``[profiles.X]``."""

    label: str
    path: Path
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """How ``config show`` names it."""
        return f"{self.label} ({self.path})"


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            import tomllib  # only once a config file exists: most commands never read one

            try:
                doc = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise UsageError(
                    f"config file {path} is not valid TOML: {exc}", "fix or remove it"
                ) from None
            except UnicodeDecodeError as exc:
                raise UsageError(
                    f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} "
                    f"at offset {exc.start})",
                    "TOML files are UTF-8: fix or remove it",
                ) from None
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
    unknown = sorted(set(doc) - set(_TOP_KEYS))
    if unknown:
        raise UsageError(
            f"config file {path}: unknown top-level key {unknown[0]!r}",
            "options go in [defaults] or [profiles.NAME]; the top level takes only default_profile",
        )
    for name in ("defaults", "profiles"):
        if not isinstance(doc.get(name, {}), dict):
            raise UsageError(f"config file {path}: {name} must be a table ([{name}])")
    for name, table in doc.get("profiles", {}).items():
        if not isinstance(table, dict):
            raise UsageError(
                f"config file {path}: profile {name!r} is {_kind(table)}, not a table",
                f"write its options under [profiles.{name}]",
            )
    if not isinstance(doc.get("default_profile", ""), str):
        raise UsageError(
            f"config file {path}: default_profile = {doc['default_profile']!r} is "
            f"{_kind(doc['default_profile'])}, not a profile name",
            'e.g. default_profile = "gpu"',
        )
    return doc


def _kind(value: Any) -> str:
    """How a config file's value is called in an error: TOML's names for its types."""
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a float"}
    names.update({list: "an array", dict: "a table"})
    return names.get(type(value), f"a {type(value).__name__}")


#: The TOML types an option value may have (dates and times are none of the options').
_SCALARS = (str, bool, int, float)


def _normalise(table: dict[str, Any], where: str) -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            raise UsageError(f"{where}: {key!r} is a table; option values are plain values")
        items = value if isinstance(value, list) else [value]
        bad = [v for v in items if not isinstance(v, _SCALARS)]
        if bad:
            raise UsageError(
                f"{where}: {key} = {value!r}: {_kind(bad[0])} is not an option value",
                "use a string, a number, a boolean or an array of them",
            )
        name = key.replace("-", "_")
        out[ALIASES.get(name, name)] = value
    return out


def layers(profile: str | None, *, with_defaults: bool = True) -> tuple[list[Layer], str | None]:
    """The config layers that apply, lowest precedence first, and the profile used.

    Raises
    ------
    UsageError
        A file is not valid TOML, or ``profile`` is in no file.
    """
    docs = [(kind, path, _read(path)) for kind, path in config_files()]
    chosen = profile
    if chosen is None and with_defaults:
        for _, _, doc in docs:  # the user file's default_profile wins over the site's
            chosen = doc.get("default_profile", chosen)
    out: list[Layer] = []
    if with_defaults:
        for kind, path, doc in docs:
            if doc.get("defaults"):
                out.append(
                    Layer(
                        f"{kind} defaults",
                        path,
                        _normalise(doc["defaults"], f"config file {path} [defaults]"),
                    )
                )
    if chosen is not None:
        found = False
        for kind, path, doc in docs:
            table = doc.get("profiles", {}).get(chosen)
            if table is not None:
                found = True
                where = f"config file {path} [profiles.{chosen}]"
                out.append(Layer(f"{kind} profile {chosen}", path, _normalise(table, where)))
        if not found:
            names = sorted({n for _, _, d in docs for n in d.get("profiles", {})})
            raise UsageError(
                f"no profile {chosen!r} in {' or '.join(str(p) for _, p, _ in docs)}",
                f"profiles defined: {', '.join(names)}" if names else "define [profiles.NAME]",
            )
    return out, chosen


def option_names(group: click.Group) -> set[str]:
    """Every option name of every command of ``group`` (what a config key may be)."""
    names: set[str] = set()
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is not None:
            names.update(p.name for p in cmd.params if isinstance(p, click.Option) and p.name)
    return names


def resolve(
    ctx: click.Context, chosen: list[Layer], known: set[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The values ``chosen`` give ``ctx.command``'s options, and the layer each came from.

    Values are checked with the option's own type here, so that a bad one names its file.
    """
    params = {p.name: p for p in ctx.command.params if isinstance(p, click.Option) and p.name}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in chosen:
        for key, value in layer.values.items():
            if key not in known or key == "profile":
                raise UsageError(
                    f"config file {layer.path}: {key.replace('_', '-')!r} is not an option of "
                    "any hpc-curate command",
                    "see hpc-curate COMMAND --help for the option names",
                )
            param = params.get(key)
            if param is None:
                continue  # an option of another command
            if param.multiple and not isinstance(value, list):
                value = [value]
            elif not param.multiple and isinstance(value, list):
                raise UsageError(
                    f"config file {layer.path}: {key.replace('_', '-')} = {value!r} is an "
                    "array; this option takes one value"
                )
            try:
                param.type_cast_value(ctx, value)
            except (click.BadParameter, TypeError, ValueError) as exc:
                text = exc.format_message() if isinstance(exc, click.BadParameter) else str(exc)
                raise UsageError(
                    f"config file {layer.path}: {key.replace('_', '-')} = {value!r}: {text}"
                ) from None
            values[key] = value
            sources[key] = layer.source
    return values, sources


def apply_profile(ctx: click.Context, with_defaults: bool, profile: str | None) -> None:
    """Put the config values for ``ctx.command`` into ``ctx.default_map`` (below env vars)."""
    chosen, name = layers(profile, with_defaults=with_defaults)
    root = ctx.find_root().command
    known: set[str] = set()
    # every command's option names (a key may belong to another command), only when a config
    # file sets something: collecting them imports every command's module (~15 ms)
    if isinstance(root, click.Group) and any(layer.values for layer in chosen):
        known = option_names(root)
    values, sources = resolve(ctx, chosen, known)
    ctx.default_map = {**values, **(ctx.default_map or {})}
    ctx.meta[SOURCES_KEY] = (name, sources)


def profile_option(*, with_defaults: bool = True) -> Any:
    """The eager ``--profile`` option that loads the config before the other options."""

    def callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        apply_profile(ctx, with_defaults, value)

    return click.option(
        "--profile",
        default=None,
        is_eager=True,
        expose_value=False,
        callback=callback,
        metavar="NAME",
        help="Settings profile from the config file (hpc-curate config show).",
    )


class Lines(click.types.StringParamType):
    """A string option whose environment variable holds one value per line."""

    envvar_list_splitter = "\n"

    def split_envvar_value(self, rv: str) -> list[str]:  # type: ignore[override]
        return [line for line in rv.split("\n") if line.strip()]


def envvar_name(param: click.Parameter) -> str:
    """The environment variable that sets ``param`` (``HPC_CURATE_NTASKS_PER_NODE``)."""
    return f"{ENV_PREFIX}_{(param.name or '').upper()}"
