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


def read_manifest(stage_dir: Path, *, check_fields: bool = True) -> dict[str, Any]:
    """The manifest in ``stage_dir`` ({} when there is none); a corrupt one is an error.

    ``check_fields``: also refuse fields the pipeline reads that have the
    wrong type (a hand edit). Readers that take each field as it comes (the
    report: a bad field costs its figure, not the section) pass False."""
    path = Path(stage_dir) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except NotADirectoryError:
        raise Phi1Error(f"{stage_dir} is a file, not a stage folder: move it out of the run folder "
                        "(phi1 does not delete what it did not write)") from None
    except OSError as e:
        raise Phi1Error(f"cannot read manifest {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Phi1Error(f"corrupt manifest {path}: {e}; delete that stage folder to re-run it") from None
    if not isinstance(data, dict):
        raise Phi1Error(f"corrupt manifest {path}: not a JSON object; delete that stage folder to re-run it")
    for key, types, what in (_FIELDS if check_fields else ()):
        if key in data and not (isinstance(data[key], types) and not isinstance(data[key], bool)
                                and _inner_ok(key, data[key])):
            raise Phi1Error(f"corrupt manifest {path}: {key!r} must be {what}, got {json.dumps(data[key])[:60]}; "
                            "delete that stage folder to re-run it")
    return data


# The fields the pipeline itself reads (staleness, the summary, the run order): a
# manifest edited by hand into other types is one line, not a traceback mid-run.
_FIELDS = (
    ("status", str, "a string"),
    ("run_id", str, "a string"),
    ("config_hash", str, "a string"),
    ("finished_at", str, "a string"),
    ("inputs", dict, "an object of strings"),
    ("failed", int, "an integer"),
    ("timings", dict, "an object with a number 'seconds'"),
    ("summary", list, "a list of strings"),
    ("datasets", dict, "an object"),
    ("outputs", dict, "an object"),
    ("counts", dict, "an object"),
    ("metrics", dict, "an object"),
)


def _inner_ok(key: str, value: Any) -> bool:
    if key == "inputs":
        return all(isinstance(v, str) for v in value.values())
    if key == "summary":
        return all(isinstance(v, str) for v in value)
    if key == "timings":
        secs = value.get("seconds", 0)
        return isinstance(secs, (int, float)) and not isinstance(secs, bool)
    if key == "failed":
        return value >= 0
    return True


_VERSIONED = ("phi1", "torch", "transformers", "tokenizers", "datatrove", "scikit-learn",
              "sentence-transformers", "numpy", "httpx")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out
