#!/usr/bin/env python3
"""Snappy framing throughput (kcpgo.codec.snappy against cramjam alone), in MB/s of frame data.

Frames of 4 KiB (kcptun's default smux frame) and 64 KiB (one whole chunk), random (sent as
uncompressed chunks) and text (compressed, ratio ~0.4), one chunk per frame as kcptun writes
them (docs/kcptun.md §3.2). Rows:

* ``SnappyEncoder.encode`` / ``SnappyDecoder.feed`` (whole chunks, and the stream fed in
  1298-byte pieces as a KCP recv loop sees it)
* cramjam's framed ``snappy.Compressor`` (compress + flush per frame) / ``Decompressor``
  fed whole chunks: the library alone, no limits and no incremental input
* cramjam's raw block codec with our framing and the pure-Python CRC-32C (why the data path
  takes the CRC from cramjam's framed codec instead; docs/kcptun.md §8), and the raw block codec
  without any CRC (the upper bound)

    python tools/bench_snappy.py [--seconds 1.0]
"""
from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

import cramjam

from kcpgo.codec.snappy import STREAM_IDENTIFIER, SnappyDecoder, SnappyEncoder, crc32c
from kcpgo.testing.timing import best_seconds_per_call as timed, report

PIECE = 1298        # a KCP mss: what one recv hands the decoder


def sample(kind: str, size: int) -> bytes:
    if kind == "random":
        return random.Random(size).randbytes(size)
    text = b"".join(p.read_bytes() for p in sorted(Path(os.__file__).parent.glob("[a-f]*.py")))
    return (text * (1 + size // max(1, len(text))))[:size]


def bench(kind: str, frame: int, count: int, seconds: float) -> None:
    data = sample(kind, frame * count)
    frames = [data[i:i + frame] for i in range(0, len(data), frame)]
    total = len(data)
    enc = SnappyEncoder()
    wire = b"".join(enc.encode(f) for f in frames)
    chunks = [enc.encode(f) for f in frames]
    pieces = [wire[i:i + PIECE] for i in range(0, len(wire), PIECE)]
    print(f"-- {kind}, {frame // 1024} KiB frames × {count}: wire/data "
          f"{len(wire) / total:.2f}")

    def our_encode():
        e = SnappyEncoder()
        return [e.encode(f) for f in frames]

    def our_decode(parts):
        def run():
            d = SnappyDecoder()
            out = [d.feed(p) for p in parts]
            return out
        return run

    assert b"".join(our_decode(pieces)()) == data
    report("kcpgo SnappyEncoder.encode", timed(our_encode, seconds), total)
    report("kcpgo SnappyDecoder.feed, whole chunks",
           timed(our_decode([wire[:10] + chunks[0]] + chunks[1:]), seconds), total)
    report(f"kcpgo SnappyDecoder.feed, {PIECE}-byte pieces",
           timed(our_decode(pieces), seconds), total)

    def cj_encode():
        c = cramjam.snappy.Compressor()
        out = []
        for f in frames:
            c.compress(f)
            out.append(bytes(c.flush()))
        return out

    assert b"".join(cj_encode()) == wire          # cramjam framed == our (Go's) bytes

    def cj_decode():
        out = []
        for c in chunks:                # each call needs the identifier in front
            d = cramjam.snappy.Decompressor()
            d.decompress(STREAM_IDENTIFIER + c)
            out.append(bytes(d.flush()))
        return out

    report("cramjam framed Compressor compress+flush", timed(cj_encode, seconds), total)
    report("cramjam framed Decompressor, whole chunks", timed(cj_decode, seconds), total)

    def raw_encode(crc):
        def run():
            out = []
            for f in frames:
                block = bytes(cramjam.snappy.compress_raw(f))
                out.append(crc(f).to_bytes(4, "little") + block)
            return out
        return run

    def raw_decode():
        return [bytes(cramjam.snappy.decompress_raw(c[8:])) if c[0] == 0 else c[8:]
                for c in chunks]

    report("cramjam raw block, no CRC (upper bound)", timed(raw_encode(lambda f: 0), seconds),
           total)
    report("cramjam raw block decode, no CRC (upper bound)", timed(raw_decode, seconds), total)
    if frame <= 4096:
        report("cramjam raw block + pure-Python CRC-32C", timed(raw_encode(crc32c), seconds),
               total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time budget per figure")
    ap.add_argument("--megabytes", type=float, default=1.0, help="data per figure")
    args = ap.parse_args()
    for kind in ("random", "text"):
        for frame in (4096, 65536):
            bench(kind, frame, max(1, int(args.megabytes * 2**20) // frame), args.seconds)
    block = random.Random(0).randbytes(4096)
    report("pure-Python crc32c alone, 4 KiB", timed(lambda: crc32c(block), args.seconds), 4096)


if __name__ == "__main__":
    main()
