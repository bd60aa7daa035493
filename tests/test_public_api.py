"""Every public name of ``hpc_curator`` imports (the lazy map points at real attributes)."""

from __future__ import annotations

import subprocess
import sys

import hpc_curator


def test_every_name_in_all_resolves() -> None:
    for name in hpc_curator.__all__:
        value = getattr(hpc_curator, name)
        assert value is not None, name
        if name != "__version__":
            assert getattr(value, "__name__", name) == name, name


def test_star_import_in_a_fresh_interpreter() -> None:
    code = "from hpc_curator import *; print(RunSettings.__name__, RunResult.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["RunSettings", "RunResult"]
