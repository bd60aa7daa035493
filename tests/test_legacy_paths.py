"""A duck-typed stateful filter whose ``_output_path`` is a ``pathlib.Path`` keeps getting
one (physicsnemo-curator passes a Path; its filters call ``.mkdir``/``.write_text`` on it)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import cli, read_manifest

FACTORY = """
import json
from pathlib import Path

from hpc_curator import LegacyStatefulFilter, Pipeline
from hpc_curator.components import SyntheticSource


class Counts:
    def __init__(self, out):
        self._output_path = Path(out)
        self.n = 0

    def __call__(self, items):
        for item in items:
            self.n += 1
            yield item

    def flush(self):
        self._output_path.parent.mkdir(parents=True, exist_ok=True)  # a Path method
        self._output_path.write_text(json.dumps({"n": self.n}))
        self.n = 0

    @staticmethod
    def merge(paths, out):
        total = sum(json.loads(Path(p).read_text())["n"] for p in paths)
        Path(out).write_text(json.dumps({"n": total}))


def build(out="counts/merged.json"):
    src = SyntheticSource(n=7, shape=(2,), fields=("u",))
    return Pipeline(src).filter(LegacyStatefulFilter(Counts(out), name="counts"))
"""


def test_a_path_output_path_stays_a_path(tmp_path: Path) -> None:
    (tmp_path / "f.py").write_text(FACTORY)
    d = tmp_path / "run"
    proc = cli("run", f"{tmp_path}/f.py:build", "--run-dir", str(d), "--commit-every", "3",
               "-q", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = read_manifest(d)["outputs"]["counts"]["path"]
    assert json.loads(Path(out).read_text()) == {"n": 7}
