"""The one exception users see for bad input."""


class ConfigError(ValueError):
    """Bad input. The message is one line that starts with the offending field."""
