#!/usr/bin/env python3
"""Benchmark kcpgo.crypt: seal/open throughput and raw encrypt/decrypt per-call cost.

Every cipher is measured on 1400-byte datagrams (payload = 1400 - overhead bytes); MB/s counts
payload bytes (1 MB = 10^6 bytes). Pure-Python ciphers get few iterations so the whole run
stays well under a minute. Timings are the best of several repeats (these machines are noisy).

    python tools/bench_crypt.py                 # all ciphers, one datagram per call
    python tools/bench_crypt.py aes sm4         # a subset
    python tools/bench_crypt.py --batch 32 tea  # seal_many/open_many of 32 datagrams per call
    python tools/bench_crypt.py --no-numpy tea  # tea/xtea/twofish without the numpy extra
    python tools/bench_crypt.py --compare       # tea/xtea/twofish: scalar vs pure vs numpy

With ``--batch N`` the seal and open columns time ``seal_many``/``open_many`` of N datagrams
and report µs per datagram (what a flush or a drained socket hands the cipher).
"""
from __future__ import annotations

import argparse
import os
import sys
import timeit

from kcpgo import crypt
from kcpgo.codec import _purecfb

DATAGRAM = 1400
SLOW = {"twofish": 20, "tea": 50, "xtea": 20}  # iterations per repeat for pure-Python ciphers
FAST_ITERATIONS = 20000
SLOWISH = {"3des": 2000, "blowfish": 5000, "cast5": 5000, "sm4": 5000, "salsa20": 10000}
REPEATS = 5


def best_us(fn, number: int) -> float:
    """Best time per call in µs over REPEATS runs of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=REPEATS)) / number * 1e6


PURE = ("tea", "xtea", "twofish")
#: --compare: how each pure-Python cipher's engine is set up (kcpgo.codec._purecfb).
VARIANTS = ("scalar", "no-numpy", "numpy")


def variant(block, how: str):
    """``block`` with its engine limited: "scalar" is one block at a time (the code before
    the lanes and numpy paths), "no-numpy" the pure-Python paths, "numpy" everything."""
    engine = block._engine
    if how != "numpy":
        engine._np = None
    if how == "scalar":
        engine._lanes = None
    return block


def bench(name: str, key: bytes, batch: int = 0, how: str = "") -> tuple:
    block = crypt.new(name, key)
    if how:
        variant(block, how)
    number = SLOW.get(name) or SLOWISH.get(name) or FAST_ITERATIONS
    payload = os.urandom(DATAGRAM - block.overhead)
    sealed = block.seal(payload)
    assert block.open(sealed) == payload
    raw = os.urandom(DATAGRAM - block.overhead) if block.aead else os.urandom(DATAGRAM)
    ciphertext = block.encrypt(raw)
    if batch:
        payloads = [os.urandom(DATAGRAM - block.overhead) for _ in range(batch)]
        wires = block.seal_many(payloads)
        assert block.open_many(wires) == payloads
        calls = max(1, number // batch * 4)
        seal_us = best_us(lambda: block.seal_many(payloads), calls) / batch
        open_us = best_us(lambda: block.open_many(wires), calls) / batch
    else:
        seal_us = best_us(lambda: block.seal(payload), number)
        open_us = best_us(lambda: block.open(sealed), number)
    enc_us = best_us(lambda: block.encrypt(raw), number)
    dec_us = best_us(lambda: block.decrypt(ciphertext), number)
    mbps = len(payload) / 1e6
    label = f"{name}/{how}" if how else name
    return (label, mbps / (seal_us / 1e6), mbps / (open_us / 1e6), seal_us, open_us, enc_us,
            dec_us)


def main(argv: list) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="ciphers (default: all)")
    parser.add_argument("--batch", type=int, default=0, metavar="N",
                        help="time seal_many/open_many of N datagrams (µs per datagram)")
    parser.add_argument("--no-numpy", action="store_true",
                        help="tea/xtea/twofish without numpy (the pure-Python fallback)")
    parser.add_argument("--compare", action="store_true",
                        help="tea/xtea/twofish in one run: " + ", ".join(VARIANTS))
    args = parser.parse_args(argv)
    if args.no_numpy:
        _purecfb.USE_NUMPY = False
    names = args.names or list(PURE if args.compare else crypt.CIPHER_NAMES)
    key = crypt.derive_key("it's a secrect")
    mode = f"batches of {args.batch}, µs per datagram" if args.batch else "µs per call"
    numpy = "on" if _purecfb.USE_NUMPY else "off"
    print(f"kcpgo.crypt on {DATAGRAM}-byte datagrams (MB/s of payload; {mode}; best of "
          f"{REPEATS}; numpy for tea/xtea/twofish {numpy})")
    header = ("cipher", "seal MB/s", "open MB/s", "seal µs", "open µs", "encrypt µs",
              "decrypt µs")
    print("%-16s %10s %10s %9s %9s %11s %11s" % header)
    for name in names:
        for how in (VARIANTS if args.compare and name in PURE else ("",)):
            row = bench(name, key, args.batch, how)
            print("%-16s %10.1f %10.1f %9.2f %9.2f %11.2f %11.2f" % row, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
