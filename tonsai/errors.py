"""The error a stage raises for bad input. Kept apart from tonsai.cli so that library modules do not
import the command-line module to report a problem; scripts turn it into one line and exit 1
(:func:`tonsai.cli.run_main`)."""

from __future__ import annotations


class StageError(RuntimeError):
    """A user-facing error: bad input, with a message that names the file, line or field and says what to do."""
