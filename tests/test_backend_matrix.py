"""Every backend runs every pipeline the sequential backend runs, however it was given.

The matrix: backends (sequential, process_pool, loky, dask, mpi) x ways of giving the pipeline
(a file spec whose components are defined in that file, a module spec, a YAML spec, objects
built in ``__main__``), from the CLI and from ``run_pipeline``. Every cell is checked for the
exact merged state (FieldStats equal to the reference, every index once in the manifest) and
for progress output. The user's code lives in a temporary directory outside the source tree,
as it would on a cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT, assert_stats_equal, cli, manifest_rows, read_manifest, stats

N = 24
BACKENDS = ["sequential", "process_pool", "loky", "dask", "mpi"]

USER_FILE = textwrap.dedent(
    """
    from hpc_curator import Filter, Pipeline, StatefulFilter
    from hpc_curator.components import FieldStats, SyntheticSource


    class Shift(Filter):
        '''Defined in the user's own file: add ``by`` to field u.'''

        def __init__(self, by: float = 1.0) -> None:
            self.by = float(by)

        def __call__(self, items):
            for item in items:
                yield {**item, "u": item["u"] + self.by}


    def build(n: str = "24") -> Pipeline:
        return (
            Pipeline(SyntheticSource(n=int(n), shape=(4, 3), fields=("u",)))
            .filter(Shift(by=2.5))
            .filter(FieldStats(name="stats"))
        )
    """
)

YAML = textwrap.dedent(
    f"""
    source: {{class: SyntheticSource, params: {{n: {N}, shape: [4, 3], fields: [u]}}}}
    filters:
      - {{class: usershift:Shift, params: {{by: 2.5}}}}
      - {{class: FieldStats, params: {{name: stats}}}}
    """
)

# run_pipeline from a script: the pipeline is built from objects, in four ways
DRIVER = textwrap.dedent(
    """
    import json, sys
    from hpc_curator import Filter, Pipeline, run_pipeline
    from hpc_curator.components import FieldStats, SyntheticSource


    class MainShift(Filter):
        '''Defined in __main__: no other process can import it.'''

        def __init__(self, by: float = 1.0) -> None:
            self.by = float(by)

        def __call__(self, items):
            for item in items:
                yield {**item, "u": item["u"] + self.by}


    def pipeline(way: str) -> Pipeline:
        if way == "file":
            from hpc_curator.model.spec import load
            return load("userpipe.py:build", {"n": "N_"})[0]
        if way == "module":
            import usershift
            return usershift.build("N_")
        if way == "yaml":
            from hpc_curator.model.spec import load
            return load("pipeline.yaml")[0]
        return (
            Pipeline(SyntheticSource(n=N_, shape=(4, 3), fields=("u",)))
            .filter(MainShift(by=2.5))
            .filter(FieldStats(name="stats"))
        )


    if __name__ == "__main__":
        backend, way, run_dir = sys.argv[1:]
        out = run_pipeline(
            pipeline(way), backend=backend, n_jobs=2, run_dir=run_dir, commit_every=5
        )
        print(json.dumps({"status": out.result.status, "counts": out.result.counts}))
    """
).replace("N_", str(N))


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's working directory: a pipeline file, a module, a YAML spec, a script."""
    d = tmp_path_factory.mktemp("user")
    (d / "userpipe.py").write_text(USER_FILE)
    (d / "usershift.py").write_text(USER_FILE)  # the same components, imported by name
    (d / "pipeline.yaml").write_text(YAML)
    (d / "driver.py").write_text(DRIVER)
    return d


def user_env(user_dir: Path) -> dict[str, str]:
    """The user's module is importable (PYTHONPATH), and so is this checkout's package."""
    paths = [str(user_dir), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}


@pytest.fixture(scope="module")
def reference(user_dir: Path) -> dict[str, dict[str, float]]:
    """FieldStats of a sequential run of the file spec."""
    d = user_dir / "reference"
    cli("run", "userpipe.py:build", "--run-dir", str(d), "-q", cwd=user_dir, check=True)
    ref = stats(d)
    assert ref["u"]["count"] == N * 12 and abs(ref["u"]["mean"] - 2.5) < 0.5  # Shift ran
    return ref


def check_exact(run_dir: Path, reference: dict[str, dict[str, float]]) -> None:
    doc = read_manifest(run_dir)
    assert doc["status"] == "complete", doc["counts"]
    assert doc["counts"] == {"total": N, "ok": N, "failed": 0, "pending": 0}
    assert [r["index"] for r in manifest_rows(run_dir)] == list(range(N))
    assert_stats_equal(stats(run_dir), reference)


def backend_args(backend: str) -> list[str]:
    if backend == "mpi":
        return ["--ranks", "2"]
    return ["--backend", backend, "-j", "2"]


def skip_missing(backend: str) -> None:
    need = {"loky": "joblib", "dask": "dask", "mpi": "mpi4py"}.get(backend)
    if need:
        pytest.importorskip(need)


@pytest.mark.mpi
@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "way,spec",
    [("file", "userpipe.py:build"), ("module", "usershift:build"), ("yaml", "pipeline.yaml")],
)
def test_cli_matrix(
    user_dir: Path, reference: dict[str, dict[str, float]], backend: str, way: str, spec: str
) -> None:
    skip_missing(backend)
    d = user_dir / f"cli-{way}-{backend}"
    proc = cli(
        "run",
        spec,
        *backend_args(backend),
        "--run-dir",
        str(d),
        "--commit-every",
        "5",
        cwd=user_dir,
        env=user_env(user_dir),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    check_exact(d, reference)
    # progress lines in a log (not a TTY) for every backend
    assert f"{backend}: {N}/{N} done, 0 failed" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.mpi
@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("way", ["file", "module", "yaml", "main"])
def test_run_pipeline_matrix(
    user_dir: Path, reference: dict[str, dict[str, float]], backend: str, way: str
) -> None:
    skip_missing(backend)
    d = user_dir / f"api-{way}-{backend}"
    proc = subprocess.run(
        [sys.executable, "driver.py", backend, way, str(d)],
        cwd=user_dir,
        env={**os.environ, **user_env(user_dir)},
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "complete", result
    check_exact(d, reference)
    assert f"{backend}: {N}/{N} done" in proc.stderr, proc.stderr[-2000:]  # progress shown


def test_objects_that_cannot_travel_are_refused_in_one_line(tmp_path: Path) -> None:
    """A pipeline holding an open file cannot reach a worker: one line, nothing created."""
    script = tmp_path / "bad.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from hpc_curator import Filter, Pipeline, run_pipeline
            from hpc_curator.components import SyntheticSource
            from hpc_curator.errors import CuratorError

            class Holds(Filter):
                def __init__(self) -> None:
                    self.lock = __import__("threading").Lock()
                def __call__(self, items):
                    yield from items

            if __name__ == "__main__":
                p = Pipeline(SyntheticSource(n=4, shape=(2,), fields=("u",))).filter(Holds())
                try:
                    run_pipeline(p, backend="process_pool", n_jobs=2, run_dir=sys.argv[1])
                except CuratorError as exc:
                    print(exc.format())
                    sys.exit(exc.exit_code)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot be sent to other processes" in proc.stdout
    assert len(proc.stdout.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
