"""Fixtures of the corpus tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def quiet_loguru():
    """In-process datatrove runs change loguru's handlers; put datatrove's default back."""
    yield
    from datatrove.utils.logging import setup_default_logger

    setup_default_logger()
