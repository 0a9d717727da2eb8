"""The one exception type for user mistakes.

A :class:`UserError` message is one line that names what was wrong, what was expected, what
was received and what to do.  The command line prints it without a traceback (exit code 2;
``--debug`` or ``ANYSAT_LITE_DEBUG=1`` shows the traceback).  It subclasses ``ValueError``,
so code that caught ``ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """A mistake in the user's input (command line, config, files, tensors), with the fix in the message."""
