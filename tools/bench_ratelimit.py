#!/usr/bin/env python3
"""Rate limit accuracy: achieved rate against ``set_rate_limit`` between two kcpgo ends.

For each rate, one client session sends ``--bytes`` to a listener of this process over the
loopback with the client's rate limit set (kcp-go latest ``SetRateLimit``, docs/protocol.md
§5.9); the receiver notes when bytes arrive. The achieved rate leaves out the burst (the bucket
starts full with 64 x 1500 bytes, sent at once): it is measured from the moment the receiver
holds more than one burst to the last byte, as

* ``payload``: application bytes received per second (what the user sees; a datagram of 1400
  bytes carries 1376 of them without cipher or FEC, so about 1.7 % below the wire rate);
* ``wire``: the sender's on-wire bytes (``Snmp.OutBytes``: crypto, FEC and KCP headers
  included, what the bucket counts) per second over the same interval.

``--bidir`` sends the same amount both ways at once, each end limited (the case where ACKs
would wait behind data: ``--acks queue`` makes ACK-only flushes wait for the bucket as kcp-go
does, ``--acks skip`` is kcpgo's default). ``--link`` puts the lossy-link relay
(``kcpgo.testing.RelayProcess``, both directions) between the ends, e.g. ``loss=5%,delay=20``
(the rate then includes the recovery). Prints one line per rate (``--json``: one object)::

    python tools/bench_ratelimit.py --rates 1000000,4000000 --bytes 3000000
    python tools/bench_ratelimit.py --rates 1000000 --link loss=5%,delay=20 --fec 10/3
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import kcpgo
from kcpgo.runtime import channel as _channel
from kcpgo.sansio.ratelimit import DEFAULT_BURST
from kcpgo.snmp import Snmp

__all__ = ["measure"]


class _Receiver:
    """Reads ``total`` bytes from ``sock`` and notes when (``time.monotonic``)."""

    def __init__(self, sock: Any, total: int, sender_snmp: Snmp) -> None:
        self.sock = sock
        self.total = total
        self.snmp = sender_snmp
        self.received = 0
        self.t_first: Optional[float] = None
        self.t0: Optional[float] = None       # when more than a burst had arrived
        self.r0 = 0
        self.wire0 = 0
        self.t_last: Optional[float] = None
        self.wire_last = 0
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            while self.received < self.total:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("peer closed early")
                now = time.monotonic()
                if self.t_first is None:
                    self.t_first = now
                self.received += len(data)
                if self.t0 is None and self.received > DEFAULT_BURST:
                    self.t0, self.r0, self.wire0 = now, self.received, self.snmp.OutBytes
                self.t_last = now
                self.wire_last = self.snmp.OutBytes
        except BaseException as exc:   # reported by measure()
            self.error = exc

    def result(self, rate: int) -> Dict[str, Any]:
        if self.error is not None:
            raise self.error
        assert self.t0 is not None and self.t_last is not None and self.t_first is not None
        span = self.t_last - self.t0
        payload = (self.received - self.r0) / span
        wire = (self.wire_last - self.wire0) / span
        return {"rate": rate, "bytes": self.received, "seconds": round(self.t_last -
                                                                     self.t_first, 3),
                "payload": round(payload), "wire": round(wire),
                "payload_ratio": round(payload / rate, 4), "wire_ratio": round(wire / rate, 4)}


def measure(rate: int, nbytes: int, *, bidir: bool = False, acks: str = "skip",
            timeout: float = 60.0, link: str = "", **options: Any) -> List[Dict[str, Any]]:
    """Send ``nbytes`` from a rate-limited client to a listener (both ways with ``bidir``,
    the server's end limited too) and return one result per direction (:class:`_Receiver`:
    ``payload``/``wire`` in bytes per second, ``*_ratio`` against ``rate``, plus the
    sender's ``retrans`` segments, ``pace_drops`` and final ``srtt`` in ms). ``link``: a
    ``LinkProfile`` spec for a relay between the ends (``""``: direct).
    ``options`` are session options for both ends (``mode="fast3"``, ``window=...``)."""
    saved = _channel.ACKS_UNPACED
    _channel.ACKS_UNPACED = acks == "skip"
    csnmp, ssnmp = Snmp(), Snmp()
    data = bytes(range(256)) * (nbytes // 256 + 1)
    data = data[:nbytes]
    relay = None
    try:
        with kcpgo.listen(("127.0.0.1", 0), snmp=ssnmp, **options) as ln:
            ln.settimeout(timeout)
            target = ln.getsockname()
            if link:
                from kcpgo.testing import LinkProfile, RelayProcess
                profile = LinkProfile.parse(link)
                relay = RelayProcess(target, up=profile, down=profile).start()
                target = relay.address
            with kcpgo.dial(target, snmp=csnmp, timeout=timeout, **options) as c:
                c.set_rate_limit(rate)
                c.sendall(b"x")                 # the server learns of the session
                s, _ = ln.accept()
                with s:
                    s.settimeout(timeout)
                    assert s.recv(1) == b"x"
                    if bidir:
                        s.set_rate_limit(rate)
                    rx = _Receiver(s, nbytes, csnmp)
                    pairs = [(c, rx)]
                    if bidir:
                        pairs.append((s, _Receiver(c, nbytes, ssnmp)))
                    threads = [threading.Thread(target=r.run, daemon=True) for _, r in pairs]
                    threads += [threading.Thread(target=snd.sendall, args=(data,), daemon=True)
                                for snd, _ in pairs]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join(timeout)
                    out = []
                    for snd, r in pairs:
                        res = r.result(rate)
                        chan = snd._chan
                        res.update(retrans=snd.snmp.RetransSegs, pace_drops=chan.pace_drops,
                                   srtt=snd.srtt, acks=acks, bidir=bidir)
                        out.append(res)
                    c.drain(timeout)
                    s.drain(timeout)
                    return out
    finally:
        _channel.ACKS_UNPACED = saved
        if relay is not None:
            relay.stop()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="1000000,4000000",
                    help="comma-separated limits in bytes per second")
    ap.add_argument("--bytes", type=int, default=3_000_000, help="bytes sent per direction")
    ap.add_argument("--mode", default="fast3",
                    help="kcptun preset of both ends ('default': kcp-go's defaults)")
    ap.add_argument("--window", default="1024/1024", help="SND/RCV windows in segments")
    ap.add_argument("--crypt", default=None, help="cipher of both ends (key: 'bench')")
    ap.add_argument("--fec", default=None, help="DATA/PARITY shards, e.g. 10/3")
    ap.add_argument("--bidir", action="store_true", help="send both ways, both ends limited")
    ap.add_argument("--acks", choices=("skip", "queue"), default="skip",
                    help="ACK-only flushes skip the paced queue (kcpgo) or wait in it (kcp-go)")
    ap.add_argument("--link", default="", help="relay impairment both ways, e.g. loss=5%%,delay=20")
    ap.add_argument("--repeat", type=int, default=1, help="runs per rate")
    ap.add_argument("--json", action="store_true", help="one JSON object per run")
    ns = ap.parse_args(argv)
    snd, rcv = (int(x) for x in ns.window.split("/"))
    opts: Dict[str, Any] = dict(mode=None if ns.mode == "default" else ns.mode,
                                window=(snd, rcv))
    if ns.crypt:
        opts.update(crypt=ns.crypt, key="bench")
    if ns.fec:
        ds, ps = (int(x) for x in ns.fec.split("/"))
        opts.update(data_shards=ds, parity_shards=ps)
    for rate in (int(r) for r in ns.rates.split(",")):
        for _ in range(ns.repeat):
            for res in measure(rate, ns.bytes, bidir=ns.bidir, acks=ns.acks, link=ns.link,
                               **opts):
                if ns.json:
                    print(json.dumps(res))
                else:
                    print(f"rate {rate:>9} B/s  payload {res['payload']:>9} B/s "
                          f"({res['payload_ratio']:.3f})  wire {res['wire']:>9} B/s "
                          f"({res['wire_ratio']:.3f})  {res['seconds']:.2f} s  "
                          f"retrans {res['retrans']}  drops {res['pace_drops']}  "
                          f"srtt {res['srtt']} ms")
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
