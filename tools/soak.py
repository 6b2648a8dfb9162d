#!/usr/bin/env python3
"""Soak: an echo of N bytes each way through the lossy-link emulator, checked by sha256.

Pairings: ``py-py`` (kcpgo client -> kcpgo listener, both in this process), ``py-go`` (kcpgo
client -> kcp-go 5.6.1 echo server, tests/interop/peer.go) and ``go-py`` (kcp-go client ->
kcpgo listener echoing). The lossy-link relay (kcpgo.testing.RelayProcess) runs as a child
process between the two, so its timing does not compete with this process's gevent hub.

Default link (the issue's): 25 ms each way (50 ms RTT), 10 % loss each way, 1 % reordering,
1 % duplication. Sessions: kcptun ``fast3``, windows 1024/1024, message mode (the Go peer's
defaults). Examples::

    python tools/soak.py --mb 20                         # the 27-cell matrix at 20 MiB
    python tools/soak.py --mb 50 --loss 30%              # the long variant (50 MiB, 30 %)
    python tools/soak.py --mb 2 --pairing py-go --crypt aes --fec 10/3 --corrupt 1%

Prints one line per cell and a JSON summary (``--json FILE``) with bytes each way, datagrams
and bytes the link dropped, retransmissions, FEC recoveries, CRC failures and wall time.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import gevent

import kcpgo
from kcpgo.snmp import Snmp
from kcpgo.testing import Impairment, RelayProcess, parse_impairment

PASSPHRASE = "it's a secrect"
PAIRINGS = ("py-py", "py-go", "go-py")
CRYPTS = (None, "aes", "salsa20")
FECS = ((0, 0), (10, 3), (3, 2))


#: The relay children's stderr: their "netem: seed 1; up: ...; down: ..." banner would repeat,
#: before every cell, the link that main() prints once (a relay that fails to start fails its
#: cell with "netem relay did not start").
_QUIET = subprocess.DEVNULL


def soak_link(loss: float = 0.10, corrupt: float = 0.0) -> Impairment:
    """The issue's link: 50 ms RTT, ``loss`` each way, 1 % reordering and duplication."""
    return Impairment(loss=loss, delay=25, reorder=0.01, reorder_delay=10, duplicate=0.01,
                      corrupt=corrupt)


def _py_opts(crypt: Optional[str], ds: int, ps: int, snmp: Snmp) -> Dict[str, Any]:
    opts: Dict[str, Any] = dict(data_shards=ds, parity_shards=ps, mode="fast3",
                                window=(1024, 1024), snmp=snmp)
    if crypt is not None:
        opts.update(crypt=crypt, key=PASSPHRASE)
    return opts


def _go_opts(crypt: Optional[str], ds: int, ps: int, nbytes: int, timeout: float):
    return dict(crypt=crypt or "", key=PASSPHRASE, ds=ds, ps=ps, nodelay=(1, 10, 2, 1),
                nbytes=nbytes, linger=0.5, timeout=int(timeout))


def _echo_forever(sess: Any, digest: "hashlib._Hash", counter: List[int]) -> None:
    while True:
        d = sess.recv(1 << 20)
        digest.update(d)
        counter[0] += len(d)
        sess.sendall(d)


def _client_roundtrip(sess: Any, data: bytes, deadline: float) -> Tuple[int, str]:
    """Send ``data`` and read the echo; returns (bytes echoed, sha256 hex of the echo)."""
    writer = gevent.spawn(sess.sendall, data)
    h = hashlib.sha256()
    got = 0
    try:
        while got < len(data):
            sess.settimeout(max(0.1, deadline - time.monotonic()))
            d = sess.recv(1 << 20)
            h.update(d)
            got += len(d)
        writer.get(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        writer.kill()
    return got, h.hexdigest()


def run_cell(pairing: str, crypt: Optional[str], ds: int, ps: int, nbytes: int,
             link: Impairment, seed: int = 1, timeout: float = 600.0) -> Dict[str, Any]:
    """One soak cell. Returns a result dict; ``ok`` is whether both sha256 checks passed."""
    from tests.support.gopeer import GoServer, payload, run_go_client
    data = payload(nbytes)
    want = hashlib.sha256(data).hexdigest()
    snmp = Snmp()
    res: Dict[str, Any] = dict(pairing=pairing, crypt=crypt or "nocrypt",
                               fec=f"{ds}/{ps}" if ds else "off", nbytes=nbytes)
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    relay: Optional[RelayProcess] = None
    try:
        if pairing == "py-py":
            with kcpgo.listen(("127.0.0.1", 0), **_py_opts(crypt, ds, ps, snmp)) as ln:
                relay = RelayProcess(ln.getsockname(), up=link, down=link, seed=seed,
                                     stderr=_QUIET).start()
                cli = kcpgo.dial(relay.address, **_py_opts(crypt, ds, ps, snmp))
                trip = gevent.spawn(_client_roundtrip, cli, data, deadline)
                ln.settimeout(30)
                srv, _ = ln.accept()
                h = hashlib.sha256()
                count = [0]
                echo = gevent.spawn(_echo_forever, srv, h, count)
                try:
                    got, echoed = trip.get(timeout=max(1.0, deadline - time.monotonic() + 5))
                finally:
                    trip.kill()
                    echo.kill()
                cli.close()
                srv.close()
                res.update(sent=nbytes, echoed=got, echo_sha_ok=echoed == want,
                           received_by_server=count[0], server_sha_ok=h.hexdigest() == want)
        elif pairing == "py-go":
            with GoServer(**_go_opts(crypt, ds, ps, nbytes, timeout)) as srv_go:
                relay = RelayProcess(srv_go.address, up=link, down=link, seed=seed,
                                     stderr=_QUIET).start()
                cli = kcpgo.dial(relay.address, **_py_opts(crypt, ds, ps, snmp))
                got, echoed = _client_roundtrip(cli, data, deadline)
                cli.drain(timeout=max(1.0, deadline - time.monotonic()))
                rc, out, err = gevent.get_hub().threadpool.spawn(srv_go.wait).get(
                    timeout=max(5.0, deadline - time.monotonic() + 15))
                cli.close()
                recv = srv_go.report.get("RECEIVED", [])
                res.update(sent=nbytes, echoed=got, echo_sha_ok=echoed == want,
                           received_by_server=recv[0][0] if recv else 0,
                           server_sha_ok=recv == [(nbytes, want)] and rc == 0,
                           go_stderr=err.strip()[-300:])
        elif pairing == "go-py":
            with kcpgo.listen(("127.0.0.1", 0), **_py_opts(crypt, ds, ps, snmp)) as ln:
                relay = RelayProcess(ln.getsockname(), up=link, down=link, seed=seed,
                                     stderr=_QUIET).start()
                client = gevent.get_hub().threadpool.spawn(
                    run_go_client, relay.address, proc_timeout=timeout + 10,
                    **_go_opts(crypt, ds, ps, nbytes, timeout))
                ln.settimeout(30)
                srv, _ = ln.accept()
                h = hashlib.sha256()
                count = [0]
                echo = gevent.spawn(_echo_forever, srv, h, count)
                try:
                    result = client.get(timeout=timeout + 20)
                finally:
                    echo.kill()
                srv.close()
                rep = result.report
                res.update(sent=rep.get("SENT", (0,))[0], echoed=rep.get("ECHOED", (0,))[0],
                           echo_sha_ok=result.returncode == 0 and rep.get("ECHOED") ==
                           (nbytes, want),
                           received_by_server=count[0], server_sha_ok=h.hexdigest() == want,
                           go_stderr=result.stderr.strip()[-300:])
        else:
            raise ValueError(f"unknown pairing {pairing!r}; valid: {', '.join(PAIRINGS)}")
    except Exception as e:  # reported, not raised: a soak run reports every cell
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        if relay is not None:
            res["link"] = relay.stop()
            relay.kill()
    res["seconds"] = round(time.monotonic() - t0, 2)
    res["ok"] = bool(res.get("echo_sha_ok") and res.get("server_sha_ok")
                     and "error" not in res)
    res["snmp"] = {k: getattr(snmp, k) for k in (
        "RetransSegs", "FastRetransSegs", "LostSegs", "FECRecovered", "InCsumErrors",
        "KCPInErrors", "RepeatSegs", "InPkts", "OutPkts")}
    return res


def summary_line(r: Dict[str, Any]) -> str:
    link = r.get("link") or {}
    up, down = link.get("up", {}), link.get("down", {})
    lost = up.get("dropped", 0) + down.get("dropped", 0)
    lost_b = up.get("bytes_dropped", 0) + down.get("bytes_dropped", 0)
    fwd = up.get("forwarded", 0) + down.get("forwarded", 0)
    mbps = 2 * r.get("nbytes", 0) / max(r["seconds"], 1e-9) / 1e6
    s = (f"{r['pairing']:5} {r['crypt']:8} fec {r['fec']:4} {'OK ' if r['ok'] else 'BAD'} "
         f"{r.get('sent', 0):>10,} B out {r.get('echoed', 0):>10,} B back "
         f"{r['seconds']:7.2f} s {mbps:6.2f} MB/s  link: fwd {fwd:,} dgrams, lost {lost:,} "
         f"dgrams / {lost_b:,} B, dup {up.get('duplicated', 0) + down.get('duplicated', 0)}, "
         f"reord {up.get('reordered', 0) + down.get('reordered', 0)}, "
         f"corrupt {up.get('corrupted', 0) + down.get('corrupted', 0)}; "
         f"retrans {r['snmp']['RetransSegs']:,}, fec rec {r['snmp']['FECRecovered']:,}, "
         f"csum err {r['snmp']['InCsumErrors']:,}")
    if "error" in r:
        s += f"  ERROR {r['error']}"
    return s


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=20.0, help="MiB each way")
    ap.add_argument("--loss", default="10%", help="loss each way (default 10%%)")
    ap.add_argument("--corrupt", default="0", help="corruption probability each way")
    ap.add_argument("--link", default=None,
                    help="full link spec instead of --loss/--corrupt (tools/netem.py syntax)")
    ap.add_argument("--pairing", action="append", choices=PAIRINGS)
    ap.add_argument("--crypt", action="append", help="nocrypt, aes, salsa20, ... (repeatable)")
    ap.add_argument("--fec", action="append", help="off, 10/3, 3/2, ... (repeatable)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per cell")
    ap.add_argument("--json", default=None, help="write all results to this file")
    args = ap.parse_args(argv)
    # `python3 tools/soak.py` puts tools/ on sys.path, not the repository root, and the Go peer
    # builder (tests/support/gopeer.py, which run_cell imports) is not installed with kcpgo.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    if args.link is not None:
        link = parse_impairment(args.link)
    else:
        probe = parse_impairment(f"loss={args.loss},corrupt={args.corrupt}")
        link = soak_link(probe.loss, probe.corrupt)
    crypts = [None if c in ("nocrypt", "") else c for c in args.crypt] if args.crypt \
        else list(CRYPTS)
    fecs = [(0, 0) if f == "off" else tuple(int(x) for x in f.split("/"))
            for f in args.fec] if args.fec else list(FECS)
    nbytes = int(args.mb * 1024 * 1024)
    print(f"soak: {nbytes:,} bytes each way; link each way: {link.spec()} "
          f"(tools/netem.py syntax)", flush=True)
    results = []
    for pairing in args.pairing or PAIRINGS:
        for crypt in crypts:
            for ds, ps in fecs:
                r = run_cell(pairing, crypt, ds, ps, nbytes, link, args.seed, args.timeout)
                results.append(r)
                print(summary_line(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(link=str(link), results=results), f, indent=1)
    bad = [r for r in results if not r["ok"]]
    print(f"{len(results) - len(bad)}/{len(results)} cells OK", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
