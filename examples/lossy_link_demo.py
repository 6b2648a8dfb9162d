#!/usr/bin/env python3
"""Two kcpgo sessions exchange data across a simulated bad link: 20% loss, reordering,
duplication and 40 ms of delay, with AES-256 and Reed-Solomon FEC 10/3 on, exactly as a kcp-go
peer would frame it. Runs in memory on a simulated clock, so it takes about a second.

    python examples/lossy_link_demo.py [--loss 0.2] [--mb 2] [--crypt aes] [--fec 10/3]
"""
import argparse
import hashlib
import os
import time

from kcpgo import crypt
from kcpgo.sansio import Connection, LinkProfile, Network
from kcpgo.snmp import Snmp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loss", type=float, default=0.2)
    ap.add_argument("--mb", type=float, default=2.0)
    ap.add_argument("--crypt", default="aes")
    ap.add_argument("--fec", default="10/3")
    ap.add_argument("--key", default="it's a secrect", help="kcptun-style passphrase")
    args = ap.parse_args()
    ds, ps = (int(x) for x in args.fec.split("/"))
    key = crypt.derive_key(args.key)
    ends = []
    for _ in range(2):
        c = Connection(0x5EED, crypt=crypt.new(args.crypt, key), data_shards=ds,
                       parity_shards=ps, mode="fast3", snmp=Snmp())
        c.kcp.stream = True
        c.kcp.set_wndsize(512, 512)
        ends.append(c)
    net = Network(ends[0], ends[1], seed=2026,
                  profile=LinkProfile(loss=args.loss, duplicate=0.01, reorder=0.01,
                                      reorder_delay=15, delay=20, jitter=5))
    payload = os.urandom(int(args.mb * 1_000_000))
    print(f"link: {args.loss:.0%} loss each way, 40 ms RTT; cipher {args.crypt}, FEC {args.fec}; "
          f"sending {len(payload):,} bytes ...", flush=True)
    t0 = time.perf_counter()
    got, _ = net.transfer(payload)
    wall = time.perf_counter() - t0
    ok = hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    sender, receiver = ends[0].snmp, ends[1].snmp
    print(f"sent {len(payload):,} bytes, received {len(got):,} bytes, intact: {ok}")
    print(f"simulated time {net.now / 1000:.2f} s "
          f"-> {len(got) / max(net.now, 1) / 1000:.2f} MB/s goodput; wall time {wall:.2f} s")
    print(f"datagrams sent {net.stats[0].received:,}, dropped by the link "
          f"{net.stats[0].dropped:,}; "
          f"FEC recovered {receiver.FECRecovered:,}, retransmitted {sender.RetransSegs:,}")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:       # Ctrl-C: quietly, with status 130 as a shell expects
        raise SystemExit(130)
