"""Helpers for the corpus tests: tiny trees, JSONL files, configs, CLI runs."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PHI1 = str(Path(sys.executable).with_name("phi1"))
REPO = Path(__file__).resolve().parents[2]


def tag(i: int) -> str:
    """A letters-only name for i (MinHash normalises digits away, so names must differ in letters)."""
    return "".join(chr(97 + (i // 26**k) % 26) for k in range(3))


def snippet(i: int) -> str:
    """A distinct, valid, non-trivial Python module: no two are near duplicates."""
    t = tag(i)
    return textwrap.dedent(f'''\
        """Module {t}: helpers for {t} processing."""

        import math


        def score_{t}(values_{t}):
            """Return the {t} score of values_{t}."""
            total_{t} = 0
            for v_{t} in values_{t}:
                total_{t} += math.sqrt(abs(v_{t})) * {i + 1}
            return total_{t} / max(len(values_{t}), 1)


        class Thing{t.title()}:
            def __init__(self, size_{t}):
                self.size_{t} = size_{t}

            def every_{t}(self):
                return [k_{t} for k_{t} in range(self.size_{t}) if k_{t} % {i % 5 + 2} == 0]
        ''')


def make_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    return root


def write_jsonl(path: Path, lines: list[dict | str]) -> Path:
    """Records (dicts) or raw lines (str, e.g. broken JSON); gzip when the name ends in .gz."""
    body = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(body)
    else:
        path.write_text(body)
    return path


def write_config(path: Path, root: Path, ingest: str, name: str = "t") -> Path:
    path.write_text(f'[run]\nroot = "{root}"\nname = "{name}"\n\n' + textwrap.dedent(ingest))
    return path


def run_cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PHI1, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]
