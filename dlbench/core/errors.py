"""The one exception type that reaches the user as a short message instead of a traceback."""

from __future__ import annotations


class DlbenchError(Exception):
    """A problem the user can fix. ``str(err)`` names the problem and the fix; ``exit_code`` is what the command
    returns (2 for bad input, 1 for a failure during training)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(DlbenchError):
    """The user stopped the command (Ctrl-C, SIGTERM): not a mistake. The message says what was kept and how to go on;
    the command exits with 130, as a shell does for an interrupt."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=130)


def first_line(err: BaseException) -> str:
    """``"Type: first line of the message"``, at most 300 characters of it: how a foreign exception is quoted in
    a one-paragraph error."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"
