"""The fingerprint covers what runs: helper modules the factory imports and the modules of
wrapped components, not only the factory file and the components' own classes."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import cli

FACTORY = """
from hpc_curator import LegacyStatefulFilter, Pipeline
from hpc_curator.components import SyntheticSource
import helpers
from legacy_means import Means


def build(out: str = "means") -> Pipeline:
    p = Pipeline(SyntheticSource(n=8, shape=(4,), fields=("u",)))
    return p.filter(helpers.Scale()).filter(LegacyStatefulFilter(Means(out), name="means"))
"""

HELPERS = """
from hpc_curator import Filter

FACTOR = 1.0


class Scale(Filter):
    def __call__(self, items):
        for item in items:
            yield {**item, "u": item["u"] * FACTOR}
"""

MEANS = '''
import json


class Means:
    """physicsnemo-curator's duck-typed stateful filter: flush() to _output_path, merge."""

    def __init__(self, out):
        self._output_path = out
        self.total = 0.0

    def __call__(self, items):
        for item in items:
            self.total += float(item["u"].sum())
            yield item

    def flush(self):
        with open(self._output_path, "w") as fh:
            json.dump({"total": self.total}, fh)
        self.total = 0.0

    @staticmethod
    def merge(paths, out):
        total = sum(json.load(open(p))["total"] for p in paths)
        with open(out, "w") as fh:
            json.dump({"total": total}, fh)
'''


def _setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    code = tmp_path / "code"
    code.mkdir()
    (code / "factory.py").write_text(FACTORY)
    (code / "helpers.py").write_text(HELPERS)
    (code / "legacy_means.py").write_text(MEANS)
    env = {"PYTHONPATH": os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")])}
    return code, env


def test_an_edited_helper_or_wrapped_module_is_named_and_refused(tmp_path: Path) -> None:
    code, env = _setup(tmp_path)
    d = tmp_path / "run"
    args = ("run", f"{code}/factory.py:build", "--run-dir", str(d), "-q")
    first = cli(*args, "--indices", "0:4", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    for name, edit in (("helpers.py", "FACTOR = 2.0"), ("legacy_means.py", "# edited")):
        path = code / name
        original = path.read_text()
        path.write_text(original.replace("FACTOR = 1.0", edit) + f"\n{edit}\n")
        refused = cli(*args, env=env, cwd=tmp_path)
        assert refused.returncode == 4, refused.stderr
        assert f"{name} (edited)" in refused.stderr and "Traceback" not in refused.stderr
        path.write_text(original)
    again = cli(*args, env=env, cwd=tmp_path)  # the same code again: resumes
    assert again.returncode == 0, again.stderr
