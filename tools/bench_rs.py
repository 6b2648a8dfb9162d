#!/usr/bin/env python3
"""Reed-Solomon and FEC throughput (pure Python), in MB/s of data.

* RS encode 10/3 with 1400-byte shards (target >= 200 MB/s of data, i.e. <= 70 µs per call)
* RS reconstruct 10/3 with 1, 2, 3 data shards missing (parity present)
* FECEncoder.encode and FECDecoder.decode per 1376-byte KCP payload, no loss and 5% loss

    python tools/bench_rs.py [--seconds 1.0]
"""
from __future__ import annotations

import argparse
import os
import random

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

    packets = encode_all()
    report(f"FECEncoder.encode {K}/{M}, per {PAYLOAD} B payload",
           timed(encode_all, seconds) / count, PAYLOAD)

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
    args = ap.parse_args()
    bench_rs(args.seconds)
    bench_fec(args.seconds)


if __name__ == "__main__":
    main()
