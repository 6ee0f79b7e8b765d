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


@pytest.fixture
def repo_root() -> Path:
    return REPO
