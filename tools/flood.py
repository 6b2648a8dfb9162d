#!/usr/bin/env python3
"""Flood a KCP listener with datagrams from many spoofed source addresses (loopback only).

Raw sockets need privileges, so the sources are real: Linux routes all of 127.0.0.0/8 to the
loopback interface and lets a socket bind any address in it, so source ``i`` is a UDP socket
bound to ``127.a.b.c`` (port picked by the kernel) that sends ``--per-source`` datagrams and
is closed. Every source is a distinct (ip, port) pair: 100,000 sources cost 100,000 socket
creations, about 2 s of CPU.

Datagram kinds: ``kcp`` (a KCP PUSH with a random conv, sn 0 or random, 64..512 bytes: each
creates a session on a listener without a cipher, kcp-go's rule) or ``garbage`` (random
bytes: with a cipher the CRC rejects them).

Two uses:

* the sender alone (a child process of a test): ``python tools/flood.py --target
  127.0.0.1:PORT --sources 100000``; prints ``DONE <json>``;
* the whole experiment (``--run``): a kcpgo listener in this process with an accepting
  application (``idle_timeout`` reaping), the flood from a child process and a legitimate
  client transferring 1 MiB during the flood; prints peak RSS and session counts::

    python tools/flood.py --run --sources 100000 [--crypt aes] [--no-accept]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from kcpgo.address import parse_address
from kcpgo.sansio import CMD_PUSH, Segment, encode_segment
from kcpgo.testing import reap, rss_kb, udp_rcvbuf_errors

PASSPHRASE = "it's a secrect"


def source_ip(i: int) -> str:
    """The i-th spoofed source address: 127.a.b.c, skipping .0/.255 and 127.0.0.0/16."""
    a, rest = divmod(i, 254 * 254)
    b, c = divmod(rest, 254)
    return f"127.{a + 1}.{b + 1}.{c + 1}"


def make_datagram(rng: random.Random, kind: str) -> bytes:
    if kind == "garbage":
        return rng.randbytes(rng.randint(24, 1400))
    body = rng.randbytes(rng.randint(64, 512))
    sn = 0 if rng.random() < 0.5 else rng.getrandbits(32)
    return encode_segment(Segment(conv=rng.getrandbits(32), cmd=CMD_PUSH, frg=0, wnd=32,
                                  ts=rng.getrandbits(32), sn=sn, una=0, data=body))


def send_flood(target: tuple, sources: int, kind: str = "kcp", per_source: int = 1,
               rate: float = 0.0, seed: int = 1) -> Dict[str, Any]:
    """Send from ``sources`` distinct loopback addresses; ``rate`` datagrams/s (0 = flat out)."""
    rng = random.Random(seed)
    sent = errors = 0
    t0 = time.monotonic()
    for i in range(sources):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((source_ip(i), 0))
            for _ in range(per_source):
                try:
                    s.sendto(make_datagram(rng, kind), target)
                    sent += 1
                except OSError:
                    errors += 1
        finally:
            s.close()
        if rate and i % 100 == 99:
            ahead = sent / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    return dict(sources=sources, sent=sent, errors=errors,
                seconds=round(time.monotonic() - t0, 2))


def run_experiment(sources: int, crypt: Optional[str] = None, accept: bool = True,
                   idle_timeout: float = 1.0, backlog: int = 128, rate: float = 0.0,
                   legit_bytes: int = 1 << 20, kind: Optional[str] = None) -> Dict[str, Any]:
    """Flood a listener of this process from a child process; a legitimate client connects
    and echoes ``legit_bytes`` during the flood. Returns the measurements."""
    import gevent
    import kcpgo
    from kcpgo.snmp import Snmp

    kind = kind or ("garbage" if crypt else "kcp")
    opts: Dict[str, Any] = {}
    if crypt:
        opts.update(crypt=crypt, key=PASSPHRASE)
    snmp = Snmp()
    ln = kcpgo.listen(("127.0.0.1", 0), backlog=backlog, idle_timeout=idle_timeout,
                      mode="fast3", snmp=snmp, **opts)
    res: Dict[str, Any] = dict(sources=sources, crypt=crypt or "nocrypt", kind=kind,
                               accept=accept, idle_timeout=idle_timeout, backlog=backlog)
    rss0 = rss_kb()
    peak = dict(rss=rss0, sessions=0, pending=0)
    handlers = [0, 0]      # spawned, finished

    def handler(s: Any) -> None:
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                s.sendall(d)
        except OSError:
            pass
        finally:
            s.close()
            handlers[1] += 1

    def acceptor() -> None:
        ln.settimeout(None)
        while True:
            s, addr = ln.accept()
            handlers[0] += 1
            gevent.spawn(handler, s)

    def sampler() -> None:
        while True:
            peak["rss"] = max(peak["rss"], rss_kb())
            peak["sessions"] = max(peak["sessions"], ln.session_count)
            peak["pending"] = max(peak["pending"], ln.pending_count)
            gevent.sleep(0.05)

    acc = gevent.spawn(acceptor) if accept else None
    smp = gevent.spawn(sampler)
    drops0 = udp_rcvbuf_errors()
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--target",
         "%s:%d" % ln.getsockname(), "--sources", str(sources), "--kind", kind,
         "--rate", str(rate)], stdout=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    legit = None
    try:
        gevent.sleep(0.5)                                     # the flood is under way
        if not accept:
            legit_bytes = 0          # nobody accepts: only boundedness is measured
        data = os.urandom(legit_bytes)
        t_legit = time.monotonic()
        if legit_bytes:
            legit = kcpgo.dial(ln.getsockname(), mode="fast3", timeout=30, **opts)
            w = gevent.spawn(legit.sendall, data)
            got = bytearray(legit.recv(1 << 20))
            res["legit_connected_during_flood"] = proc.poll() is None
            res["legit_connect_seconds"] = round(time.monotonic() - t_legit, 2)
            while len(got) < len(data):
                got += legit.recv(1 << 20)
            w.get(timeout=30)
            res["legit_ok"] = hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
            res["legit_seconds"] = round(time.monotonic() - t_legit, 2)
            res["legit_during_flood"] = proc.poll() is None
        out = gevent.get_hub().threadpool.spawn(proc.communicate).get(timeout=600)[0]
        for line in out.splitlines():
            if line.startswith("DONE "):
                res["sender"] = json.loads(line[5:])
        res["flood_seconds"] = round(time.monotonic() - t0, 2)
        t_reap = time.monotonic()                             # idle reaping
        while accept and ln.session_count and time.monotonic() - t_reap < idle_timeout + 10:
            gevent.sleep(0.1)
        res["sessions_after_reap"] = ln.session_count
        res["reap_seconds"] = round(time.monotonic() - t_reap, 2)
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        reap(proc, kill=True)
        if legit is not None:
            legit.close()
        smp.kill()
        if acc is not None:
            acc.kill()
        ln.close()
    res.update(rss_before_mb=round(rss0 / 1024, 1), peak_rss_mb=round(peak["rss"] / 1024, 1),
               peak_rss_growth_mb=round((peak["rss"] - rss0) / 1024, 1),
               peak_sessions=peak["sessions"], peak_pending=peak["pending"],
               sessions_created=snmp.PassiveOpens, accepted=handlers[0],
               evicted=ln.evicted, csum_errors=snmp.InCsumErrors,
               kernel_drops=udp_rcvbuf_errors() - drops0)
    return res


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", help="sender only: ip:port to flood")
    ap.add_argument("--sources", type=int, default=100_000)
    ap.add_argument("--kind", choices=("kcp", "garbage"), default=None)
    ap.add_argument("--per-source", type=int, default=1)
    ap.add_argument("--rate", type=float, default=5_000.0, help="datagrams/s, 0 = flat out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--run", action="store_true", help="the whole experiment (see above)")
    ap.add_argument("--crypt", default=None)
    ap.add_argument("--no-accept", action="store_true", help="the application never accepts")
    ap.add_argument("--idle-timeout", type=float, default=1.0)
    ap.add_argument("--backlog", type=int, default=128)
    args = ap.parse_args(argv)
    if args.run:
        res = run_experiment(args.sources, args.crypt, not args.no_accept, args.idle_timeout,
                             args.backlog, args.rate, kind=args.kind)
        print(json.dumps(res, indent=1), flush=True)
        return 0 if res.get("legit_ok") or args.no_accept else 1
    if not args.target:
        ap.error("--target or --run is required")
    try:
        target = parse_address(args.target, "--target")
    except (TypeError, ValueError) as e:
        ap.error(str(e))
    res = send_flood(target, args.sources, args.kind or "kcp", args.per_source,
                     args.rate, args.seed)
    print("DONE " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
