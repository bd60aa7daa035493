"""Is this ``run.json`` a run record of this hpc-curator? Checked before any field is used.

A ``run.json`` of another program, of another layout or edited by hand must be refused with
one line naming the file (exit 4, a damaged or foreign run directory), not end in a
``KeyError`` deep inside an attempt. :func:`check_run_record` checks the fields every command
relies on -- their presence and their JSON types -- and nothing else, so that fields added
later (or kept for information only) never make an older run unreadable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpc_curator.errors import RunDirError

#: the layout ``run.json`` is written in (:func:`hpc_curator.store.rundir.create_or_open`)
FORMAT = "hpc-curator.run/1"
_HINT = "it was not written by this hpc-curator or was edited; use another --run-dir"


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    names.update({int: "a number", float: "a number", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def _refuse(path: Path, problem: str) -> RunDirError:
    return RunDirError(f"{path} is not a run record of this layout: {problem}", _HINT)


def _field(meta: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    """``meta[key]``, which must exist and be of ``kind``."""
    if key not in meta:
        raise _refuse(path, f"no {key!r}")
    value = meta[key]
    if not isinstance(value, kind):
        raise _refuse(path, f"{key!r} is {_kind(value)}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_index_entry(entry: Any, path: Path, key: str = "indices") -> None:
    """Check an index-list entry (``{"kind": "ranges", "ranges": [[start, stop, step], ...]}``
    or ``{"kind": "npy", "file": "indices.npy"}``) of the record at ``path``.

    Raises
    ------
    RunDirError
        The entry has another layout.
    """
    if not isinstance(entry, dict):
        raise _refuse(path, f"{key!r} is {_kind(entry)}")
    kind = entry.get("kind")
    if kind == "ranges":
        ranges = entry.get("ranges")
        if not isinstance(ranges, list) or not all(
            isinstance(r, list) and len(r) == 3 and all(_is_int(v) for v in r) for r in ranges
        ):
            raise _refuse(path, f"{key!r} ranges are not [start, stop, step] integer triples")
    elif kind == "npy":
        file = entry.get("file")
        if not isinstance(file, str) or not file or Path(file).is_absolute() or ".." in file:
            raise _refuse(path, f"{key!r} names no index file inside the run directory")
    else:
        raise _refuse(path, f"{key!r} has kind {kind!r}, not 'ranges' or 'npy'")
    if "count" in entry and not _is_int(entry["count"]):
        raise _refuse(path, f"{key!r} count is {_kind(entry['count'])}")


def check_run_record(meta: Any, path: str | Path) -> dict[str, Any]:
    """Return ``meta`` (a parsed ``run.json``) once it is known to have this layout.

    Parameters
    ----------
    meta
        What ``json.loads`` gave for the file.
    path
        The file, for the message.

    Raises
    ------
    RunDirError
        (exit 4) ``meta`` is not a JSON object, has another ``format``, or lacks a field the
        commands rely on or has it with another type; one line naming ``path``.
    """
    path = Path(path)
    if not isinstance(meta, dict):
        raise _refuse(path, f"it holds {_kind(meta)}, not an object")
    if meta.get("format") != FORMAT:
        found = meta.get("format")
        raise RunDirError(
            f"{path} has unknown format {found!r} (this hpc-curator reads {FORMAT!r})", _HINT
        )
    spec = _field(meta, "spec", dict, path)
    if not isinstance(spec.get("kind"), str):
        raise _refuse(path, "'spec' has no kind")
    _field(meta, "spec_hash", str, path)
    _field(meta, "indices_hash", str, path)
    check_index_entry(_field(meta, "indices", dict, path), path)
    optional: tuple[tuple[str, type | tuple[type, ...]], ...] = (
        ("settings", dict),
        ("code", (dict, type(None))),
        ("cwd", str),
        ("versions", dict),
        ("revisions", list),
    )
    for key, kind in optional:
        if key in meta:
            _field(meta, key, kind, path)
    return meta
