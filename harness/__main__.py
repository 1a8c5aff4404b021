"""``python -m ftsafety.harness`` is the ``ftsafety`` command."""

import sys

from ftsafety.harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
