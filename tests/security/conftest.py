from __future__ import annotations

import pytest

from sandbox_kit import Arena


@pytest.fixture(scope="session")
def arena():
    """Canaries outside the sandbox, shared by every hostile batch (each asserts them untouched)."""
    a = Arena()
    yield a
    a.close()
