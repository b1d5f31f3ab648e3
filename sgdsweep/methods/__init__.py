"""Methods a cell can run, declared once in a registry (see :mod:`.registry`)."""

from sgdsweep.methods.registry import (
    METHODS,
    Method,
    Variable,
    get_method,
    method_table,
    register_method,
    registered,
)

__all__ = ["METHODS", "Method", "Variable", "get_method", "method_table", "register_method",
           "registered"]
