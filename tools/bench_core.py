#!/usr/bin/env python3
"""The wire core's three headline figures against their targets, in one run.

* in-memory KCP transfer (no cipher, no FEC, MTU 1400, window 1024, stream mode), MB/s
* Reed-Solomon 10/3 encode of 1400-byte shards, MB/s of data
* AES-256 datagram seal (nonce + CRC32 + encrypt) of 1400-byte datagrams, MB/s

Medians of ``--repeat`` runs. Per-cipher and per-FEC detail: tools/bench_crypt.py,
tools/bench_rs.py, tools/bench_kcp.py.

    python tools/bench_core.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import statistics

import bench_crypt   # the other micro-benchmarks, beside this script (tools/ is sys.path[0])
import bench_kcp
import bench_rs

from kcpgo import crypt
from kcpgo.codec.reedsolomon import ReedSolomon

TARGETS = {"kcp": 300.0, "rs": 200.0, "aes": 250.0}


def rs_mbps() -> float:
    rs = ReedSolomon(10, 3)
    shards = [os.urandom(1400) for _ in range(10)]
    per_call = bench_rs.timed(lambda: rs.encode(shards), 0.5)
    return 14000 / per_call / 1e6


def aes_mbps() -> float:
    return bench_crypt.bench("aes", crypt.derive_key("bench"))[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mb", type=int, default=100, help="megabytes per KCP transfer run")
    args = ap.parse_args()
    runs = {
        "kcp": [bench_kcp.run_once(args.mb * 1_000_000, None, 0, 0) for _ in range(args.repeat)],
        "rs": [rs_mbps() for _ in range(args.repeat)],
        "aes": [aes_mbps() for _ in range(args.repeat)],
    }
    labels = {"kcp": "KCP in-memory transfer", "rs": "RS 10/3 encode (data)",
              "aes": "AES-256 seal+CRC, 1400 B"}
    print(f"{'figure':28} {'median MB/s':>12} {'target':>8} {'ratio':>6}   runs")
    for key, values in runs.items():
        med = statistics.median(values)
        print(f"{labels[key]:28} {med:12.0f} {TARGETS[key]:8.0f} {med / TARGETS[key]:6.2f}   "
              + ", ".join(f"{v:.0f}" for v in values))


if __name__ == "__main__":
    main()
