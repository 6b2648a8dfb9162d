"""A lossy-link emulator: a UDP relay on loopback that impairs traffic like Linux ``netem``.

Kernel netem needs root and the ``sch_netem`` module, which CI machines often lack, so this
relay does the same job in user space. Clients send to the relay's front address; for every
client address the relay opens its own socket towards the upstream (like a NAT), so a listener
behind it sees one source address per client and its replies go back to the right client.

Each direction has its own :class:`~kcpgo.sansio.LinkProfile` (here also called
``Impairment``: loss, duplicate, corrupt, queue, rate, delay, jitter, reorder; its docstring
gives the order they apply in) and its own seeded RNG (``up`` = client -> upstream, ``down`` =
upstream -> client). The in-memory :class:`~kcpgo.sansio.Network` applies the same profile
with the same code (:class:`~kcpgo.sansio.LinkModel`). Jitter alone never reorders here (a
datagram is not delivered before the one read before it, as on a real path); ``reorder``
does. Counters per direction: :class:`~kcpgo.sansio.LinkCounters`.

Use from tests (an OS thread with blocking sockets, so its timing does not depend on the
gevent hub of the test)::

    from kcpgo.testing import Impairment, Relay
    with Relay(upstream=listener_addr, up=Impairment(loss=0.1, delay=25),
               down=Impairment(loss=0.1, delay=25), seed=1) as relay:
        kcpgo.dial(relay.address)
        ...
        print(relay.counters())

in a subprocess (its own CPU, for tests with Go peers and benchmarks):
:class:`~kcpgo.testing.RelayProcess`, or from the command line (``python tools/netem.py`` is
the same program)::

    python -m kcpgo.testing.relay --upstream 127.0.0.1:29900 --listen 127.0.0.1:29901 \\
        --both loss=10%,delay=25ms,reorder=1%,duplicate=1% --seed 7

The CLI prints ``LISTENING <ip:port>`` once bound and, when stopped (SIGINT, SIGTERM, or EOF
on stdin with ``--stdin-eof``), one line ``STATS <json>`` with the counters.

Loopback only: the relay refuses non-127/8 addresses (it is a test tool, not a forwarder).
"""
from __future__ import annotations

import argparse
import errno
import heapq
import ipaddress
import json
import os
import random
import selectors
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from gevent.monkey import get_original

from ..address import parse_address
from ..runtime._originals import real_sleep, start_new_thread
from ..runtime.udp import UDPEndpoint
from ..sansio.memnet import LinkCounters, LinkModel, LinkProfile
from .process import RelayProcess, read_line

__all__ = ["Impairment", "LinkCounters", "Relay", "RelayProcess", "parse_impairment",
           "read_line", "main"]

Address = Tuple[str, int]
#: ``on_datagram(direction, data, src, dst)``: see :class:`Relay`.
DatagramHook = Callable[[str, bytes, Address, Address], None]

#: The relay's name for :class:`kcpgo.sansio.LinkProfile` (the same class).
Impairment = LinkProfile

#: Largest datagram read (kcp-go never sends more than 1500 bytes; a bit of room to see more).
RECV_SIZE = 65535
#: Socket buffers of the relay's sockets: loopback bursts overflow the kernel default.
SOCKBUF = 4 * 1024 * 1024
#: Datagrams read from one socket before the relay looks at its timers again.
READ_BURST = 256
#: A client flow with no traffic for this long is forgotten and its upstream socket closed.
FLOW_IDLE = 120.0

#: Real ``start_new_thread``, selector and ``sleep`` (and sockets: UDPEndpoint.open) even under
#: gevent's monkey-patching: the relay runs in an OS thread of its own, outside any gevent hub.
_RealSelector = get_original("selectors", "DefaultSelector")


def parse_impairment(spec: str) -> LinkProfile:
    """The relay's command-line syntax, ``"loss=10%,delay=25ms,dup=1%,rate=20mbit"``:
    :meth:`kcpgo.sansio.LinkProfile.parse`."""
    return LinkProfile.parse(spec)


class _Flow:
    """One client address and the relay's own socket towards the upstream for it."""

    __slots__ = ("client", "sock", "last")

    def __init__(self, client: Address, sock: socket.socket, now: float) -> None:
        self.client = client
        self.sock = sock
        self.last = now


def _check_loopback(addr: Address, what: str) -> None:
    try:
        ip = ipaddress.ip_address(socket.gethostbyname(addr[0]))
    except (OSError, ValueError):
        raise ValueError(f"{what} {addr!r} is not an IPv4 address") from None
    if not ip.is_loopback:
        raise ValueError(f"{what} {addr!r} is not a loopback address (the relay is a test tool)")


class Relay:
    """The emulator in an OS thread of this process. ``address`` is where clients send.

    ``up`` applies to client -> upstream datagrams, ``down`` to upstream -> client ones;
    ``seed`` makes the random decisions reproducible (same datagrams in the same order give
    the same decisions; real traffic timing still varies from run to run).

    ``on_datagram(direction, data, src, dst)``, if given, is called from the relay's thread
    for every datagram it receives, as it arrives and before any impairment (so it also sees
    the ones about to be dropped, and each only once): ``"up"`` from a client, with ``src``
    the client and ``dst`` :attr:`address`; ``"down"`` from the upstream, with ``src``
    :attr:`address` and ``dst`` the client, i.e. the addresses as the client sees its peer.
    It must be quick and must not raise (an exception ends the relay thread, kept in
    :attr:`error`); datagrams sent with :meth:`inject` do not pass through it.
    """

    def __init__(self, upstream: Address, up: Optional[LinkProfile] = None,
                 down: Optional[LinkProfile] = None, seed: Optional[int] = 0,
                 listen: Address = ("127.0.0.1", 0), flow_idle: float = FLOW_IDLE,
                 on_datagram: Optional[DatagramHook] = None) -> None:
        upstream = parse_address(upstream, "Relay upstream")
        listen = parse_address(listen, "Relay listen", passive=True)
        _check_loopback(upstream, "upstream")
        _check_loopback(listen, "listen")
        self.upstream: Address = (socket.gethostbyname(upstream[0]), int(upstream[1]))
        self.seed = seed
        base = random.Random(seed)
        self._dirs = {name: LinkModel(prof or LinkProfile(), random.Random(base.getrandbits(64)))
                      for name, prof in (("up", up), ("down", down))}
        self.flow_idle = flow_idle
        self.on_datagram = on_datagram
        self._front = self._new_socket(listen)
        self.address: Address = self._front.getsockname()
        self._flows: Dict[Address, _Flow] = {}
        self._heap: List[Tuple[float, int, str, Any, Any, bytes]] = []
        self._seq = 0
        self._stop = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.error: Optional[BaseException] = None
        self._exited = _RealEvent()
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def _new_socket(self, bind: Address) -> socket.socket:
        s = UDPEndpoint.open(bind, sockbuf=SOCKBUF)     # the real socket class, big buffers
        s.setblocking(False)
        return s

    def start(self) -> "Relay":
        """Start the relay thread (idempotent)."""
        if not self._started:
            self._started = True
            start_new_thread(self._run, ())
        return self

    def stop(self, timeout: float = 5.0) -> Dict[str, Dict[str, int]]:
        """Stop the thread, close every socket; returns the final :meth:`counters`."""
        if self._started and not self._stop:
            self._stop = True
            try:
                os.write(self._wake_w, b"x")
            except OSError:  # pragma: no cover
                pass
            if not self._exited.wait(timeout):  # pragma: no cover - a stuck relay
                raise RuntimeError("netem relay thread did not stop")
        elif not self._started and not self._stop:
            self._stop = True
            self._cleanup()
        return self.counters()

    close = stop

    def __enter__(self) -> "Relay":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def counters(self) -> Dict[str, Dict[str, int]]:
        """``{"up": {...}, "down": {...}}`` of :class:`LinkCounters` fields (a snapshot)."""
        return {name: asdict(d.counters) for name, d in self._dirs.items()}

    @property
    def flows(self) -> int:
        return len(self._flows)

    def clients(self) -> List[Address]:
        """Client addresses the relay currently has a flow for (oldest first)."""
        return list(self._flows)

    def inject(self, data: bytes, direction: str = "down",
               client: Optional[Address] = None) -> bool:
        """Send ``data`` at once, bypassing the impairment and the counters, as if it came
        through the relay: ``"down"`` to ``client`` from the relay's front address (the
        client takes it for its peer's), ``"up"`` to the upstream from ``client``'s flow
        socket (the upstream takes it for the client's). ``client`` defaults to the first
        flow. Safe to call from any thread; returns False if the send failed."""
        flow = self._flows[client] if client is not None else next(iter(self._flows.values()))
        try:
            if direction == "down":
                self._front.sendto(data, flow.client)
            elif direction == "up":
                flow.sock.sendto(data, self.upstream)
            else:
                raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
        except (BlockingIOError, ConnectionRefusedError):
            return False
        return True

    def set_impairment(self, up: Optional[LinkProfile] = None,
                       down: Optional[LinkProfile] = None) -> None:
        """Change a direction's impairment on the fly (e.g. cut the link: ``loss=1``)."""
        if up is not None:
            self._dirs["up"].profile = up
        if down is not None:
            self._dirs["down"].profile = down

    # ------------------------------------------------------------------ the thread

    def _cleanup(self) -> None:
        for f in self._flows.values():
            f.sock.close()
        self._flows.clear()
        self._front.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:  # pragma: no cover
                pass

    def _run(self) -> None:
        sel = _RealSelector()
        try:
            sel.register(self._front, selectors.EVENT_READ, None)
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            self._loop(sel)
        except BaseException as e:  # pragma: no cover - reported to the test
            self.error = e
        finally:
            sel.close()
            self._cleanup()
            self._exited.set()

    def _loop(self, sel: selectors.BaseSelector) -> None:
        heap = self._heap
        mono = time.monotonic
        next_reap = mono() + self.flow_idle
        while not self._stop:
            timeout = None
            if heap:
                timeout = max(0.0, heap[0][0] - mono())
            now = mono()
            if now >= next_reap:
                self._reap(sel, now)
                next_reap = now + self.flow_idle
            t_reap = max(0.0, next_reap - now)
            timeout = t_reap if timeout is None else min(timeout, t_reap)
            for key, _ in sel.select(timeout):
                if key.data == "wake":
                    return
                if key.data is None:
                    self._read_front(sel)
                else:
                    self._read_upstream(key.data)
            self._deliver(mono())

    def _push(self, direction: str, data: bytes, now: float, sock: Any, dest: Address) -> None:
        for at_ms, copy in self._dirs[direction].admit(data, now * 1000.0):
            self._seq += 1
            heapq.heappush(self._heap, (at_ms / 1000.0, self._seq, direction, sock, dest, copy))

    @staticmethod
    def _drain(sock: socket.socket) -> Iterator[Tuple[bytes, Address]]:
        """Up to READ_BURST datagrams waiting on ``sock`` (ICMP errors skipped)."""
        for _ in range(READ_BURST):
            try:
                yield sock.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                    raise

    def _read_front(self, sel: selectors.BaseSelector) -> None:
        now = time.monotonic()
        hook = self.on_datagram
        for data, addr in self._drain(self._front):
            if hook is not None:
                hook("up", data, addr, self.address)
            flow = self._flows.get(addr)
            if flow is None:
                sock = self._new_socket(("127.0.0.1", 0))
                flow = self._flows[addr] = _Flow(addr, sock, now)
                sel.register(sock, selectors.EVENT_READ, flow)
            flow.last = now
            self._push("up", data, now, flow.sock, self.upstream)

    def _read_upstream(self, flow: _Flow) -> None:
        now = time.monotonic()
        hook = self.on_datagram
        for data, addr in self._drain(flow.sock):
            if addr != self.upstream:
                continue                       # not from the upstream: ignore
            if hook is not None:
                hook("down", data, self.address, flow.client)
            flow.last = now
            self._push("down", data, now, self._front, flow.client)

    def _deliver(self, now: float) -> None:
        heap = self._heap
        dirs = self._dirs
        while heap and heap[0][0] <= now:
            _, _, direction, sock, dest, data = heapq.heappop(heap)
            try:
                sock.sendto(data, dest)
            except OSError:                   # closed flow, full buffer, ICMP refusal
                dirs[direction].release(data, sent=False)
                continue
            dirs[direction].release(data)

    def _reap(self, sel: selectors.BaseSelector, now: float) -> None:
        for addr, flow in list(self._flows.items()):
            if now - flow.last > self.flow_idle:
                sel.unregister(flow.sock)
                flow.sock.close()
                del self._flows[addr]


class _RealEvent:
    """A threading.Event that works under gevent monkey-patching (a pipe, waited with select)."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        self._set = False

    def set(self) -> None:
        self._set = True
        try:
            os.write(self._w, b"x")
        except OSError:  # pragma: no cover
            pass

    def wait(self, timeout: float) -> bool:
        if self._set:
            return True
        deadline = time.monotonic() + timeout
        while not self._set:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            real_sleep(min(left, 0.01))
        return True

    def __del__(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


def _hostport(text: str) -> Address:
    """``HOST:PORT`` or ``:PORT`` (127.0.0.1) from the command line; ``argparse`` reports a
    malformed one (:func:`kcpgo.address.parse_address`)."""
    try:
        host, port = parse_address(text, "relay address", passive=True)[:2]
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return (host or "127.0.0.1", port)


def serve(relay: "Relay", stop: threading.Event, *, duration: float = 0.0,
          stats_every: float = 0.0, stdin_eof: bool = False) -> None:
    """Keep the started ``relay`` running in the calling thread until ``stop`` is set,
    ``duration`` seconds passed (0: no limit) or, with ``stdin_eof``, stdin closed; with
    ``stats_every`` (seconds), print its counters as JSON to stderr that often. The relay is
    left running: the caller stops it (``python -m kcpgo netem`` and this module's main)."""
    if stdin_eof:
        threading.Thread(target=_stop_at_stdin_eof, args=(stop,), daemon=True).start()
    t_end = time.monotonic() + duration if duration else None
    while not stop.is_set():
        wait = stats_every or 1.0
        if t_end is not None:
            wait = min(wait, max(0.0, t_end - time.monotonic()))
        stop.wait(wait)
        if t_end is not None and time.monotonic() >= t_end:
            break
        if stats_every:
            print(json.dumps(relay.counters()), file=sys.stderr, flush=True)


def _stop_at_stdin_eof(stop: threading.Event) -> None:
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    stop.set()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description="UDP relay that emulates a lossy link (loopback only).",
        epilog="IMPAIRMENT: comma-separated name=value with names loss, delay, jitter, "
               "reorder, reorder_delay, duplicate (dup), corrupt, corrupt_bits, corrupt_skip, "
               "rate (bytes/s, or e.g. 20mbit), queue (limit). Example: "
               "loss=10%,delay=25ms,reorder=1%,dup=1%")
    ap.add_argument("--listen", default="127.0.0.1:0", type=_hostport,
                    help="front address clients send to (HOST:PORT)")
    ap.add_argument("--upstream", required=True, type=_hostport,
                    help="address datagrams are relayed to (HOST:PORT)")
    ap.add_argument("--both", default=None, metavar="IMPAIRMENT", help="both directions")
    ap.add_argument("--up", default="", metavar="IMPAIRMENT", help="client -> upstream")
    ap.add_argument("--down", default="", metavar="IMPAIRMENT", help="upstream -> client")
    ap.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")
    ap.add_argument("--stats-every", type=float, default=0.0, metavar="SECONDS",
                    help="also print counters to stderr periodically")
    ap.add_argument("--duration", type=float, default=0.0, help="stop after SECONDS")
    ap.add_argument("--stdin-eof", action="store_true", help="stop when stdin closes")
    args = ap.parse_args(argv)
    up = parse_impairment(args.both if args.both is not None else args.up)
    down = parse_impairment(args.both if args.both is not None else args.down)
    if args.both is not None and (args.up or args.down):
        ap.error("--both excludes --up/--down")
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    relay = Relay(args.upstream, up=up, down=down, seed=seed, listen=args.listen).start()
    print(f"LISTENING {relay.address[0]}:{relay.address[1]}", flush=True)
    print(f"netem: seed {seed}; up: {up}; down: {down}", file=sys.stderr, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    serve(relay, stop, duration=args.duration, stats_every=args.stats_every,
          stdin_eof=args.stdin_eof)
    counters = relay.stop()
    print("STATS " + json.dumps(counters), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
