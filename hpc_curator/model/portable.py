"""How a pipeline reaches another process: rebuilt from its frozen spec, or shipped pickled.

Ranks and pool workers rebuild the pipeline from the frozen spec whenever they can: a factory
in a file (loaded again by path), a factory or components in an importable module, or a YAML
spec. A pipeline built from objects that no fresh process can import — classes defined in
``__main__`` (a script, a notebook), in a function, or in a file loaded by path, or component
arguments that are not JSON — is shipped as a cloudpickle instead, with those modules pickled
by value.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any

from hpc_curator.errors import SpecError
from hpc_curator.model import spec as specmod
from hpc_curator.model.pipeline import Component, Pipeline
from hpc_curator.model.spec import USER_MODULE_PREFIX


def _components(pipeline: Pipeline) -> list[Component]:
    comps: list[Component] = [pipeline.source, *pipeline.filters]
    if pipeline.sink is not None:
        comps.append(pipeline.sink)
    return comps


def _unimportable(module: str, qualname: str) -> str | None:
    if module == "__main__":
        return "is defined in __main__"
    if module.startswith(USER_MODULE_PREFIX):
        return "comes from a file loaded by path"
    if "<locals>" in qualname:
        return "is defined inside a function"
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__spec__", None) is None:
        return f"comes from module {module!r}, which cannot be imported by name"
    if loaded is None and importlib.util.find_spec(module) is None:
        return f"comes from module {module!r}, which cannot be imported"
    return None


def why_not_rebuildable(pipeline: Pipeline) -> str | None:
    """Why a fresh process cannot rebuild ``pipeline`` from its spec (``None``: it can)."""
    spec = pipeline.to_spec()
    if spec.get("kind") == "factory":
        module = str(spec.get("ref", "")).rpartition(":")[0]
        if module == "__main__":
            return "its factory is defined in __main__"
        return None
    for comp in _components(pipeline):
        cls = type(comp)
        reason = _unimportable(cls.__module__, cls.__qualname__)
        if reason is not None:
            return f"component {cls.__qualname__} {reason}"
    try:
        json.dumps(spec)
    except (TypeError, ValueError) as exc:
        return f"a component argument is not JSON ({exc})"
    return None


def ship(pipeline: Pipeline) -> bytes:
    """Pickle ``pipeline`` with cloudpickle, the modules no other process can import by value.

    Raises
    ------
    SpecError
        When the pipeline cannot be pickled at all (an open file, a lock, a generator...).
    """
    import cloudpickle

    by_value = {
        type(c).__module__
        for c in _components(pipeline)
        if type(c).__module__.startswith(USER_MODULE_PREFIX)
    }
    for name in by_value:
        cloudpickle.register_pickle_by_value(sys.modules[name])
    try:
        return bytes(cloudpickle.dumps(pipeline))
    except Exception as exc:
        raise SpecError(
            f"the pipeline cannot be sent to other processes: {type(exc).__name__}: {exc}",
            "build it in a factory function (FILE.py:build) or use backend='sequential'",
        ) from None
    finally:
        for name in by_value:
            cloudpickle.unregister_pickle_by_value(sys.modules[name])


def payload(pipeline: Pipeline | None) -> bytes | None:
    """What a launcher sends besides the spec: ``None`` when the spec rebuilds the pipeline."""
    if pipeline is None or why_not_rebuildable(pipeline) is None:
        return None
    return ship(pipeline)


def rebuild(spec: dict[str, Any], blob: bytes | None) -> Pipeline:
    """The pipeline in this process: unpickled from ``blob``, else built from ``spec``."""
    if blob is None:
        return specmod.build(spec)
    import pickle

    try:
        pipeline = pickle.loads(blob)
    except Exception as exc:
        raise SpecError(
            f"cannot unpickle the pipeline sent by the launcher: {type(exc).__name__}: {exc}",
            "install the same packages where the ranks run, or build it in a factory file",
        ) from None
    if not isinstance(pipeline, Pipeline):
        raise SpecError(f"the launcher sent a {type(pipeline).__name__}, not a Pipeline")
    return pipeline
