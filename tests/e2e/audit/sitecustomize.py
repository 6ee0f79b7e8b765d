"""Installed in every Python process of an audited `phi1` run (PYTHONPATH):
records each file opened under the run directory, with the stage running then.

`phi1_audited.py` sets PHI1_AUDIT_STAGE around each stage; processes that a
stage starts (datatrove tasks, spawned worker pools) inherit it.
"""

import os
import sys

_OUT = os.environ.get("PHI1_AUDIT_FILE")
_RUN = os.environ.get("PHI1_AUDIT_RUN")

if _OUT and _RUN:
    _busy = False

    def _hook(event, args):
        global _busy
        if event != "open" or _busy:
            return
        path = args[0]
        if isinstance(path, int) or path is None:
            return
        stage = os.environ.get("PHI1_AUDIT_STAGE")
        if not stage:
            return
        try:
            p = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if not p.startswith(_RUN + os.sep):
            return
        _busy = True
        try:
            fd = os.open(_OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{stage}\t{args[1]}\t{p}\n".encode("utf-8", "surrogateescape"))
            finally:
                os.close(fd)
        finally:
            _busy = False

    sys.addaudithook(_hook)
