#!/usr/bin/env python3
"""In-memory KCP transfer benchmark: two sans-IO endpoints in one process, no sockets.

Stream mode, MTU 1400, windows 1024/1024, fast3, no cipher, no FEC (the issue's settings).
Every datagram a flush produces is handed straight to the peer, then each side flushes once per
batch (ACKs included), as the gevent runtime does. Prints MB/s of payload delivered.

    python tools/bench_kcp.py [--mb 200] [--repeat 3] [--crypt NAME] [--fec 10/3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from kcpgo.sansio import Connection
from kcpgo.snmp import Snmp


def make_pair(crypt_name: str | None, ds: int, ps: int) -> tuple[Connection, Connection]:
    ends = []
    for _ in range(2):
        crypt = None
        if crypt_name:
            from kcpgo import crypt as crypt_mod
            crypt = crypt_mod.new(crypt_name, crypt_mod.derive_key("bench"))
        c = Connection(0x1234, crypt=crypt, data_shards=ds, parity_shards=ps, mtu=1400,
                       mode="fast3", snmp=Snmp())
        c.kcp.stream = True
        c.kcp.set_wndsize(1024, 1024)
        ends.append(c)
    return ends[0], ends[1]


def run_once(total: int, crypt_name: str | None, ds: int, ps: int) -> float:
    a, b = make_pair(crypt_name, ds, ps)
    chunk = os.urandom(65536)
    sent = 0
    received = 0
    now = 0
    t0 = time.perf_counter()
    while received < total:
        while sent < total and a.writable():
            a.send(chunk)
            sent += len(chunk)
        out = a.datagrams_to_send(now)
        for d in out:
            b.receive_datagram(d, now)
        while True:
            data = b.recv_stream(65536)
            if not data:
                break
            received += len(data)
        for d in b.datagrams_to_send(now):
            a.receive_datagram(d, now)
        if not out:
            now += 1     # nothing moved: let the clock (and timers) advance
    elapsed = time.perf_counter() - t0
    return received / elapsed / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200, help="megabytes per run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--crypt", default=None, help="cipher name (default: no crypto header)")
    ap.add_argument("--fec", default="0/0", help="data/parity shards, e.g. 10/3")
    args = ap.parse_args()
    ds, ps = (int(x) for x in args.fec.split("/"))
    rates = [run_once(args.mb * 1_000_000, args.crypt, ds, ps) for _ in range(args.repeat)]
    label = f"kcp in-memory transfer (crypt={args.crypt or 'off'}, fec={args.fec})"
    print(f"{label}: median {statistics.median(rates):.0f} MB/s "
          f"(runs: {', '.join(f'{r:.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
