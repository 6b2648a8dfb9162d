"""``python -m kcpgo <command>``: the command line (commands in :mod:`kcpgo.cli`)."""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
