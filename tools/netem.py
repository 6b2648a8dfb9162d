#!/usr/bin/env python3
"""The lossy-link emulator (a UDP relay on loopback that impairs traffic like Linux netem) from
the command line: ``python tools/netem.py ...`` is ``python -m kcpgo.testing.relay ...``, whose
docstring describes the relay, its flags and its ``LISTENING``/``STATS`` output. Tests and
tools use the library: ``from kcpgo.testing import Impairment, Relay, RelayProcess``.

    python tools/netem.py --upstream 127.0.0.1:29900 --listen 127.0.0.1:29901 \\
        --both loss=10%,delay=25ms,reorder=1%,duplicate=1% --seed 7
"""
from kcpgo.testing.relay import main

if __name__ == "__main__":
    raise SystemExit(main())
