"""``python -m ozw``: the same as the ``ozw`` command."""

import sys

from ozw.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
