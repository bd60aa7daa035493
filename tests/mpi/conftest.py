"""Every test here starts real mpiexec processes."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/mpi/" in str(item.fspath):
            item.add_marker(pytest.mark.mpi)
