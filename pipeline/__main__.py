"""``python -m pipeline``: see pipeline.cli.main."""

import sys

from pipeline.cli.main import main

if __name__ == "__main__":  # worker processes re-import this module; only the CLI runs main
    sys.exit(main(sys.argv[1:]))
