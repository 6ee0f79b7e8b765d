"""Errors that reach the user as one clear line (no traceback)."""

from __future__ import annotations


class Phi1Error(Exception):
    """A user-facing error: bad input, missing upstream output, unusable environment.

    The CLI prints ``error: <message>`` and exits non-zero. The message must
    name what is wrong and where (file, line, key, stage).
    """


class InputError(Phi1Error):
    """An input path or file is missing, empty or malformed."""


class SkipStage(Exception):
    """Raised by a stage that cannot run in this configuration (e.g. `grade`
    without an endpoint). The pipeline prints the reason on one line, writes
    no manifest, and skips the stages that depend on it."""
