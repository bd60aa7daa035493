"""Bad input is one line and exit 2, never a traceback or a silent truncation (issue 21).

- ``partition_indices`` returning floats (even whole ones), strings, bools, ``None``, or
  raising: the CLI exits 2 with one line naming the component and the value; the Python API
  raises a ``ValueError`` with that line; numpy integers stay accepted.
- an explicit index list of floats (``run_pipeline(indices=[0.5])``, ``Run.invalidate([2.9])``)
  is refused, not truncated.
- a malformed config file (a value of the wrong type, a profile that is not a table, bytes
  that are not UTF-8): one line naming the file, exit 2.

Real ``hpc-curate`` subprocesses.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import cli

USER = textwrap.dedent(
    """
    import numpy as np
    from hpc_curator import Pipeline, Source


    class Src(Source):
        def __init__(self, mode: str = "float") -> None:
            self.mode = mode

        def __len__(self):
            return 4

        def __getitem__(self, index):
            yield {"index": index}

        def partition_indices(self, indices):
            return {
                "float": lambda: [[0.5, 1.7]],
                "whole": lambda: [[3.0, 2]],
                "npfloat": lambda: [np.array([0.0, 1.0])],
                "str": lambda: [["0", "1"]],
                "bool": lambda: [[True, 2]],
                "none": lambda: [[None, 2]],
                "flat": lambda: [0, 1],
                "raise": lambda: 1 / 0,
                "numpy": lambda: [[np.int64(0), np.int32(1)], np.array([2, 3])],
            }[self.mode]()


    def build(mode: str = "float") -> Pipeline:
        return Pipeline(Src(mode))
    """
)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single ``Error: ...`` line of a failed command (and nothing else on stderr)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


BAD_GROUPS = [
    ("float", "0.5 (float)"),
    ("whole", "3.0 (float)"),
    ("npfloat", "float64"),
    ("str", "'0' (str)"),
    ("bool", "True (bool)"),
    ("none", "None (NoneType)"),
    ("flat", "holding 0, not a list of lists"),
    ("raise", "raised ZeroDivisionError: division by zero"),
]


@pytest.mark.parametrize(("mode", "value"), BAD_GROUPS)
def test_partition_indices_of_non_integers_is_exit_2_in_one_line(
    tmp_path: Path, mode: str, value: str
) -> None:
    (tmp_path / "user.py").write_text(USER)
    proc = cli(
        "run", "user.py:build", "-p", f"mode={mode}", "--run-dir", str(tmp_path / "r"), "-q",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert "Src.partition_indices" in line and value in line, line
    if mode not in ("raise", "flat"):
        assert "floats are refused even when whole" in line  # the rule is said


def test_partition_indices_refused_leaves_no_run_dir(tmp_path: Path) -> None:
    (tmp_path / "user.py").write_text(USER)
    for mode in ("float", "raise"):
        d = tmp_path / f"r-{mode}"
        proc = cli("run", "user.py:build", "-p", f"mode={mode}", "--run-dir", str(d), "-q",
                   cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert not d.exists(), sorted(p.name for p in d.iterdir())


def test_numpy_integer_groups_stay_accepted(tmp_path: Path) -> None:
    (tmp_path / "user.py").write_text(USER)
    proc = cli(
        "run", "user.py:build", "-p", "mode=numpy", "--run-dir", str(tmp_path / "r"), "-q",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r" / "groups.npy").exists()


def test_python_api_raises_a_value_error_with_the_same_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpc_curator import run_pipeline

    (tmp_path / "user_api.py").write_text(USER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_api  # type: ignore[import-not-found]

    with pytest.raises(ValueError, match=r"Src\.partition_indices returned 0\.5 \(float\)"):
        run_pipeline(user_api.build("float"), run_dir=tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match=r"Src\.partition_indices raised ZeroDivisionError"):
        run_pipeline(user_api.build("raise"), run_dir=tmp_path / "b", progress=False)
    # an explicit index list of floats: refused, not truncated to [0, 1]
    with pytest.raises(ValueError, match=r"1\.7 \(float\), not an integer index"):
        run_pipeline(user_api.build("numpy"), indices=[1, 1.7], run_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_invalidate_refuses_a_float_index(tmp_path: Path) -> None:
    from hpc_curator import Run, run_pipeline
    from hpc_curator.components import SyntheticSource
    from hpc_curator.model.pipeline import Pipeline

    d = tmp_path / "r"
    run_pipeline(Pipeline(SyntheticSource(n=4, shape=(2,))), run_dir=d, progress=False)
    with pytest.raises(ValueError, match=r"2\.9 \(float\)"):
        Run(d).invalidate([2.9])  # not index 2
    with pytest.raises(ValueError, match=r"2\.0 \(float\)"):
        Run(d).invalidate(2.0)


# -- config files ------------------------------------------------------------------------------


CONFIGS = [
    (b"[defaults]\ncommit-every = [1, 2]\n", "commit-every = [1, 2] is an array"),
    (b"[defaults]\nindex-timeout = 1979-05-27\n", "a date is not an option value"),
    (b"[defaults]\ncommit-every = 'many'\n", "commit-every = 'many'"),
    (b"[defaults]\nmpiexec-arg = [{a = 1}]\n", "a table is not an option value"),
    (b"[profiles]\ngpu = 5\n", "profile 'gpu' is an integer, not a table"),
    (b"default_profile = 5\n", "default_profile = 5 is an integer"),
    (b"[defaults]\nrun-dir = '\xff\xfe'\n", "is not UTF-8 text (byte 0xff at offset 22)"),
    (b"\xef\xbb\xbf\xff[defaults]\n", "is not UTF-8 text"),
]


@pytest.mark.parametrize(("text", "message"), CONFIGS)
def test_malformed_config_is_one_line_naming_the_file(
    tmp_path: Path, text: bytes, message: str
) -> None:
    user = tmp_path / "config.toml"
    user.write_bytes(text)
    (tmp_path / "user.py").write_text(USER)
    proc = cli(
        "run", "user.py:build", "-p", "mode=numpy", "--run-dir", str(tmp_path / "r"), "-q",
        cwd=tmp_path,
        env={"HPC_CURATE_CONFIG": str(user), "HPC_CURATE_SITE_CONFIG": str(tmp_path / "none")},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert str(user) in line and message in line, line
    assert not (tmp_path / "r").exists()
