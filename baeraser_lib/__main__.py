"""`python -m baeraser_lib COMMAND ...`: the `baeraser` command without its console script."""

import sys

from .lab.cli import main

sys.exit(main())
