"""Every test here is the store's contract: it runs on both engines."""
from __future__ import annotations

import pytest

ENGINES = ["sqlite", "postgresql"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_url" in metafunc.fixturenames:
        metafunc.parametrize("store_url", ENGINES, indirect=True)
