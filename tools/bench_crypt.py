#!/usr/bin/env python3
"""Benchmark kcpgo.crypt: seal/open throughput and raw encrypt/decrypt per-call cost.

Every cipher is measured on 1400-byte datagrams (payload = 1400 - overhead bytes); MB/s counts
payload bytes (1 MB = 10^6 bytes). Pure-Python ciphers get few iterations so the whole run
stays well under a minute. Timings are the best of several repeats (these machines are noisy).

    python tools/bench_crypt.py            # all ciphers
    python tools/bench_crypt.py aes sm4    # a subset
"""
from __future__ import annotations

import os
import sys
import timeit

from kcpgo import crypt

DATAGRAM = 1400
SLOW = {"twofish": 20, "tea": 50, "xtea": 20}  # iterations per repeat for pure-Python ciphers
FAST_ITERATIONS = 20000
SLOWISH = {"3des": 2000, "blowfish": 5000, "cast5": 5000, "sm4": 5000, "salsa20": 10000}
REPEATS = 5


def best_us(fn, number: int) -> float:
    """Best time per call in µs over REPEATS runs of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=REPEATS)) / number * 1e6


def bench(name: str, key: bytes) -> tuple:
    block = crypt.new(name, key)
    number = SLOW.get(name) or SLOWISH.get(name) or FAST_ITERATIONS
    payload = os.urandom(DATAGRAM - block.overhead)
    sealed = block.seal(payload)
    assert block.open(sealed) == payload
    raw = os.urandom(DATAGRAM - block.overhead) if block.aead else os.urandom(DATAGRAM)
    ciphertext = block.encrypt(raw)
    seal_us = best_us(lambda: block.seal(payload), number)
    open_us = best_us(lambda: block.open(sealed), number)
    enc_us = best_us(lambda: block.encrypt(raw), number)
    dec_us = best_us(lambda: block.decrypt(ciphertext), number)
    mbps = len(payload) / 1e6
    return (name, mbps / (seal_us / 1e6), mbps / (open_us / 1e6), seal_us, open_us, enc_us, dec_us)


def main(argv: list) -> None:
    names = argv or list(crypt.CIPHER_NAMES)
    key = crypt.derive_key("it's a secrect")
    print(f"kcpgo.crypt on {DATAGRAM}-byte datagrams (MB/s of payload; µs per call; best of "
          f"{REPEATS})")
    header = ("cipher", "seal MB/s", "open MB/s", "seal µs", "open µs", "encrypt µs", "decrypt µs")
    print("%-12s %10s %10s %9s %9s %11s %11s" % header)
    for name in names:
        row = bench(name, key)
        print("%-12s %10.1f %10.1f %9.2f %9.2f %11.2f %11.2f" % row, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
