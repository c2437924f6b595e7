"""The one error type for user mistakes.

A ``UserError`` carries a one-line message that names the file, row or field at
fault and how to fix it. ``rectool.cli.main`` prints it as ``error: <message>``
on stderr and exits with code 2, without a traceback (``RECTOOL_DEBUG=1`` shows
the traceback). Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import os

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A mistake the user can fix: bad path, malformed row, missing column, config typo."""

    def __init__(self, message: str) -> None:
        # keep it on one line whatever the caller passed in
        super().__init__(" ".join(str(message).split()))


def debug_enabled() -> bool:
    """``RECTOOL_DEBUG=1`` turns one-line errors back into full tracebacks."""
    return os.environ.get("RECTOOL_DEBUG", "").strip() not in ("", "0", "false", "no")
