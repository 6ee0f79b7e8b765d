"""`phi1` with each stage's name in PHI1_AUDIT_STAGE while it runs (for the
file-access audit in sitecustomize.py). Usage: python phi1_audited.py ARGS..."""

import os
import sys

from phi1 import pipeline
from phi1.cli import main

_run_stage = pipeline.Pipeline.run_stage


def run_stage(self, spec, *args, **kwargs):
    os.environ["PHI1_AUDIT_STAGE"] = spec.name
    try:
        return _run_stage(self, spec, *args, **kwargs)
    finally:
        os.environ.pop("PHI1_AUDIT_STAGE", None)


pipeline.Pipeline.run_stage = run_stage

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
