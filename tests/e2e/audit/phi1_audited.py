"""`phi1` with each stage's name in the file PHI1_AUDIT_STAGE_FILE while it runs
(for the file-access audit in sitecustomize.py). Usage: python phi1_audited.py ARGS..."""

import os
import sys

from phi1 import pipeline
from phi1.cli import main

_run_stage = pipeline.Pipeline.run_stage


def _say_stage(name: str) -> None:
    with open(os.environ["PHI1_AUDIT_STAGE_FILE"], "w") as fh:
        fh.write(name)


def run_stage(self, spec, *args, **kwargs):
    _say_stage(spec.name)
    try:
        return _run_stage(self, spec, *args, **kwargs)
    finally:
        _say_stage("")


pipeline.Pipeline.run_stage = run_stage

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
