#!/usr/bin/env python3
"""The lossy-link emulator from a source checkout: ``python tools/netem.py ...`` is
``python -m kcpgo netem ...`` (:mod:`kcpgo.cli.netem`, whose docstring describes the relay, its
flags and its ``LISTENING``/``STATS`` output). Tests and tools use the library:
``from kcpgo.testing import Impairment, Relay, RelayProcess``.

    python tools/netem.py --upstream 127.0.0.1:29900 --listen 127.0.0.1:29901 \\
        --loss 10% --delay 25ms --reorder 1% --duplicate 1% --seed 7
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kcpgo.cli.netem import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
