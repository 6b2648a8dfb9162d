"""``python -m kcpgo netem``: the lossy-link emulator, a UDP relay on loopback that impairs
traffic like Linux netem (:class:`kcpgo.testing.Relay`; ``tools/netem.py`` and
``python -m kcpgo.testing.relay`` run the same relay).

Clients send to ``--listen``; the relay forwards to ``--upstream`` through its own socket per
client (like a NAT), so replies find their client. ``--loss 5%`` (or ``0.05``), ``--delay
25ms``, ``--jitter``, ``--reorder``, ``--duplicate``, ``--corrupt``, ``--rate 20mbit`` and
``--queue`` impair both directions; ``--both``/``--up``/``--down`` take the whole text form
(``loss=10%,delay=25ms``, :meth:`kcpgo.sansio.LinkProfile.parse`) and a direction's own
setting wins over the flags, which win over ``--both``.

Output: ``LISTENING host:port`` on stdout once bound; the seed and both profiles on stderr;
``--stats-every S`` prints the counters to stderr periodically; at the end one stdout line
``STATS <json>`` with the counters per direction. It ends on SIGTERM (status 0), after
``--duration`` seconds (0), at EOF on stdin with ``--stdin-eof`` (0), or on SIGINT (130).
Loopback only: it is a test tool, not a forwarder.

``--pcap FILE`` records every datagram the relay receives, both directions, in a pcap file
(:mod:`kcpgo.cli.pcap`, dpkt) for ``python -m kcpgo dissect``: a capture without root or
tcpdump. Each is written as it arrives, before any impairment, so the file holds what each
end sent (including what the relay then drops; its corruption and delays do not show), and
with the addresses a capture on the client's side would show: client -> ``--listen`` for
"up", ``--listen`` -> client for "down". The file is complete once netem has stopped (data
reaches it at least every second of traffic meanwhile).
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
from typing import Any, List, Optional, Sequence, Tuple

from ..address import parse_address
from ..testing.relay import DatagramHook, Impairment, Relay, serve
from . import EXIT_INTERRUPTED, HelpFormatter
from .pcap import PcapWriter

__all__ = ["main", "profiles"]

#: The per-setting flags: (flag, LinkProfile field, help).
SETTINGS: Tuple[Tuple[str, str, str], ...] = (
    ("--loss", "loss", "drop probability: 5%% or 0.05"),
    ("--delay", "delay", "one-way delay: 25ms, 0.1s, 500us (a bare number is ms)"),
    ("--jitter", "jitter", "extra random delay, uniform in 0..JITTER (never reorders alone)"),
    ("--reorder", "reorder", "probability that a datagram is held back --reorder-delay more"),
    ("--reorder-delay", "reorder_delay", "how long a reordered datagram is held (ms)"),
    ("--duplicate", "duplicate", "probability of a second copy"),
    ("--corrupt", "corrupt", "probability of flipped bits"),
    ("--rate", "rate", "bandwidth: bytes/s (2M) or bits (20mbit)"),
    ("--queue", "queue", "datagrams in flight per direction before tail drop (netem limit)"),
)

_EXAMPLES = """examples:
  python -m kcpgo netem --upstream 127.0.0.1:29900 --listen 127.0.0.1:29901 --loss 5% \\
      --delay 25ms
  python -m kcpgo netem --upstream 127.0.0.1:29900 --both loss=10%,delay=25ms,reorder=1% \\
      --seed 7 --duration 60
  python -m kcpgo netem --upstream 127.0.0.1:29900 --up loss=20% --down delay=50ms
  python -m kcpgo netem --upstream 127.0.0.1:29900 --listen 127.0.0.1:29901 --pcap kcp.pcap

Then point the client at the --listen address (e.g. 'python -m kcpgo echo client --remote
127.0.0.1:29901'); read a --pcap file with 'python -m kcpgo dissect kcp.pcap'."""


def _hostport(text: str) -> Tuple[str, int]:
    """``HOST:PORT`` or ``:PORT`` (127.0.0.1); ``argparse`` reports a malformed one."""
    try:
        host, port = parse_address(text, "relay address", passive=True)[:2]
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return (host or "127.0.0.1", port)


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    ap = argparse.ArgumentParser(
        prog="python -m kcpgo netem", formatter_class=HelpFormatter, epilog=_EXAMPLES,
        description="UDP relay on loopback that emulates a lossy link (like Linux netem).")
    ap.add_argument("--upstream", required=True, type=_hostport, metavar="HOST:PORT",
                    help="where datagrams are relayed to (the server)")
    ap.add_argument("--listen", default="127.0.0.1:0", type=_hostport, metavar="HOST:PORT",
                    help="front address clients send to (port 0: a free one, printed)")
    group = ap.add_argument_group("impairment of both directions")
    for flag, _, text in SETTINGS:
        group.add_argument(flag, metavar="VALUE", help=text)
    group.add_argument("--both", default="", metavar="SPEC",
                       help="the text form for both directions, e.g. loss=10%%,delay=25ms")
    group.add_argument("--up", default="", metavar="SPEC", help="client -> upstream only")
    group.add_argument("--down", default="", metavar="SPEC", help="upstream -> client only")
    ap.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")
    ap.add_argument("--stats-every", type=float, default=0.0, metavar="SECONDS",
                    help="also print the counters to stderr this often (0: never)")
    ap.add_argument("--duration", type=float, default=0.0, metavar="SECONDS",
                    help="stop after this long (0: run until stopped)")
    ap.add_argument("--stdin-eof", action="store_true", help="stop when stdin closes")
    ap.add_argument("--pcap", metavar="FILE",
                    help="write every datagram received, both directions, to this pcap file "
                         "for 'python -m kcpgo dissect' (needs dpkt): as it arrives, before "
                         "impairment (what each end sent, drops included), with the addresses "
                         "seen on the client's side (client <-> --listen); complete once "
                         "netem stops")
    return ap


def profiles(ns: argparse.Namespace) -> Tuple[Any, Any]:
    """``(up, down)`` :class:`~kcpgo.testing.Impairment` of the parsed flags; ``ValueError``
    naming the bad setting."""
    common = [ns.both] + [f"{name}={getattr(ns, name)}" for _, name, _ in SETTINGS
                          if getattr(ns, name) is not None]
    up = Impairment.parse(",".join(filter(None, common + [ns.up])))
    down = Impairment.parse(",".join(filter(None, common + [ns.down])))
    return up, down


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the relay until stopped; returns the exit status (2 for a usage error, 130 after
    SIGINT, 1 if it cannot bind or cannot write the ``--pcap`` file)."""
    ap = build_parser()
    ns = ap.parse_args(argv)
    try:
        up, down = profiles(ns)
    except ValueError as e:
        ap.error(str(e))
    seed = ns.seed if ns.seed is not None else random.SystemRandom().getrandbits(32)
    pcap: Optional[PcapWriter] = None
    try:
        if ns.pcap:
            pcap = _open_pcap(ap, ns.pcap)
        relay = Relay(ns.upstream, up=up, down=down, seed=seed, listen=ns.listen,
                      on_datagram=_recorder(pcap) if pcap is not None else None).start()
    except (OSError, ValueError) as e:
        if pcap is not None:
            pcap.close()
        print(f"python -m kcpgo netem: {e}", file=sys.stderr)
        return 1
    print(f"LISTENING {relay.address[0]}:{relay.address[1]}", flush=True)
    print(f"netem: seed {seed}; up: {up.spec() or 'clean'}; down: {down.spec() or 'clean'}",
          file=sys.stderr, flush=True)
    stop = threading.Event()
    why: List[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        why.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve(relay, stop, duration=ns.duration, stats_every=ns.stats_every,
              stdin_eof=ns.stdin_eof)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        try:
            counters = relay.stop()
        finally:
            failed = _close_pcap(pcap, ns.pcap) if pcap is not None else False
    print("STATS " + json.dumps(counters), flush=True)
    if signal.SIGINT in why:
        return EXIT_INTERRUPTED
    return 1 if failed else 0


def _open_pcap(ap: argparse.ArgumentParser, path: str) -> PcapWriter:
    """The :class:`~kcpgo.cli.pcap.PcapWriter` of ``--pcap``: a usage error (exit 2) without
    dpkt, ``OSError`` if the file cannot be created."""
    try:
        return PcapWriter(path)
    except ImportError as e:
        ap.error(f"--pcap: {e}")
        raise                                # not reached: ap.error exits


def _recorder(pcap: PcapWriter) -> DatagramHook:
    """The relay's ``on_datagram`` hook that writes each datagram to ``pcap``."""
    write = pcap.write

    def record(direction: str, data: bytes, src: Tuple[str, int],
               dst: Tuple[str, int]) -> None:
        write(src, dst, data)
    return record


def _close_pcap(pcap: PcapWriter, path: str) -> bool:
    """Close the capture and say on stderr how many datagrams it holds; True if writing it
    failed (said too)."""
    try:
        pcap.close()
    except OSError:
        pass                                 # kept in pcap.error
    if pcap.error is not None:
        print(f"python -m kcpgo netem: --pcap {path}: {pcap.error}", file=sys.stderr,
              flush=True)
        return True
    print(f"netem: {pcap.count} datagrams written to {path}", file=sys.stderr, flush=True)
    return False
