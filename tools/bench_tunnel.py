#!/usr/bin/env python3
"""``tools/bench.py tunnel``: TCP through kcptun tunnels, kcptun's and ours.

A thin wrapper: the benchmark is ``python -m kcpgo bench tunnel`` (kcpgo/cli/bench_tunnel.py),
with the same flags and JSON output; ``python tools/bench_tunnel.py --help`` describes them.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)             # this tree's kcpgo, whatever kcpgo is installed

from kcpgo.cli.bench_tunnel import (PAIRS, BenchError, main,  # noqa: E402,F401
                                    measure_rr, measure_upload, quantiles_us, ratios, run)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="tools/bench.py tunnel"))
