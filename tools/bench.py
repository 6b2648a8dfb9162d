#!/usr/bin/env python3
"""kcpgo's benchmark: ``python -m kcpgo bench`` (kcpgo/cli/bench.py), run on this source tree.

A thin wrapper kept for the commands that name it (README, tests): the same modes, flags and
JSON output, ``python tools/bench.py sink --compare``, ``python tools/bench.py tunnel
--runs 3``. ``python tools/bench.py --help`` (or ``python -m kcpgo bench --help``) describes
them. The engine is in the package: kcpgo/cli/bench.py (command line, pairs, medians),
bench_run.py (one measurement, the Go peer, stalls), bench_role.py (the kcpgo and Python TCP
ends), bench_progress.py (progress, --plot), bench_report.py (tables, JSON) and
bench_tunnel.py (mode ``tunnel``). The names tests import from here are re-exported.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)             # this tree's kcpgo, whatever kcpgo is installed

from kcpgo.cli.bench import (FIGURE_MEANINGS, compare_runtimes, main,  # noqa: E402,F401
                             pairs_for, summarise)
from kcpgo.cli.bench_run import (STALL_CAUSES, STALLED, Stalled,  # noqa: E402,F401
                                 build_gobench, describe_stall, diagnose_stall, role_argv,
                                 run_pair, stall_report, start_server)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="tools/bench.py"))
