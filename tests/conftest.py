"""Shared fixtures. Tests run offline on 2 CPU cores; keep them fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PHI1 = str(Path(sys.executable).with_name("phi1"))

# Offline everywhere: nothing may reach the Hugging Face hub from a test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# An exception no check foresaw raises with its traceback in tests (users get one line and a saved
# traceback): a test that expects a one-line error must get it from a real check, not the CLI's catch-all.
os.environ.setdefault("PHI1_TRACEBACK", "1")


@pytest.fixture
def repo_root() -> Path:
    return REPO
