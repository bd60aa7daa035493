"""Load a pipeline from a reference or a spec, and freeze how it was built.

Three ways to name a pipeline on the command line:

- ``path/to/file.py:function`` — a factory in a file (the path is stored absolute);
- ``package.module:function`` — a factory in an importable module;
- ``pipeline.yaml`` / ``pipeline.json`` — components and their params.

``--param key=value`` strings go to the factory as keyword arguments (the factory converts
types); for YAML/JSON specs a key ``source.n`` / ``filters.0.passes`` / ``sink.out_dir``
overrides one component parameter, converted with that component's :class:`Param` type.

The *frozen spec* (``{"kind": "factory", "ref": ..., "params": ...}`` or
``{"kind": "components", ...}``) is what ``run.json`` stores and hashes: every rank rebuilds the
pipeline from it, so the identity of a run never depends on ``__module__`` or pickling.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from hpc_curator.errors import SpecError, UsageError
from hpc_curator.model.pipeline import Component, Pipeline, check_unique_names

#: Prefix of the module names given to pipeline files loaded by path.
USER_MODULE_PREFIX = "hpc_curator_user_"

BUILTINS = {
    "SyntheticSource": "hpc_curator.components.synthetic:SyntheticSource",
    "HDF5Source": "hpc_curator.components.hdf5:HDF5Source",
    "HDF5Sink": "hpc_curator.components.hdf5:HDF5Sink",
    "ParquetSink": "hpc_curator.components.parquet:ParquetSink",
    "FieldStats": "hpc_curator.components.stats:FieldStats",
    "Smooth": "hpc_curator.components.transforms:Smooth",
    "FailOn": "hpc_curator.components.transforms:FailOn",
    "Sleep": "hpc_curator.components.transforms:Sleep",
    "ZarrSink": "hpc_curator.components.zarr_sink:ZarrSink",
}


def parse_params(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Parse ``key=value`` strings; :class:`UsageError` on a malformed pair."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param {pair!r} is not key=value", "e.g. --param n=1000")
        out[key.strip()] = value
    return out


def make_spec(ref: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    """Turn a CLI reference and params into a frozen spec (validated, paths absolute)."""
    params = dict(params or {})
    if ref.endswith((".yaml", ".yml", ".json")) and ":" not in ref:
        path = Path(ref)
        if not path.is_file():
            raise SpecError(f"pipeline spec file {ref!r} does not exist", "check the path")
        doc = _read_doc(path)
        return {"kind": "components", **_apply_overrides(doc, params), "file": str(path.absolute())}
    target, sep, func = ref.rpartition(":")
    if not sep or not target or not func:
        raise SpecError(
            f"pipeline reference {ref!r} is not FILE.py:FUNCTION, MODULE:FUNCTION or a .yaml spec",
            "e.g. examples/synthetic.py:build",
        )
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise SpecError(f"pipeline file {target!r} does not exist", "check the path")
        target = str(path.absolute())
    return {"kind": "factory", "ref": f"{target}:{func}", "params": params}


def build(spec: dict[str, Any]) -> Pipeline:
    """Build the pipeline described by a frozen spec."""
    kind = spec.get("kind")
    if kind == "factory":
        pipeline = _call_factory(spec["ref"], spec.get("params", {}))
    elif kind == "components":
        pipeline = _build_components(spec)
    else:
        raise SpecError(f"unknown pipeline spec kind {kind!r}")
    try:
        check_unique_names(pipeline.stateful_filters)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    return pipeline.with_spec(spec)


def load(ref: str, params: dict[str, str] | None = None) -> tuple[Pipeline, dict[str, Any]]:
    """Load a pipeline from a CLI reference; return it and its frozen spec."""
    spec = make_spec(ref, params)
    return build(spec), spec


def _read_doc(path: Path) -> dict[str, Any]:
    try:
        if path.suffix == ".json":
            doc = json.loads(path.read_text())
        else:
            import yaml

            doc = yaml.safe_load(path.read_text())
    except Exception as exc:
        raise SpecError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict) or "source" not in doc:
        raise SpecError(f"{path} must be a mapping with a 'source' (and optional filters, sink)")
    doc["filters"] = doc.get("filters") or []
    doc["sink"] = doc.get("sink")
    if not isinstance(doc["filters"], list):
        raise SpecError(f"{path}: 'filters' must be a list of components")
    for comp in _components(doc):
        if not isinstance(comp, dict) or "class" not in comp:
            raise SpecError(f"{path}: every component needs a 'class' key, got {comp!r}")
        comp["params"] = comp.get("params") or {}
        if not isinstance(comp["params"], dict):
            raise SpecError(f"{path}: 'params' of {comp['class']} must be a mapping")
    return doc


def _components(doc: dict[str, Any]) -> list[dict[str, Any]]:
    comps = [doc["source"], *doc["filters"]]
    if doc.get("sink") is not None:
        comps.append(doc["sink"])
    return comps


def _apply_overrides(doc: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for key, raw in params.items():
        parts = key.split(".")
        try:
            if parts[0] == "filters":
                comp, name = doc["filters"][int(parts[1])], parts[2]
            elif parts[0] in ("source", "sink") and doc.get(parts[0]) is not None:
                comp, name = doc[parts[0]], parts[1]
            else:
                raise KeyError(key)
        except (KeyError, IndexError, ValueError):
            raise UsageError(
                f"--param {key!r} does not name a component parameter",
                "use source.NAME, sink.NAME or filters.K.NAME",
            ) from None
        comp["params"][name] = _convert(comp["class"], name, raw)
    return doc


def _convert(class_ref: str, name: str, raw: str) -> Any:
    cls = _import_attr(BUILTINS.get(class_ref, class_ref), "component")
    for p in getattr(cls, "params", ()):
        if p.name == name:
            try:
                return p.convert(raw)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"--param {name}={raw!r} for {class_ref}: {exc}") from None
    known = ", ".join(p.name for p in getattr(cls, "params", ())) or "none declared"
    raise UsageError(f"{class_ref} has no parameter {name!r}", f"known: {known}")


def _build_components(spec: dict[str, Any]) -> Pipeline:
    source = _instantiate(spec["source"])
    pipeline = Pipeline(source)
    for f in spec.get("filters", []):
        pipeline = pipeline.filter(_instantiate(f))
    if spec.get("sink") is not None:
        pipeline = pipeline.write(_instantiate(spec["sink"]))
    return pipeline


def _instantiate(desc: dict[str, Any]) -> Any:
    ref = desc["class"]
    cls = _import_attr(BUILTINS.get(ref, ref), "component")
    if not (isinstance(cls, type) and issubclass(cls, Component)):
        raise SpecError(f"{ref} is not a Source, Filter or Sink class")
    try:
        return cls(**desc.get("params", {}))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"cannot build {ref}: {exc}") from None


def _call_factory(ref: str, params: dict[str, Any]) -> Pipeline:
    factory = _import_attr(ref, "pipeline factory")
    if not callable(factory):
        raise SpecError(f"{ref} is not callable", "point at a function returning a Pipeline")
    try:
        pipeline = factory(**params)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"pipeline factory {ref} rejected its parameters: {exc}") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise SpecError(
            f"pipeline factory {ref} raised {type(exc).__name__}: {first}".rstrip(": "),
            "fix the factory; calling it in Python shows the traceback",
        ) from None
    if not isinstance(pipeline, Pipeline):
        raise SpecError(
            f"{ref} returned {type(pipeline).__name__}, not a Pipeline",
            "return Pipeline(source).filter(...).write(sink)",
        )
    return pipeline


def _import_attr(ref: str, what: str) -> Any:
    target, _, attr = ref.rpartition(":")
    if not target:
        raise SpecError(f"{what} {ref!r} is not MODULE:NAME or FILE.py:NAME")
    if target.endswith(".py"):
        module = _load_file(Path(target))
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise SpecError(f"cannot import module {target!r} for {what} {ref!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SpecError(f"{target} has no attribute {attr!r}", f"check the {what} name")
        obj = getattr(obj, part)
    return obj


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise SpecError(f"pipeline file {str(path)!r} does not exist", "check the path")
    import hashlib

    digest = hashlib.sha1(str(path.absolute()).encode()).hexdigest()[:10]
    name = f"{USER_MODULE_PREFIX}{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise SpecError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise SpecError(f"error while importing {path}: {type(exc).__name__}: {exc}") from None
    return module
