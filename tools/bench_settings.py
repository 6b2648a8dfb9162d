#!/usr/bin/env python3
"""What session settings cost: one-way throughput between two kcpgo processes on loopback
for each row of :data:`SETTINGS` (the README's "Choosing settings" table, issue 14).

For each row and run, a fresh receiver process listens with the row's options, accepts one
session and reads ``--mb`` megabytes, then answers with their sha256; this process dials with
the same options, sends the bytes (a random 1 MB block over and over) and waits for the
answer. The figure is megabytes (10^6 bytes) per second from the first ``sendall`` to the
answer, the median of ``--runs`` runs (each row's runs interleave with the other rows', so a
noisy moment spreads over all of them). Retransmitted segments (the sender's
``Snmp.RetransSegs``) are reported beside it::

    python3 tools/bench_settings.py                     # every row, 10 MB, 3 runs
    python3 tools/bench_settings.py --rows defaults,tuned --mb 20 --runs 5 --json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

import kcpgo
from kcpgo.options import KCPTUN_CLIENT, KCPTUN_SERVER
from kcpgo.snmp import Snmp
from kcpgo.testing import read_line, reap

__all__ = ["SETTINGS", "measure_once"]

TUNED: Dict[str, Any] = dict(mode="fast3", stream=True, window=(1024, 1024))
#: row name -> (client options, server options, what the row shows).
SETTINGS: Dict[str, Any] = {
    "defaults": ({}, {}, "kcpgo.dial/listen as they come: mode normal, window 32/32, "
                         "message mode, no cipher, no FEC"),
    "fast3": (dict(mode="fast3"), dict(mode="fast3"), "mode only"),
    "fast3-stream": (dict(mode="fast3", stream=True), dict(mode="fast3", stream=True),
                     "mode and stream mode"),
    "fast3-window": (dict(mode="fast3", window=(1024, 1024)),
                     dict(mode="fast3", window=(1024, 1024)), "mode and windows"),
    "tuned": (TUNED, TUNED, "fast3, stream mode, windows 1024/1024"),
    "tuned-aes": (dict(TUNED, crypt="aes", key="k"), dict(TUNED, crypt="aes", key="k"),
                  "tuned + aes"),
    "tuned-aes-gcm": (dict(TUNED, crypt="aes-128-gcm", key="k"),
                      dict(TUNED, crypt="aes-128-gcm", key="k"),
                      "tuned + aes-128-gcm (kcp-go latest only)"),
    "tuned-salsa20": (dict(TUNED, crypt="salsa20", key="k"),
                      dict(TUNED, crypt="salsa20", key="k"), "tuned + salsa20"),
    "tuned-fec": (dict(TUNED, data_shards=10, parity_shards=3),
                  dict(TUNED, data_shards=10, parity_shards=3), "tuned + FEC 10/3"),
    "tuned-aes-fec": (dict(TUNED, crypt="aes", key="k", data_shards=10, parity_shards=3),
                      dict(TUNED, crypt="aes", key="k", data_shards=10, parity_shards=3),
                      "tuned + aes + FEC 10/3"),
    "kcptun": (dict(KCPTUN_CLIENT.as_dict(), crypt="aes", key="k"),
               dict(KCPTUN_SERVER.as_dict(), crypt="aes", key="k"),
               "kcptun's defaults: aes, FEC 10/3, fast, MTU 1350, windows 128/512 "
               "(server 1024/1024), stream mode"),
}

#: The receiver: listen, print the port, read N bytes, answer their sha256.
_RECEIVER = r"""
import hashlib, json, sys, kcpgo
opts = json.loads(sys.argv[1]); n = int(sys.argv[2])
if "window" in opts: opts["window"] = tuple(opts["window"])
with kcpgo.listen(("127.0.0.1", 0), **opts) as ln:
    print(ln.getsockname()[1], flush=True)
    s, _ = ln.accept()
    h = hashlib.sha256(); got = 0
    while got < n:
        d = s.recv(1 << 20)
        if not d:
            break
        h.update(d); got += len(d)
    s.sendall(h.hexdigest().encode())
    s.close()
"""


def _options(opts: Dict[str, Any]) -> Dict[str, Any]:
    """Options as keyword arguments, only those that differ from the defaults."""
    defaults = kcpgo.Options().as_dict()
    return {k: v for k, v in opts.items() if k in defaults and v != defaults[k]}


def measure_once(client: Dict[str, Any], server: Dict[str, Any], nbytes: int,
                 block: bytes, timeout: float = 120.0) -> Dict[str, float]:
    """One run: MB/s from the first send to the receiver's answer, and retransmissions."""
    server_opts = _options(server)
    proc = subprocess.Popen([sys.executable, "-c", _RECEIVER, json.dumps(server_opts),
                             str(nbytes)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(read_line(proc.stdout, 10))
        snmp = Snmp()
        expect = hashlib.sha256()
        with kcpgo.dial(("127.0.0.1", port), timeout=timeout, snmp=snmp,
                        **_options(client)) as sock:
            t0 = time.monotonic()
            left = nbytes
            view = memoryview(block)
            while left:
                chunk = view[:min(left, len(block))]
                sock.sendall(chunk)
                expect.update(chunk)
                left -= len(chunk)
            answer = b""
            while len(answer) < 64:
                d = sock.recv(64 - len(answer))
                if not d:
                    break
                answer += d
            secs = time.monotonic() - t0
        if answer.decode() != expect.hexdigest():
            raise RuntimeError(f"the receiver's sha256 {answer!r} is not the data's")
        return {"MBps": nbytes / secs / 1e6, "retrans": snmp.RetransSegs}
    finally:
        reap(proc, timeout=10)


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rows", default=",".join(SETTINGS),
                   help="comma-separated rows of SETTINGS to run")
    p.add_argument("--mb", type=float, default=10, help="megabytes (10^6 bytes) per run")
    p.add_argument("--runs", type=int, default=3, help="runs per row (median reported)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    a = p.parse_args(argv)
    rows = [r for r in a.rows.split(",") if r]
    unknown = [r for r in rows if r not in SETTINGS]
    if unknown:
        p.error(f"unknown rows {unknown}; valid: {', '.join(SETTINGS)}")
    block = os.urandom(1 << 20)
    nbytes = int(a.mb * 1e6)
    results: Dict[str, List[Dict[str, float]]] = {r: [] for r in rows}
    for run in range(a.runs):
        for r in rows:
            client, server, _ = SETTINGS[r]
            res = measure_once(client, server, nbytes, block)
            results[r].append(res)
            if not a.json:
                print(f"  run {run + 1}/{a.runs} {r}: {res['MBps']:.1f} MB/s, "
                      f"{res['retrans']} retransmitted", file=sys.stderr, flush=True)
    summary = {r: {"median_MBps": round(statistics.median(x["MBps"] for x in v), 1),
                   "runs_MBps": [round(x["MBps"], 1) for x in v],
                   "retrans": [x["retrans"] for x in v], "what": SETTINGS[r][2]}
               for r, v in results.items()}
    if a.json:
        print(json.dumps({"mb": a.mb, "runs": a.runs, "rows": summary}, indent=1))
        return 0
    print(f"{'row':<15} {'MB/s':>7}  {'runs':<22} what")
    for r, s in summary.items():
        runs = "/".join(f"{x:.0f}" for x in s["runs_MBps"])
        print(f"{r:<15} {s['median_MBps']:>7.1f}  {runs:<22} {s['what']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
