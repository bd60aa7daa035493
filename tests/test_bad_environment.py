"""A bad environment is one line and the documented exit code (issue 21).

- ``run --ranks`` with a ``--python`` that does not exist or is not a Python with hpc-curator
  (``/bin/true``), or a ``--launch-prefix`` command that does not exist: exit 5 (launcher
  error), one line, nothing created; so is a rank command that exits before the run started.
- resuming a run dir whose ``run.json`` has another layout (not an object, another format,
  missing or mistyped fields): exit 4 (run dir conflict or damage), one line naming the file.

Real ``hpc-curate`` subprocesses and real ``mpiexec``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, cli
from tests.test_bad_input import one_error_line

LAUNCHES = [
    (["--python", "/no/such/python3"], "--python: /no/such/python3 does not exist"),
    (["--python", "/bin/true"], "--python /bin/true is not a Python that can import"),
    (["--python", "/bin/false"], "--python /bin/false is not a Python that can import"),
    (["--python", "/etc"], "--python: /etc is not an executable file"),
    (["--launch-prefix", "no-such-wrapper-cmd -x"], "command 'no-such-wrapper-cmd' not found"),
    (["--launch-prefix", "/no/such/wrapper"], "--launch-prefix: /no/such/wrapper does not"),
    (["--launch-prefix", "true"], "mpiexec -n 2 exited before the run started"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("extra", "message"), LAUNCHES)
def test_a_rank_command_that_cannot_run_is_exit_5_in_one_line(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    d = tmp_path / "run"
    proc = cli("run", EXAMPLE, "-p", "n=4", "--ranks", "2", "--run-dir", str(d), "-q", *extra,
               timeout=100)  # fmt: skip
    assert proc.returncode == 5, proc.stderr
    assert message in one_error_line(proc)
    assert not d.exists()


@pytest.mark.timeout(120)
def test_a_real_python_still_runs(tmp_path: Path) -> None:
    d = tmp_path / "run"
    proc = cli(
        "run", EXAMPLE, "-p", "n=4", "--ranks", "2", "--run-dir", str(d), "-q",
        "--python", sys.executable, "--launch-prefix", "env HPC_TEST_PREFIX=1", timeout=100,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


# -- run.json of another layout ----------------------------------------------------------------


def _good(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    """A finished run and its run.json."""
    d = tmp_path / "run"
    cli("run", EXAMPLE, "-p", "n=4", "--run-dir", str(d), "-q", check=True)
    return d, json.loads((d / "run.json").read_text())


def _with(meta: dict[str, object], **changes: object) -> dict[str, object]:
    out = dict(meta)
    for key, value in changes.items():
        if value is ...:
            out.pop(key)
        else:
            out[key] = value
    return out


#: (name, how to make the bad run.json from a good one, what the one line says)
LAYOUTS_NOW = [
    ("empty object", lambda m: {}, "unknown format None"),
    ("other program", lambda m: {"name": "x", "version": 3}, "unknown format None"),
    ("other format", lambda m: _with(m, format="hpc-curator.run/9"), "unknown format"),
]
LAYOUTS_NEED_LOAD_CHECK = [
    ("array", lambda m: [1, 2], "it holds an array, not an object"),
    ("string", lambda m: "run", "it holds a string, not an object"),
    ("no indices", lambda m: _with(m, indices=...), "no 'indices'"),
    ("indices a number", lambda m: _with(m, indices=5), "'indices' is a number"),
    (
        "ranges garbage",
        lambda m: _with(m, indices={"kind": "ranges", "ranges": "abc"}),
        "ranges are not [start, stop, step] integer triples",
    ),
    ("spec a number", lambda m: _with(m, spec=5), "'spec' is a number"),
    ("no spec_hash", lambda m: _with(m, spec_hash=...), "no 'spec_hash'"),
    ("settings a number", lambda m: _with(m, settings=7), "'settings' is a number"),
]


def _resume_refused(d: Path, make: object, message: str, tmp_path: Path) -> None:
    good = json.loads((d / "run.json").read_text())
    (d / "run.json").write_text(json.dumps(make(good)))  # type: ignore[operator]
    for args in (["run", EXAMPLE, "-p", "n=4", "--run-dir", str(d), "-q"], ["status", str(d)]):
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 4, (args[0], proc.stderr)
        line = one_error_line(proc)
        assert str(d / "run.json") in line and message in line, line


@pytest.mark.parametrize(("name", "make", "message"), LAYOUTS_NOW, ids=[c[0] for c in LAYOUTS_NOW])
def test_run_json_of_another_format_is_exit_4_naming_it(
    tmp_path: Path, name: str, make: object, message: str
) -> None:
    d, _ = _good(tmp_path)
    _resume_refused(d, make, message, tmp_path)


def test_run_json_of_another_layout_is_exit_4_naming_it(tmp_path: Path) -> None:
    d, good = _good(tmp_path)
    failures = []
    for name, make, message in LAYOUTS_NEED_LOAD_CHECK:
        try:
            _resume_refused(d, make, message, tmp_path)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
        (d / "run.json").write_text(json.dumps(good))
    assert not failures, "\n".join(failures)
