"""Installed in every Python process of an audited `phi1` run (PYTHONPATH):
records each file opened under the run directory, with the stage running then.

`phi1_audited.py` writes the running stage's name into the file named by
PHI1_AUDIT_STAGE_FILE; every process reads it when it opens a file under the
run (an environment variable would not do: a forkserver started during one
stage serves the tasks of later ones with its first environment).
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
        try:
            p = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if not p.startswith(_RUN + os.sep):
            return
        _busy = True
        try:
            try:
                fd = os.open(os.environ["PHI1_AUDIT_STAGE_FILE"], os.O_RDONLY)
                try:
                    stage = os.read(fd, 200).decode().strip()
                finally:
                    os.close(fd)
            except (KeyError, OSError):
                stage = ""
            if not stage:
                return
            fd = os.open(_OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{stage}\t{args[1]}\t{p}\n".encode("utf-8", "surrogateescape"))
            finally:
                os.close(fd)
        finally:
            _busy = False

    sys.addaudithook(_hook)
