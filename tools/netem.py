#!/usr/bin/env python3
"""A lossy-link emulator: a UDP relay on loopback that impairs traffic like Linux ``netem``.

Kernel netem needs root and the ``sch_netem`` module, which CI machines often lack, so this
relay does the same job in user space. Clients send to the relay's front address; for every
client address the relay opens its own socket towards the upstream (like a NAT), so a listener
behind it sees one source address per client and its replies go back to the right client.

Each direction has its own :class:`Impairment` and its own seeded RNG, applied in this order
to every datagram read (``up`` = client -> upstream, ``down`` = upstream -> client):

1. **loss**: dropped with probability ``loss``;
2. **duplicate**: with probability ``duplicate`` a second copy follows (steps 3-5 apply to each
   copy);
3. **corrupt**: with probability ``corrupt``, 1..``corrupt_bits`` random bits are flipped (never
   in the first ``corrupt_skip`` bytes);
4. **queue limit**: a datagram is tail-dropped when ``queue`` datagrams of this direction are
   already held by the relay (netem's ``limit``: waiting for the bandwidth cap or in the delay
   line);
5. **bandwidth cap** ``rate`` (bytes/s): datagrams leave one after another, each taking
   ``len / rate`` seconds; then the **delay** ``delay`` ms plus a uniform ``0..jitter`` ms.
   Jitter alone never reorders (a datagram is not delivered before the one read before it,
   as on a real path); **reorder**: with probability ``reorder`` a datagram is instead held back
   by an extra ``reorder_delay`` ms, so the ones after it overtake it.

Counters per direction (:class:`LinkCounters`): received, forwarded, dropped, duplicated,
reordered, corrupted, queue_dropped, send_errors, bytes_in, bytes_out, bytes_dropped.

Use from tests (an OS thread with blocking sockets, so its timing does not depend on the
gevent hub of the test)::

    from tools.netem import Impairment, Relay
    with Relay(upstream=listener_addr, up=Impairment(loss=0.1, delay=25),
               down=Impairment(loss=0.1, delay=25), seed=1) as relay:
        kcpgo.dial(relay.address)
        ...
        print(relay.counters())

in a subprocess (its own CPU, for tests with Go peers and benchmarks): :class:`RelayProcess`,
or from the command line::

    python tools/netem.py --upstream 127.0.0.1:29900 --listen 127.0.0.1:29901 \\
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
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["Impairment", "LinkCounters", "Relay", "RelayProcess", "parse_impairment", "main"]

Address = Tuple[str, int]

#: Largest datagram read (kcp-go never sends more than 1500 bytes; a bit of room to see more).
RECV_SIZE = 65535
#: Socket buffers of the relay's sockets: loopback bursts overflow the kernel default.
SOCKBUF = 4 * 1024 * 1024
#: Datagrams read from one socket before the relay looks at its timers again.
READ_BURST = 256
#: A client flow with no traffic for this long is forgotten and its upstream socket closed.
FLOW_IDLE = 120.0


def _originals():
    """Real ``socket``, ``start_new_thread`` and selector even under gevent's monkey-patching:
    the relay must run in a real OS thread with blocking sockets."""
    import _thread
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a kcpgo dependency
        return socket.socket, _thread.start_new_thread, selectors.DefaultSelector
    return (monkey.get_original("socket", "socket"),
            monkey.get_original("_thread", "start_new_thread"),
            monkey.get_original("selectors", "DefaultSelector"))


@dataclass
class Impairment:
    """What one direction of the link does to datagrams. Probabilities are 0..1, times ms."""

    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 10.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    corrupt_bits: int = 1
    corrupt_skip: int = 0
    rate: float = 0.0          # bytes per second; 0 = unlimited
    queue: int = 0             # datagrams held per direction; 0 = unlimited

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate", "corrupt"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a probability in 0..1, got {v!r}")
        for name in ("delay", "jitter", "reorder_delay", "rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.corrupt_bits < 1 or self.corrupt_skip < 0 or self.queue < 0:
            raise ValueError("corrupt_bits must be >= 1, corrupt_skip and queue >= 0")

    @property
    def is_clean(self) -> bool:
        return self == Impairment()


_ALIASES = {"dup": "duplicate", "drop": "loss", "limit": "queue", "bw": "rate"}
_UNITS = {"ms": 1.0, "s": 1000.0, "us": 0.001}
_RATE_UNITS = {"k": 1e3, "m": 1e6, "g": 1e9}


def _parse_value(name: str, text: str) -> Any:
    t = text.strip().lower()
    if name in ("loss", "reorder", "duplicate", "corrupt"):
        return float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    if name in ("delay", "jitter", "reorder_delay"):
        for unit in ("ms", "us", "s"):
            if t.endswith(unit):
                return float(t[:-len(unit)]) * _UNITS[unit]
        return float(t)
    if name == "rate":
        # bytes/s: "2M", "500k", or bits with "bit"/"bps": "20mbit"
        bits = t.endswith("bit") or t.endswith("bps")
        if bits:
            t = t[:-3]
        mult = 1.0
        if t and t[-1] in _RATE_UNITS:
            mult = _RATE_UNITS[t[-1]]
            t = t[:-1]
        v = float(t) * mult
        return v / 8 if bits else v
    return int(t)


def parse_impairment(spec: str) -> Impairment:
    """``"loss=10%,delay=25ms,jitter=2,reorder=1%,dup=1%,corrupt=0.1%,rate=2M,queue=1000"``.

    Probabilities take ``%`` or a fraction, times ``ms``/``s``/``us`` (default ms), ``rate``
    bytes/s with k/M/G or bits with ``bit`` (``20mbit``). Empty string: a clean link.
    """
    kw: Dict[str, Any] = {}
    known = {f.name for f in fields(Impairment)}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        name = _ALIASES.get(name.strip(), name.strip())
        if not sep or name not in known:
            raise ValueError(f"bad impairment {part!r}; names: {', '.join(sorted(known))}")
        kw[name] = _parse_value(name, value)
    return Impairment(**kw)


@dataclass
class LinkCounters:
    """What the relay did in one direction."""

    received: int = 0       # datagrams read
    forwarded: int = 0      # datagrams written (duplicates included)
    dropped: int = 0        # random loss
    duplicated: int = 0     # extra copies made
    reordered: int = 0      # datagrams held back so later ones overtook them
    corrupted: int = 0      # datagrams with flipped bits
    queue_dropped: int = 0  # tail drops at the queue limit
    send_errors: int = 0    # sendto failed (full socket buffer, refused)
    bytes_in: int = 0
    bytes_out: int = 0
    bytes_dropped: int = 0  # bytes of the randomly lost datagrams


class _Direction:
    """One direction's impairment state: RNG, bottleneck and in-order delivery clock."""

    def __init__(self, imp: Impairment, rng: random.Random) -> None:
        self.imp = imp
        self.rng = rng
        self.c = LinkCounters()
        self.held = 0                 # datagrams of this direction in the relay's heap
        self.busy_until = 0.0         # when the bandwidth cap frees up
        self.last_in_order = 0.0      # delivery time of the last non-reordered datagram

    def admit(self, data: bytes, now: float) -> List[Tuple[float, bytes]]:
        """Datagrams to deliver (at absolute monotonic seconds) for one datagram read."""
        imp = self.imp
        rng = self.rng
        c = self.c
        c.received += 1
        c.bytes_in += len(data)
        if imp.loss and rng.random() < imp.loss:
            c.dropped += 1
            c.bytes_dropped += len(data)
            return []
        copies = 1
        if imp.duplicate and rng.random() < imp.duplicate:
            copies = 2
            c.duplicated += 1
        out = []
        for _ in range(copies):
            d = data
            if imp.corrupt and rng.random() < imp.corrupt and len(d) > imp.corrupt_skip:
                b = bytearray(d)
                for _ in range(rng.randint(1, imp.corrupt_bits)):
                    i = rng.randrange(imp.corrupt_skip, len(b))
                    b[i] ^= 1 << rng.randrange(8)
                d = bytes(b)
                c.corrupted += 1
            if imp.queue and self.held >= imp.queue:
                c.queue_dropped += 1
                continue
            t = now
            if imp.rate:
                start = max(now, self.busy_until)
                t = self.busy_until = start + len(d) / imp.rate
            t += imp.delay / 1000.0
            if imp.jitter:
                t += rng.uniform(0.0, imp.jitter) / 1000.0
            if imp.reorder and rng.random() < imp.reorder:
                t += imp.reorder_delay / 1000.0
                c.reordered += 1
            else:
                if t < self.last_in_order:
                    t = self.last_in_order
                self.last_in_order = t
            self.held += 1
            out.append((t, d))
        return out


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
    """

    def __init__(self, upstream: Address, up: Optional[Impairment] = None,
                 down: Optional[Impairment] = None, seed: Optional[int] = 0,
                 listen: Address = ("127.0.0.1", 0), flow_idle: float = FLOW_IDLE) -> None:
        _check_loopback(upstream, "upstream")
        _check_loopback(listen, "listen")
        self.upstream: Address = (socket.gethostbyname(upstream[0]), int(upstream[1]))
        self.seed = seed
        base = random.Random(seed)
        self._dirs = {"up": _Direction(up or Impairment(), random.Random(base.getrandbits(64))),
                      "down": _Direction(down or Impairment(),
                                         random.Random(base.getrandbits(64)))}
        self.flow_idle = flow_idle
        self._sock_cls, self._start_thread, self._selector_cls = _originals()
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
        s = self._sock_cls(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                s.setsockopt(socket.SOL_SOCKET, opt, SOCKBUF)
            except OSError:  # pragma: no cover - platform limits
                pass
        s.bind(bind)
        s.setblocking(False)
        return s

    def start(self) -> "Relay":
        """Start the relay thread (idempotent)."""
        if not self._started:
            self._started = True
            self._start_thread(self._run, ())
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
        return {name: asdict(d.c) for name, d in self._dirs.items()}

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

    def set_impairment(self, up: Optional[Impairment] = None,
                       down: Optional[Impairment] = None) -> None:
        """Change a direction's impairment on the fly (e.g. cut the link: ``loss=1``)."""
        if up is not None:
            self._dirs["up"].imp = up
        if down is not None:
            self._dirs["down"].imp = down

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
        sel = self._selector_cls()
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

    def _push(self, direction: str, items: List[Tuple[float, bytes]], sock: Any,
              dest: Address) -> None:
        for at, data in items:
            self._seq += 1
            heapq.heappush(self._heap, (at, self._seq, direction, sock, dest, data))

    def _read_front(self, sel: selectors.BaseSelector) -> None:
        front = self._front
        up = self._dirs["up"]
        now = time.monotonic()
        for _ in range(READ_BURST):
            try:
                data, addr = front.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                    continue
                raise
            flow = self._flows.get(addr)
            if flow is None:
                sock = self._new_socket(("127.0.0.1", 0))
                flow = self._flows[addr] = _Flow(addr, sock, now)
                sel.register(sock, selectors.EVENT_READ, flow)
            flow.last = now
            self._push("up", up.admit(data, now), flow.sock, self.upstream)

    def _read_upstream(self, flow: _Flow) -> None:
        down = self._dirs["down"]
        now = time.monotonic()
        for _ in range(READ_BURST):
            try:
                data, addr = flow.sock.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                    continue
                raise
            if addr != self.upstream:
                continue                       # not from the upstream: ignore
            flow.last = now
            self._push("down", down.admit(data, now), self._front, flow.client)

    def _deliver(self, now: float) -> None:
        heap = self._heap
        dirs = self._dirs
        while heap and heap[0][0] <= now:
            _, _, direction, sock, dest, data = heapq.heappop(heap)
            d = dirs[direction]
            d.held -= 1
            try:
                sock.sendto(data, dest)
            except OSError:
                d.c.send_errors += 1          # closed flow, full buffer, ICMP refusal
                continue
            d.c.forwarded += 1
            d.c.bytes_out += len(data)

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
            _sleep(min(left, 0.01))
        return True

    def __del__(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


def _sleep(seconds: float) -> None:
    try:
        from gevent import monkey
        real = monkey.get_original("time", "sleep")
    except ImportError:  # pragma: no cover
        real = time.sleep
    real(seconds)


# ---------------------------------------------------------------------- subprocess wrapper

class RelayProcess:
    """The emulator as a child process (``python tools/netem.py``): its own CPU and clock.

    ``start()`` waits for ``LISTENING``; ``stop()`` closes its stdin and returns the final
    counters it prints. The child also exits if this process dies (its stdin closes).
    """

    def __init__(self, upstream: Address, up: Optional[Impairment] = None,
                 down: Optional[Impairment] = None, seed: Optional[int] = 0,
                 listen: Address = ("127.0.0.1", 0)) -> None:
        self.argv = [sys.executable, os.path.abspath(__file__), "--stdin-eof",
                     "--upstream", f"{upstream[0]}:{upstream[1]}",
                     "--listen", f"{listen[0]}:{listen[1]}",
                     "--up", _spec(up or Impairment()), "--down", _spec(down or Impairment())]
        if seed is not None:
            self.argv += ["--seed", str(seed)]
        self.proc: Optional[subprocess.Popen] = None
        self.address: Optional[Address] = None
        self.final: Optional[Dict[str, Dict[str, int]]] = None

    def start(self, timeout: float = 10.0) -> "RelayProcess":
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        line = _readline(self.proc.stdout, timeout)
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise RuntimeError(f"netem relay did not start: {line!r}")
        host, _, port = line.split()[1].rpartition(":")
        self.address = (host, int(port))
        return self

    def stop(self, timeout: float = 10.0) -> Dict[str, Dict[str, int]]:
        if self.proc is None or self.final is not None:
            return self.final or {}
        try:
            self.proc.stdin.close()
        except OSError:  # pragma: no cover
            pass
        out = ""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
            self.proc.wait()
        out = self.proc.stdout.read()
        self.proc.stdout.close()
        self.final = {}
        for line in out.splitlines():
            if line.startswith("STATS "):
                self.final = json.loads(line[6:])
        return self.final

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "RelayProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _readline(stream: Any, timeout: float) -> str:
    """One line from a child's stdout, with a timeout (works with or without gevent)."""
    import select as _select
    try:
        from gevent import monkey
        real_select = monkey.get_original("select", "select")
    except ImportError:  # pragma: no cover
        real_select = _select.select
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = real_select([fd], [], [], left)
        if not r:
            break
        chunk = os.read(fd, 1)
        if not chunk:
            break
        buf += chunk
    return buf.decode()


def _spec(imp: Impairment) -> str:
    default = Impairment()
    return ",".join(f"{f.name}={getattr(imp, f.name)!r}" for f in fields(Impairment)
                    if getattr(imp, f.name) != getattr(default, f.name))


# ---------------------------------------------------------------------- command line

def _hostport(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return (host or "127.0.0.1", int(port))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description="UDP relay that emulates a lossy link (loopback only).",
        epilog="IMPAIRMENT: comma-separated name=value with names loss, delay, jitter, "
               "reorder, reorder_delay, duplicate (dup), corrupt, corrupt_bits, corrupt_skip, "
               "rate (bytes/s, or e.g. 20mbit), queue (limit). Example: "
               "loss=10%%,delay=25ms,reorder=1%%,dup=1%%")
    ap.add_argument("--listen", default="127.0.0.1:0", help="front address clients send to")
    ap.add_argument("--upstream", required=True, help="address datagrams are relayed to")
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
    relay = Relay(_hostport(args.upstream), up=up, down=down, seed=seed,
                  listen=_hostport(args.listen)).start()
    print(f"LISTENING {relay.address[0]}:{relay.address[1]}", flush=True)
    print(f"netem: seed {seed}; up: {up}; down: {down}", file=sys.stderr, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    if args.stdin_eof:
        def watch() -> None:
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except (OSError, ValueError):
                pass
            stop.set()
        threading.Thread(target=watch, daemon=True).start()
    t_end = time.monotonic() + args.duration if args.duration else None
    while not stop.is_set():
        wait = args.stats_every or 1.0
        if t_end is not None:
            wait = min(wait, max(0.0, t_end - time.monotonic()))
        stop.wait(wait)
        if t_end is not None and time.monotonic() >= t_end:
            break
        if args.stats_every:
            print(json.dumps(relay.counters()), file=sys.stderr, flush=True)
    counters = relay.stop()
    print("STATS " + json.dumps(counters), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
