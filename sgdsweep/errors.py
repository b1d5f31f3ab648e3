"""The one exception users see for bad input."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad input. The message is one line ``"field: problem"`` that starts with the offending field.

    ``ConfigError(field, problem)``; ``ConfigError("field: problem")`` (one argument) is read
    the same way. ``field`` and ``problem`` are kept as attributes, so callers that re-address
    an error (a section prefix, another field name) build a new one from them instead of
    slicing the message.
    """

    def __init__(self, field: str, problem: str | None = None) -> None:
        if problem is None:
            head, sep, rest = field.partition(": ")
            field, problem = (head, rest) if sep else ("", field)
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)
