#!/usr/bin/env python3
"""Fuzz kcpgo's receive path with random and mutated datagrams over real UDP.

Datagrams come from :class:`kcpgo.testing.Mutator`: mutations of the real kcp-go 5.6.1
datagrams captured in tests/vectors/packets.json (bit flips, byte overwrites, truncations,
extensions, huge KCP length fields, bad cmd/frg/wnd/una/sn, wrong or the target's conv, bad
FEC types, seqids and size fields, spliced datagrams), plus pure random datagrams of 0..1500
bytes. Against a target with a cipher, a mutated plaintext is either re-sealed with the
target's key (a valid CRC, so it reaches FEC and KCP: "authenticated garbage") or the
ciphertext itself is mutated ("garbage", which the CRC must reject).

Targets (:func:`run`): ``listener`` (datagrams from a pool of source addresses at a
``kcpgo.listen`` socket, while an acceptor takes and closes the sessions that appear) and
``session`` (datagrams injected from the peer's own address into a connected client session
and into its listener-side session, through the sockets of kcpgo.testing's relay). A legitimate echo
keeps running during the fuzz (its worst round-trip is reported), then a 256 KiB transfer
must arrive intact.

"Escaped" exceptions are the ones the runtime had to catch and log (``kcpgo`` logger records
at ERROR: "datagram handling failed", "session timer failed"), plus a dead reader greenlet.

    python tools/fuzz.py --count 1000000                   # the long run (all six cells)
    python tools/fuzz.py --count 50000 --target session --crypt aes
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import socket
import time
from typing import Any, Dict, List, Optional

import gevent

import kcpgo
from kcpgo import crypt as crypt_mod
from kcpgo.snmp import Snmp
from kcpgo.testing import Mutator, Relay, load_corpus, udp_rcvbuf_errors

PASSPHRASE = "it's a secrect"
#: The captured kcp-go datagrams the mutations start from.
VECTORS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                       "vectors", "packets.json")
TARGETS = ("listener", "listener-garbage", "session", "session-garbage")
#: Target "session" injects valid-looking datagrams from the peer's own address, which may
#: break the session (kcp-go's too): its echo's failure is recorded under this name, not as
#: ``ping_error``, which fails a cell.
_PING_BROKEN = "ping_broken_by_injection"


class _ErrorLog(logging.Handler):
    """Collects ERROR records of the kcpgo loggers: each is an exception the runtime caught."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _Done(Exception):
    pass


def _echo_loop(sess: Any, errors: List[BaseException]) -> None:
    try:
        while True:
            sess.sendall(sess.recv(1 << 16))
    except Exception as e:        # reported through echo_alive / echo_error
        errors.append(e)


def run(target: str, crypt_name: Optional[str], count: int, seed: int = 1,
        sources: int = 64, burst: int = 64) -> Dict[str, Any]:
    """Fuzz one target; returns counters and the checks' outcome (``ok``)."""
    errors = _ErrorLog()
    log = logging.getLogger("kcpgo")
    log.addHandler(errors)
    opts: Dict[str, Any] = dict(mode="fast3")
    block = None
    if crypt_name is not None:
        opts.update(crypt=crypt_name, key=PASSPHRASE)
        block = crypt_mod.new(crypt_name, crypt_mod.derive_key(PASSPHRASE))
    lsnmp, csnmp = Snmp(), Snmp()
    ln = kcpgo.listen(("127.0.0.1", 0), snmp=lsnmp, data_shards=10, parity_shards=3, **opts)
    relay = Relay(ln.getsockname()).start()
    res: Dict[str, Any] = dict(target=target, crypt=crypt_name or "nocrypt", count=count)
    socks: List[socket.socket] = []
    acceptor = echo = cli = srv = None
    t0 = time.monotonic()
    rcvbuf0 = udp_rcvbuf_errors()
    try:
        cli = kcpgo.dial(relay.address, snmp=csnmp, timeout=10, data_shards=10,
                         parity_shards=3, **opts)
        cli.sendall(b"hello")
        ln.settimeout(10)
        srv, _ = ln.accept()
        assert srv.recv(100) == b"hello"
        srv.settimeout(None)
        loop_errors: List[BaseException] = []
        echo = gevent.spawn(_echo_loop, srv, loop_errors)
        created = [0]

        def accept_loop() -> None:
            ln.settimeout(None)
            while True:
                s, _ = ln.accept()
                created[0] += 1
                s.close()
        acceptor = gevent.spawn(accept_loop)
        worst_rtt = [0.0]
        pings = [0]
        stop = [False]

        def pinger() -> None:
            try:
                ping_loop()
            except Exception as e:    # reported through ping_error (see _PING_BROKEN)
                loop_errors.append(e)
                res[_PING_BROKEN if target == "session" else "ping_error"] = repr(e)[:200]

        def ping_loop() -> None:
            i = 0
            while not stop[0]:
                msg = b"ping %d" % i
                t = time.monotonic()
                cli.sendall(msg)
                got = cli.recv(100)
                if got != msg:
                    raise AssertionError(f"legit echo got {got!r}, wanted {msg!r}")
                worst_rtt[0] = max(worst_rtt[0], time.monotonic() - t)
                pings[0] += 1
                i += 1
                gevent.sleep(0.02)
        ping = gevent.spawn(pinger)

        garbage_only = target.endswith("-garbage")
        if garbage_only and block is None:
            raise ValueError(f"{target} needs a cipher (without one nothing is garbage)")
        share = 0.0 if garbage_only else 0.5
        corpus = load_corpus(VECTORS)
        if target.startswith("listener"):
            mut = Mutator(seed, block, conv=None, sealed_share=share, corpus=corpus)
            for _ in range(sources):
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                u.bind(("127.0.0.1", 0))
                u.setblocking(False)
                socks.append(u)
            dests = [(u, ln.getsockname()) for u in socks]
        elif target.startswith("session"):
            # From the relay's sockets: the client sees its peer's address, the listener-side
            # session sees its client's address. Half the mutated datagrams carry the
            # session's own conv.
            mut = Mutator(seed, block, conv=cli.conv, sealed_share=share, corpus=corpus)
            gevent.sleep(0.05)
            dests = ["down", "up"]
        else:
            raise ValueError(f"unknown target {target!r}")
        sent = 0
        kinds = mut.counts
        r = mut.rng
        while sent < count:
            n = min(burst, count - sent)
            for _ in range(n):
                d, _ = mut.next()
                dest = dests[r.randrange(len(dests))]
                if isinstance(dest, str):
                    relay.inject(d, dest)
                    continue
                try:
                    dest[0].sendto(d, dest[1])
                except (BlockingIOError, ConnectionRefusedError):
                    pass
            sent += n
            gevent.sleep(0)
            if (ping.dead or echo.dead) and target != "session":
                break
        # The hub must still keep time: a 50 ms sleep right after the last burst.
        t = time.monotonic()
        gevent.sleep(0.05)
        res["sleep_lag"] = round(time.monotonic() - t - 0.05, 3)
        gevent.sleep(0.3)
        res.update(sent=sent, kinds=dict(kinds), fuzz_seconds=round(time.monotonic() - t0, 1),
                   sessions_created=created[0], pings=pings[0],
                   worst_ping_rtt=round(worst_rtt[0], 3))
        stop[0] = True
        if target == "session":
            # Valid-looking datagrams from the peer's own address (no cipher, or sealed with
            # the right key) are protocol-level injection: a forged una/sn/wnd, or a new conv
            # with sn 0 (a "restarted peer", §5.2), may break the session, kcp-go's too. Only
            # robustness is checked here; "session-garbage" checks the legitimate flow.
            ping.kill()
            res.update(legit_ok=True, legit_checked=False,
                       reader_alive=not ln._endpoint._reader.dead
                       and not cli._chan.endpoint._reader.dead, echo_alive=True)
            raise _Done
        ping.join(timeout=5)
        ping.kill()
        # Legitimate traffic must still flow, intact.
        data = os.urandom(256 * 1024)
        w = gevent.spawn(cli.sendall, data)
        got = bytearray()
        while len(got) < len(data):
            got += cli.recv(1 << 20)
        w.get(timeout=10)
        res["legit_ok"] = hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        res["reader_alive"] = not ln._endpoint._reader.dead and \
            not cli._chan.endpoint._reader.dead
        res["echo_alive"] = not echo.dead
    except _Done:
        pass
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        for g in (acceptor, echo):
            if g is not None:
                g.kill()
        for sess in (cli, srv):
            if sess is not None:
                sess.close()
        ln.close()
        relay.stop()
        for u in socks:
            u.close()
        log.removeHandler(errors)
    res.setdefault("ping_error", None)
    res["escaped"] = len(errors.records)
    res["escaped_samples"] = [r.getMessage() + (f" {r.exc_info[1]!r}" if r.exc_info else "")
                              for r in errors.records[:5]]
    res["kernel_drops"] = udp_rcvbuf_errors() - rcvbuf0
    res["listener_snmp"] = {k: getattr(lsnmp, k) for k in (
        "InCsumErrors", "KCPInErrors", "InPkts", "PassiveOpens", "FECErrs")}
    res["session_snmp"] = {k: getattr(csnmp, k) for k in ("InCsumErrors", "KCPInErrors",
                                                          "InPkts", "InErrs")}
    res["seconds"] = round(time.monotonic() - t0, 1)
    if target.endswith("-garbage"):
        # With a cipher, no datagram that fails the crypto check may create a session.
        res["garbage_sessions"] = lsnmp.PassiveOpens - 1
    res["ok"] = bool(res.get("garbage_sessions", 0) == 0 and res.get("legit_ok")
                     and (target == "session" or res["ping_error"] is None)
                     and res.get("reader_alive") and res.get("echo_alive")
                     and res["escaped"] == 0 and "error" not in res)
    return res


def summary_line(r: Dict[str, Any]) -> str:
    """One readable line per cell (the whole result goes to ``--json``)."""
    name = f"{r['target']} {r['crypt'] or 'nocrypt'}"
    parts = [f"{r.get('sent', 0):,} datagrams in {r['seconds']} s",
             f"{r['escaped']} exceptions escaped"]
    if "garbage_sessions" in r:
        parts.append(f"{r['garbage_sessions']} sessions created by garbage")
    if r.get("pings"):
        parts.append(f"{r['pings']:,} pings (worst RTT {r['worst_ping_rtt']} s)")
    if r.get("legit_checked", True) and "legit_ok" in r:
        parts.append("256 KiB transfer afterwards " + ("intact" if r["legit_ok"] else "CORRUPT"))
    if r.get(_PING_BROKEN):
        parts.append("injected datagrams broke the pings, as they may (not a failure)")
    if r.get("ping_error"):
        parts.append(f"ping failed: {r['ping_error']}")
    if r.get("error"):
        parts.append(f"error: {r['error']}")
    return f"{'OK  ' if r['ok'] else 'FAIL'} {name}: " + "; ".join(parts)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000, help="datagrams per cell")
    ap.add_argument("--target", action="append", choices=TARGETS)
    ap.add_argument("--crypt", action="append", help="nocrypt, aes, salsa20, ...")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None, help="write every cell's full result to this file")
    args = ap.parse_args(argv)
    crypts = [None if c == "nocrypt" else c for c in (args.crypt or ["nocrypt", "aes"])]
    results = []
    for target in args.target or TARGETS:
        for c in crypts:
            if target.endswith("-garbage") and c is None:
                continue
            r = run(target, c, args.count, args.seed)
            results.append(r)
            print(summary_line(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    total = sum(r.get("sent", 0) for r in results)
    escaped = sum(r["escaped"] for r in results)
    print(f"fuzzed {total:,} datagrams, {escaped} exceptions escaped, "
          f"{sum(r['ok'] for r in results)}/{len(results)} cells OK", flush=True)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
