"""A finished stage's ``manifest.json``: reading it, and what goes into one.

The pipeline writes a manifest as the last act of a stage (then renames the
stage's ``.partial`` folder); its presence with ``status = "done"`` is what
"finished" means. See `phi1.pipeline` for the fields.
"""

from __future__ import annotations

import contextlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from phi1.errors import Phi1Error

MANIFEST = "manifest.json"


def read_manifest(stage_dir: Path) -> dict[str, Any]:
    """The manifest in ``stage_dir`` ({} when there is none); a corrupt one is an error."""
    path = Path(stage_dir) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Phi1Error(f"corrupt manifest {path}: {e}; delete that stage folder to re-run it") from None
    if not isinstance(data, dict):
        raise Phi1Error(f"corrupt manifest {path}: not a JSON object; delete that stage folder to re-run it")
    return data


_VERSIONED = ("phi1", "torch", "transformers", "tokenizers", "datatrove", "scikit-learn",
              "sentence-transformers", "numpy", "httpx")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out
