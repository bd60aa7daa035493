"""Tests of pipeline references and specs: factories in files and modules, YAML/JSON specs."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpc_curator.components import FieldStats, HDF5Sink, SyntheticSource
from hpc_curator.errors import CuratorError, SpecError, UsageError
from hpc_curator.model.pipeline import Pipeline
from hpc_curator.model.spec import build, load, make_spec, parse_params

FACTORY = """
from hpc_curator.components import FieldStats, HDF5Sink, SyntheticSource
from hpc_curator.model.pipeline import Pipeline


def build(n="4", out="out", seed="0"):
    return (
        Pipeline(SyntheticSource(n=int(n), shape="3x2", seed=int(seed)))
        .filter(FieldStats(name="stats"))
        .write(HDF5Sink(out))
    )


def strict(n):
    value = int(n)  # ValueError for a non-integer
    return Pipeline(SyntheticSource(n=value))


def not_a_pipeline():
    return [1, 2, 3]


def duplicate():
    return Pipeline(SyntheticSource(n=1)).filter(FieldStats()).filter(FieldStats())


def explode():
    raise TypeError("factory is broken")


NOT_CALLABLE = 42
"""


@pytest.fixture(autouse=True)
def forget_user_modules() -> Iterator[None]:
    """Drop modules the tests import from tmp_path so tests stay independent."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("hpc_curator_user_", "spec_test_mod_")):
            del sys.modules[name]


@pytest.fixture
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "factories.py"
    path.write_text(FACTORY)
    return path


def assert_one_line(err: CuratorError, *needles: str) -> None:
    text = err.format()
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)


# -- parse_params ---------------------------------------------------------------------------


def test_parse_params() -> None:
    assert parse_params(()) == {}
    assert parse_params(["n=5", " shape =4x4", "empty=", "expr=a=b"]) == {
        "n": "5",
        "shape": "4x4",
        "empty": "",
        "expr": "a=b",
    }
    assert parse_params(["n=1", "n=2"]) == {"n": "2"}  # the last one wins


@pytest.mark.parametrize("pair", ["n", "=5", "  =x", ""])
def test_parse_params_errors(pair: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_params(["ok=1", pair])
    assert_one_line(info.value, repr(pair), "key=value")


# -- factories in files ---------------------------------------------------------------------


def test_factory_file(factory_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "h5"
    pipeline, spec = load("factories.py:build", {"n": "6", "out": str(out)})
    assert spec == {
        "kind": "factory",
        "ref": f"{factory_file}:build",  # the path is stored absolute
        "params": {"n": "6", "out": str(out)},
    }
    assert isinstance(pipeline, Pipeline) and len(pipeline) == 6
    assert pipeline.to_spec() == spec
    assert [f.name for f in pipeline.stateful_filters] == ["stats"]
    assert pipeline.run_index(5) == [str(out / "00000005.h5")]
    assert (out / "00000005.h5").is_file()

    # the frozen spec rebuilds the same pipeline from another working directory
    monkeypatch.chdir(factory_file.anchor)
    again = build(json.loads(json.dumps(spec)))
    assert len(again) == 6 and again.to_spec() == spec


def test_factory_file_defaults_and_absolute_ref(factory_file: Path) -> None:
    spec = make_spec(f"{factory_file}:build")
    assert spec == {"kind": "factory", "ref": f"{factory_file}:build", "params": {}}
    assert len(build(spec)) == 4


# -- factories in modules -------------------------------------------------------------------


def test_factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"spec_test_mod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    pipeline, spec = load(f"{name}:build", {"n": "3", "out": str(tmp_path / "o")})
    assert spec == {
        "kind": "factory",
        "ref": f"{name}:build",
        "params": {"n": "3", "out": str(tmp_path / "o")},
    }
    assert len(pipeline) == 3
    assert build(spec).to_spec() == spec

    # dotted attribute paths work too
    (tmp_path / f"{name}_pkg").mkdir()
    (tmp_path / f"{name}_pkg" / "__init__.py").write_text(
        "class Holder:\n    from hpc_curator.model.pipeline import Pipeline as P\n"
        "    from hpc_curator.components import SyntheticSource as S\n"
        "    @staticmethod\n"
        "    def make():\n"
        "        return Holder.P(Holder.S(n=2))\n"
    )
    pipeline, _ = load(f"{name}_pkg:Holder.make")
    assert len(pipeline) == 2


# -- factory errors -------------------------------------------------------------------------


def test_missing_factory_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        make_spec(str(tmp_path / "nope.py") + ":build")
    assert_one_line(info.value, "nope.py", "does not exist")
    with pytest.raises(SpecError) as info:
        build({"kind": "factory", "ref": str(tmp_path / "gone.py") + ":build"})
    assert_one_line(info.value, "gone.py", "does not exist")


@pytest.mark.parametrize("ref", ["no_colon_here", "file.py:", ":build"])
def test_malformed_reference(ref: str) -> None:
    with pytest.raises(SpecError) as info:
        make_spec(ref)
    assert_one_line(info.value, repr(ref))


@pytest.mark.parametrize(
    ("func", "error", "needles"),
    [
        ("missing", SpecError, ["no attribute", "'missing'"]),
        ("NOT_CALLABLE", SpecError, ["NOT_CALLABLE", "not callable"]),
        ("not_a_pipeline", SpecError, ["not_a_pipeline", "returned list", "not a Pipeline"]),
        ("duplicate", SpecError, ["'fieldstats'"]),
        ("explode", UsageError, ["rejected its parameters", "factory is broken"]),
    ],
)
def test_factory_errors(
    factory_file: Path, func: str, error: type[CuratorError], needles: list[str]
) -> None:
    spec = make_spec(f"{factory_file}:{func}")
    with pytest.raises(error) as info:
        build(spec)
    assert type(info.value) is error
    assert_one_line(info.value, *needles)


@pytest.mark.parametrize(
    ("func", "params", "needles"),
    [
        ("build", {"bogus": "1"}, ["rejected its parameters", "bogus"]),  # TypeError
        ("strict", {}, ["rejected its parameters", "strict"]),  # missing argument
        ("strict", {"n": "ten"}, ["rejected its parameters", "ten"]),  # ValueError
    ],
)
def test_factory_rejecting_params(
    factory_file: Path, func: str, params: dict[str, str], needles: list[str]
) -> None:
    with pytest.raises(UsageError) as info:
        load(f"{factory_file}:{func}", params)
    assert_one_line(info.value, *needles)


def test_module_not_importable() -> None:
    with pytest.raises(SpecError) as info:
        load("hpc_curator_no_such_module_xyz:build")
    assert_one_line(info.value, "cannot import module", "hpc_curator_no_such_module_xyz")


def test_factory_file_that_fails_to_import(tmp_path: Path) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("import hpc_curator\nraise RuntimeError('kaput')\n")
    with pytest.raises(SpecError) as info:
        load(f"{bad}:build")
    assert_one_line(info.value, "broken.py", "RuntimeError", "kaput")
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def build(:\n")
    with pytest.raises(SpecError) as info:
        load(f"{syntax}:build")
    assert_one_line(info.value, "syntax.py", "SyntaxError")
    # a failed import is not cached: fixing the file makes it load
    bad.write_text(FACTORY)
    assert len(load(f"{bad}:build")[0]) == 4


def test_unknown_spec_kind() -> None:
    with pytest.raises(SpecError) as info:
        build({"kind": "pickle"})
    assert_one_line(info.value, "'pickle'")


# -- YAML / JSON component specs ------------------------------------------------------------

YAML_SPEC = """\
source:
  class: SyntheticSource
  params: {{n: 3, shape: 4x2, seed: 1}}
filters:
  - class: FieldStats
    params: {{fields: u}}
  - class: hpc_curator.components.transforms:Smooth
sink:
  class: HDF5Sink
  params: {{out_dir: {out}}}
"""


def json_doc(out: Path) -> dict[str, object]:
    return {
        "source": {"class": "SyntheticSource", "params": {"n": 3, "shape": "4x2"}},
        "filters": [{"class": "FieldStats", "params": {}}],
        "sink": {"class": "HDF5Sink", "params": {"out_dir": str(out)}},
    }


@pytest.fixture(params=["yaml", "json"])
def spec_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    if request.param == "yaml":
        path = tmp_path / "pipe.yaml"
        path.write_text(YAML_SPEC.format(out=out))
    else:
        path = tmp_path / "pipe.json"
        path.write_text(json.dumps(json_doc(out)))
    return path


def test_component_spec(spec_file: Path, tmp_path: Path) -> None:
    pipeline, spec = load(str(spec_file))
    assert spec["kind"] == "components"
    assert spec["file"] == str(spec_file.absolute())
    assert isinstance(pipeline.source, SyntheticSource)
    assert len(pipeline) == 3 and pipeline.source.shape == (4, 2)
    assert isinstance(pipeline.filters[0], FieldStats)
    assert isinstance(pipeline.sink, HDF5Sink)
    assert pipeline.to_spec() == spec
    assert pipeline.run_index(2) == [str(tmp_path / "out" / "00000002.h5")]
    assert build(json.loads(json.dumps(spec))).to_spec() == spec


def test_component_spec_overrides(spec_file: Path, tmp_path: Path) -> None:
    params = parse_params(["source.n=5", "filters.0.name=x", "sink.out_dir=" + str(tmp_path / "z")])
    pipeline, spec = load(str(spec_file), params)
    assert spec["source"]["params"]["n"] == 5  # converted with Param(int)
    assert spec["filters"][0]["params"]["name"] == "x"
    assert len(pipeline) == 5
    assert [f.name for f in pipeline.stateful_filters] == ["x"]
    assert pipeline.run_index(4) == [str(tmp_path / "z" / "00000004.h5")]
    # the file itself is untouched and a plain load still sees the original values
    assert len(load(str(spec_file))[0]) == 3


def test_component_spec_override_types(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps(
            {
                "source": {"class": "SyntheticSource", "params": {"n": 2}},
                "filters": [{"class": "Sleep"}, {"class": "Smooth"}],
            }
        )
    )
    pipeline, spec = load(str(path), {"filters.0.seconds": "0.25", "filters.1.passes": "3"})
    assert spec["filters"][0]["params"] == {"seconds": 0.25}
    assert spec["filters"][1]["params"] == {"passes": 3}
    assert spec["sink"] is None and pipeline.sink is None
    assert pipeline.filters[0].seconds == 0.25 and pipeline.filters[1].passes == 3


@pytest.mark.parametrize(
    ("key", "value", "needles"),
    [
        ("n", "5", ["'n'", "does not name"]),
        ("source", "5", ["'source'", "does not name"]),
        ("sink.out_dir", "x", ["'sink.out_dir'"]),  # the JSON spec below has no sink
        ("filters.3.name", "x", ["'filters.3.name'"]),
        ("filters.a.name", "x", ["'filters.a.name'"]),
        ("filters.0", "x", ["'filters.0'"]),
        ("bogus.n", "1", ["'bogus.n'"]),
        ("source.bogus", "1", ["SyntheticSource", "no parameter 'bogus'", "known: n"]),
        ("source.n", "five", ["n='five'", "SyntheticSource"]),
    ],
)
def test_bad_overrides(tmp_path: Path, key: str, value: str, needles: list[str]) -> None:
    path = tmp_path / "p.json"
    doc = {
        "source": {"class": "SyntheticSource", "params": {"n": 2}},
        "filters": [{"class": "FieldStats"}],
    }
    path.write_text(json.dumps(doc))
    with pytest.raises(UsageError) as info:
        make_spec(str(path), {key: value})
    assert_one_line(info.value, *needles)


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("filters: []\n", ["must be a mapping with a 'source'"]),
        ("- just\n- a list\n", ["must be a mapping"]),
        ("source: SyntheticSource\n", ["needs a 'class' key"]),
        ("source: {params: {n: 1}}\n", ["needs a 'class' key"]),
        ("source: [unclosed\n", ["cannot parse"]),
    ],
)
def test_bad_yaml_specs(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load(str(path))
    assert_one_line(info.value, "bad.yaml", *needles)


def test_bad_json_and_missing_spec(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(SpecError) as info:
        load(str(path))
    assert_one_line(info.value, "bad.json", "cannot parse")
    with pytest.raises(SpecError) as info:
        load(str(tmp_path / "absent.yml"))
    assert_one_line(info.value, "absent.yml", "does not exist")


@pytest.mark.parametrize(
    ("source", "error", "needles"),
    [
        ({"class": "NoSuchThing"}, SpecError, ["'NoSuchThing'"]),
        ({"class": "json:JSONDecoder"}, SpecError, ["json:JSONDecoder", "not a Source"]),
        ({"class": "json:nope"}, SpecError, ["no attribute 'nope'"]),
        ({"class": "no_such_pkg_q:Thing"}, SpecError, ["cannot import module"]),
        ({"class": "SyntheticSource", "params": {"n": -1}}, SpecError, ["n must be >= 0"]),
        ({"class": "SyntheticSource", "params": {"m": 1}}, SpecError, ["cannot build"]),
    ],
)
def test_bad_components(
    tmp_path: Path, source: dict[str, object], error: type[CuratorError], needles: list[str]
) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"source": source}))
    with pytest.raises(error) as info:
        load(str(path))
    assert_one_line(info.value, *needles)


def test_duplicate_names_in_component_spec(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(
        "source: {class: SyntheticSource, params: {n: 1}}\n"
        "filters: [{class: FieldStats, params: {name: s}}, {class: FieldStats}]\n"
    )
    assert len(load(str(path))[0].stateful_filters) == 2
    with pytest.raises(SpecError) as info:
        load(str(path), {"filters.1.name": "s"})
    assert_one_line(info.value, "'s'")


@pytest.mark.parametrize(
    "text",
    [
        "source: {class: SyntheticSource, params: {n: 2}}\nfilters:\n",
        "source:\n  class: SyntheticSource\n  params:\n",
    ],
    ids=["filters", "params"],
)
def test_empty_yaml_keys(tmp_path: Path, text: str) -> None:
    """An empty ``filters:`` or ``params:`` means none (YAML's null), not an error."""
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    pipeline, spec = load(str(path), {"source.n": "2"})
    assert len(pipeline.source) == 2 and list(pipeline.filters) == [] and pipeline.sink is None
    assert spec["source"]["params"] == {"n": 2}
