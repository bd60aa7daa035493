"""A fingerprint of the code that builds the pipeline, so a resume never mixes old and new code.

The fingerprint is the SHA-256 of every source file that defines the pipeline: the spec file
(a factory's ``.py`` or a YAML/JSON spec) and the modules of its components that live outside
the Python installation (site-packages, the standard library) and outside hpc-curator itself
-- the user's own files. It is recorded when the run is created and in every attempt; a launch
whose code differs is refused unless the user accepts the change (``--accept-code-change``),
which the attempt records.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path
from typing import Any

from hpc_curator.errors import RunDirError
from hpc_curator.model.pipeline import Pipeline
from hpc_curator.store.attempt_records import list_attempts
from hpc_curator.store.rundir import RunDir, RunInfo


def _installed_roots() -> list[Path]:
    package = Path(__file__).resolve().parents[1]  # hpc_curator itself (this is model/...)
    roots = {Path(sys.prefix), Path(sys.base_prefix), package}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(Path(path))
    return [r.resolve() for r in roots]


def _is_users(path: Path, roots: list[Path]) -> bool:
    parts = path.parts
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return not any(path == r or r in path.parents for r in roots)


def code_files(pipeline: Pipeline, spec: dict[str, Any]) -> list[Path]:
    """The user's source files that define ``pipeline`` (absolute, sorted).

    The spec file, the modules of every component's class and base classes, of the objects a
    component holds (the filter a :class:`~hpc_curator.model.legacy.LegacyStatefulFilter` wraps, a
    duck-typed component, helpers passed in), and, transitively, every module of the user's
    that those modules import (``import helpers``, ``from helpers import f``): whatever of
    the user's code could change what an index computes. Modules of the Python installation
    and of hpc-curator are left out.
    """
    roots = _installed_roots()
    files: set[Path] = set()
    seeds: set[str] = set()
    if spec.get("kind") == "factory":
        target = str(spec.get("ref", "")).rpartition(":")[0]
        if target.endswith(".py"):
            files.add(Path(target).resolve())
            seeds.update(_modules_of_file(Path(target).resolve()))
        else:
            seeds.add(target)
    elif spec.get("file"):
        files.add(Path(str(spec["file"])))
    comps: list[Any] = [pipeline.source, *pipeline.filters]
    if pipeline.sink is not None:
        comps.append(pipeline.sink)
    for comp in comps:
        seeds.update(_class_modules(type(comp)))
        for held in _held(comp):
            seeds.update(_class_modules(type(held)))
    files.update(_closure(seeds, roots))
    return sorted(p.resolve() for p in files if p.is_file() and _is_users(p.resolve(), roots))


def _class_modules(cls: type) -> set[str]:
    return {getattr(k, "__module__", "") for k in getattr(cls, "__mro__", (cls,))} - {""}


def _held(comp: Any) -> list[Any]:
    """Objects a component holds in its attributes (one level, lists and dicts opened)."""
    try:
        values = list(vars(comp).values())
    except TypeError:  # no __dict__ (slots)
        return []
    out = []
    for value in values:
        items = value.values() if isinstance(value, dict) else value
        for item in items if isinstance(items, (list, tuple, set)) else [value]:
            if not isinstance(item, (str, bytes, int, float, bool, type(None), Path)):
                out.append(item)
    return out


def _modules_of_file(path: Path) -> set[str]:
    names = set()
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None)
        if where and Path(where).resolve() == path:
            names.add(name)
    return names


def _closure(seeds: set[str], roots: list[Path]) -> set[Path]:
    """Files of the user's modules among ``seeds`` and of every user module they reference."""
    import types

    files: set[Path] = set()
    seen: set[str] = set()
    todo = list(seeds)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        module = sys.modules.get(name)
        where = getattr(module, "__file__", None)
        if not where or not _is_users(Path(where).resolve(), roots):
            continue
        files.add(Path(where).resolve())
        for value in list(vars(module).values()):
            if isinstance(value, types.ModuleType):
                todo.append(value.__name__)
                continue
            try:
                owner = getattr(value, "__module__", None)
            except Exception:  # an object whose attribute access misbehaves
                continue
            if isinstance(owner, str):
                todo.append(owner)
    return files


def fingerprint(pipeline: Pipeline, spec: dict[str, Any]) -> dict[str, str]:
    """``{path: sha256}`` of :func:`code_files`."""
    import hashlib

    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in code_files(pipeline, spec)}


def changes(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """Human-readable differences, e.g. ``['my_pipeline.py (edited)', 'helpers.py (new)']``."""
    out = []
    for path in sorted(set(before) | set(now)):
        name = Path(path).name
        if path not in now:
            out.append(f"{name} (no longer used)")
        elif path not in before:
            out.append(f"{name} (new)")
        elif before[path] != now[path]:
            out.append(f"{name} (edited)")
    return out


def recorded_code(rd: RunDir, info: RunInfo) -> dict[str, str] | None:
    """The fingerprint the run holds now: the latest attempt's, else the one of ``run.json``."""
    attempts = list_attempts(rd)
    return next((a["code"] for a in reversed(attempts) if "code" in a), info.meta.get("code"))


def check_run(rd: RunDir, info: RunInfo, now: dict[str, str], accept: bool) -> list[str]:
    """:func:`check` of ``now`` against the run's :func:`recorded_code`."""
    return check(recorded_code(rd, info), now, accept, str(rd.path))


def check(
    recorded: dict[str, str] | None, now: dict[str, str], accept: bool, run_dir: str
) -> list[str]:
    """Refuse a code change unless accepted; return the changes (empty: same code).

    Raises
    ------
    RunDirError
        When the code differs from the run's and ``accept`` is false.
    """
    if recorded is None:
        return []  # a run created before fingerprints were recorded
    diff = changes(recorded, now)
    if diff and not accept:
        raise RunDirError(
            f"the pipeline's code changed since run dir {run_dir} began: {', '.join(diff)}",
            "re-run with --accept-code-change to continue with the new code, which the attempt "
            "records; or use a new --run-dir",
        )
    return diff
