#!/usr/bin/env python3
"""Reed-Solomon and FEC throughput, in MB/s of data.

* RS encode 10/3 with 1400-byte shards (target >= 200 MB/s of data, i.e. <= 70 µs per call)
* RS reconstruct 10/3 with 1, 2, 3 data shards missing (parity present)
* FECEncoder.encode (one payload per call) and encode_many (a flush of 32), and
  FECDecoder.decode, per 1376-byte KCP payload, no loss and 5% loss

Parity uses numpy when it is installed (the ``fast`` extra); ``--ints`` measures the pure-Python
int path, ``--compare`` both, interleaved.

    python tools/bench_rs.py [--seconds 1.0] [--ints | --compare]
"""
from __future__ import annotations

import argparse
import os
import random

from kcpgo.codec import reedsolomon
from kcpgo.codec.reedsolomon import ReedSolomon
from kcpgo.sansio.fec import FECDecoder, FECEncoder
from kcpgo.snmp import Snmp
from kcpgo.testing.timing import best_seconds_per_call as timed, report

K, M, SHARD, PAYLOAD = 10, 3, 1400, 1376


def bench_rs(seconds: float) -> None:
    rs = ReedSolomon(K, M)
    data = [os.urandom(SHARD) for _ in range(K)]
    parity = rs.encode(data)
    report(f"RS encode {K}/{M}, {SHARD} B shards", timed(lambda: rs.encode(data), seconds), K * SHARD)
    for lost in (1, 2, 3):
        shards = [None] * lost + data[lost:] + parity
        assert rs.reconstruct(shards) == data
        report(f"RS reconstruct {K}/{M}, {lost} data shard(s) missing",
               timed(lambda: rs.reconstruct(shards), seconds), K * SHARD)


def bench_fec(seconds: float, count: int = 2600) -> None:
    rnd = random.Random(1)
    payloads = [rnd.randbytes(PAYLOAD) for _ in range(count)]

    def encode_all():
        enc = FECEncoder(K, M)
        return [p for payload in payloads for p in enc.encode(payload)]

    def encode_flushes(flush=32):
        enc = FECEncoder(K, M)
        return [p for i in range(0, count, flush) for p in enc.encode_many(payloads[i:i + flush])]

    packets = encode_all()
    assert encode_flushes() == packets
    report(f"FECEncoder.encode {K}/{M}, per {PAYLOAD} B payload",
           timed(encode_all, seconds) / count, PAYLOAD)
    report(f"FECEncoder.encode_many {K}/{M}, per {PAYLOAD} B payload",
           timed(encode_flushes, seconds) / count, PAYLOAD)

    kept = [p for p in packets if rnd.random() >= 0.05]
    for label, feed in (("no loss", packets), ("5% loss", kept)):
        recovered = []

        def decode_all():
            dec = FECDecoder(K, M, Snmp())
            decode = dec.decode
            recovered.clear()
            for i, p in enumerate(feed):
                recovered.extend(decode(p, i))

        per = timed(decode_all, seconds) / count
        report(f"FECDecoder.decode {K}/{M} {label}, per payload", per, PAYLOAD)
        if label == "5% loss":
            lost = count - sum(1 for p in kept if p[4] == 0xF1)
            print(f"{'':48s} ({len(recovered)} of {lost} lost data packets recovered)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time budget per figure")
    engine = ap.add_mutually_exclusive_group()
    engine.add_argument("--ints", action="store_true", help="parity without numpy")
    engine.add_argument("--compare", action="store_true", help="numpy, then ints, twice")
    args = ap.parse_args()
    runs = [False, True, False, True] if args.compare else [args.ints]
    for ints in runs:
        if reedsolomon._rs_np is None and not ints:
            print("numpy is not installed: parity uses Python ints")
        reedsolomon.USE_NUMPY = reedsolomon._rs_np is not None and not ints
        print(f"-- parity engine: {'numpy' if reedsolomon.USE_NUMPY else 'ints'}")
        bench_rs(args.seconds)
        bench_fec(args.seconds)


if __name__ == "__main__":
    main()
