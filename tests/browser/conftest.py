"""Browser tests: they drive headless Chromium and carry the ``browser`` marker."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``browser`` marker (also listed in pyproject.toml)."""
    config.addinivalue_line("markers", "browser: drives headless chromium")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this directory is a browser test."""
    for item in items:
        if "tests/browser/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.browser)
