"""The command line: ``python -m pipeline sweep | status | report | submit``."""
