"""An impaired link, described once: :class:`LinkProfile`, and a deterministic in-memory network
for sans-IO sessions with a fake millisecond clock, :class:`Network`.

:class:`LinkProfile` is the one vocabulary for what a link does to datagrams: the in-memory
:class:`Network` here and the UDP relay (:mod:`kcpgo.testing.relay`, which calls it
``Impairment``) both take it, and both apply it through :class:`LinkModel`. The text form
(``"loss=10%,delay=25ms,dup=1%"``, :meth:`LinkProfile.parse`) is the relay's command line.

:class:`Network` is for tests and demos of the protocol layers without sockets or sleeping:
its endpoints are :class:`kcpgo.sansio.Connection` objects, each direction has its own profile
and every random decision comes from one seeded RNG, so a run is reproducible and a simulated
minute runs in well under a second. Pure code: no I/O, no clock.
"""
from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional, Tuple

from .connection import Connection

__all__ = ["LinkProfile", "LinkCounters", "LinkModel", "Network"]

Tamper = Callable[[random.Random, bytes], bytes]


@dataclass
class LinkProfile:
    """What one direction of a link does to datagrams. Probabilities are 0..1, times are
    milliseconds, ``rate`` is bytes per second; the defaults are a clean link.

    Applied in this order to every datagram (:class:`LinkModel`):

    1. ``loss``: dropped with this probability;
    2. ``duplicate``: with this probability a second copy follows (steps 3-5 apply to each);
    3. ``corrupt``: with this probability 1..``corrupt_bits`` random bits are flipped, never
       in the first ``corrupt_skip`` bytes;
    4. ``queue``: tail-dropped when ``queue`` datagrams of this direction are already in
       flight (netem's ``limit``; 0 = unlimited);
    5. ``rate``: datagrams leave one after another, each taking ``len / rate`` seconds
       (0 = unlimited); then ``delay`` plus a uniform ``0..jitter``; ``reorder``: with this
       probability the datagram is held back ``reorder_delay`` more, so later ones overtake it.

    Where the two links differ: the relay never delivers a datagram before one read earlier
    unless ``reorder`` picked it (jitter alone keeps the order, as on a real path), while the
    in-memory :class:`Network` draws each datagram's delay on its own, so there jitter reorders
    too; and the Network's clock ticks in whole milliseconds, so it rounds the times (jitter
    is a whole number of ms).
    """

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
    queue: int = 0             # datagrams in flight per direction; 0 = unlimited

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
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
        return self == LinkProfile()

    @classmethod
    def parse(cls, spec: str) -> "LinkProfile":
        """``"loss=10%,delay=25ms,jitter=2,reorder=1%,dup=1%,corrupt=0.1%,rate=2M,queue=1000"``.

        Probabilities take ``%`` or a fraction, times ``ms``/``s``/``us`` (default ms),
        ``rate`` bytes/s with k/M/G or bits with ``bit`` (``20mbit``). Aliases: ``dup``
        (duplicate), ``drop`` (loss), ``limit`` (queue), ``bw`` (rate). Empty string: a clean
        link. ``ValueError`` for an unknown name or a value out of range.
        """
        kw: Dict[str, Any] = {}
        known = {f.name for f in fields(cls)}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, value = part.partition("=")
            name = _ALIASES.get(name.strip(), name.strip())
            if not sep or name not in known:
                raise ValueError(f"bad link setting {part!r}; names: {', '.join(sorted(known))}")
            kw[name] = _parse_value(name, value)
        return cls(**kw)

    def spec(self) -> str:
        """The text form :meth:`parse` reads back: only the fields that differ from the
        defaults (``""`` for a clean link)."""
        default = LinkProfile()
        return ",".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                        if getattr(self, f.name) != getattr(default, f.name))


_PROBABILITIES = ("loss", "reorder", "duplicate", "corrupt")
_ALIASES = {"dup": "duplicate", "drop": "loss", "limit": "queue", "bw": "rate"}
_TIME_UNITS = {"ms": 1.0, "us": 0.001, "s": 1000.0}       # "ms" and "us" before "s"
_RATE_UNITS = {"k": 1e3, "m": 1e6, "g": 1e9}


def _parse_value(name: str, text: str) -> Any:
    t = text.strip().lower()
    if name in _PROBABILITIES:
        return float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    if name in ("delay", "jitter", "reorder_delay"):
        for unit, ms in _TIME_UNITS.items():
            if t.endswith(unit):
                return float(t[:-len(unit)]) * ms
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


@dataclass
class LinkCounters:
    """What one direction of a link did."""

    received: int = 0       # datagrams offered to the link
    forwarded: int = 0      # datagrams delivered (duplicates included)
    dropped: int = 0        # random loss
    duplicated: int = 0     # extra copies made
    reordered: int = 0      # datagrams held back so later ones overtook them
    corrupted: int = 0      # datagrams with flipped bits
    queue_dropped: int = 0  # tail drops at the queue limit
    send_errors: int = 0    # the relay's sendto failed (full socket buffer, refused)
    bytes_in: int = 0
    bytes_out: int = 0
    bytes_dropped: int = 0  # bytes of the randomly lost datagrams


class LinkModel:
    """One direction of an impaired link, without a clock: :meth:`admit` takes a datagram and
    the time in ms and says when each copy of it arrives; :meth:`release` is called as each
    leaves. Every random decision comes from ``rng``.

    ``keep_order``: a datagram that ``reorder`` did not pick never arrives before one admitted
    earlier (the relay). ``whole_ms``: times are whole milliseconds and jitter a whole number
    of them (the in-memory network). ``tamper(rng, data) -> data`` runs last on every copy.
    """

    def __init__(self, profile: LinkProfile, rng: random.Random, *, keep_order: bool = True,
                 whole_ms: bool = False, tamper: Optional[Tamper] = None) -> None:
        self.profile = profile
        self.rng = rng
        self.keep_order = keep_order
        self.whole_ms = whole_ms
        self.tamper = tamper
        self.counters = LinkCounters()
        self.held = 0                 # copies admitted and not yet released
        self._busy_until = 0.0        # when the bandwidth cap frees up
        self._last_in_order = 0.0     # arrival time of the last copy not reordered

    def admit(self, data: bytes, now: float) -> List[Tuple[float, bytes]]:
        """``(arrival time in ms, bytes)`` of each copy that gets through (0, 1 or 2)."""
        p = self.profile
        rng = self.rng
        c = self.counters
        whole = self.whole_ms
        c.received += 1
        c.bytes_in += len(data)
        if rng.random() < p.loss:
            c.dropped += 1
            c.bytes_dropped += len(data)
            return []
        copies = 1
        if p.duplicate and rng.random() < p.duplicate:
            copies = 2
            c.duplicated += 1
        out = []
        for _ in range(copies):
            d = data
            if p.corrupt and rng.random() < p.corrupt and len(d) > p.corrupt_skip:
                b = bytearray(d)
                for _ in range(rng.randint(1, p.corrupt_bits)):
                    b[rng.randrange(p.corrupt_skip, len(b))] ^= 1 << rng.randrange(8)
                d = bytes(b)
                c.corrupted += 1
            if p.queue and self.held >= p.queue:
                c.queue_dropped += 1
                continue
            t = now
            if p.rate:
                t = self._busy_until = max(now, self._busy_until) + len(d) * 1000.0 / p.rate
                if whole:
                    t = math.ceil(t)
            if whole:
                t += round(p.delay) + (rng.randint(0, round(p.jitter)) if p.jitter else 0)
            else:
                t += p.delay + (rng.uniform(0.0, p.jitter) if p.jitter else 0.0)
            if p.reorder and rng.random() < p.reorder:
                t += round(p.reorder_delay) if whole else p.reorder_delay
                c.reordered += 1
            elif self.keep_order:
                t = max(t, self._last_in_order)
                self._last_in_order = t
            if self.tamper is not None:
                d = self.tamper(rng, d)
            self.held += 1
            out.append((t, d))
        return out

    def release(self, data: bytes, sent: bool = True) -> None:
        """One admitted copy left the link (``sent=False``: its delivery failed)."""
        self.held -= 1
        if sent:
            self.counters.forwarded += 1
            self.counters.bytes_out += len(data)
        else:
            self.counters.send_errors += 1


@dataclass(order=True)
class _Event:
    at: int
    seq: int
    dst: int = field(compare=False)
    data: bytes = field(compare=False)


class Network:
    """Two endpoints (0 and 1) joined by two one-way links with their own profiles
    (``back``, the 1 -> 0 direction, defaults to ``profile``). ``tamper(rng, data) -> data``
    runs on every datagram after the profile. ``stats``: each direction's
    :class:`LinkCounters`; ``links``: its :class:`LinkModel` (set ``links[i].profile`` to
    change a direction mid-run)."""

    def __init__(self, a: Connection, b: Connection, seed: int,
                 profile: Optional[LinkProfile] = None, back: Optional[LinkProfile] = None,
                 tamper: Optional[Tamper] = None) -> None:
        self.ends = (a, b)
        self.rng = random.Random(seed)
        profile = profile if profile is not None else LinkProfile()
        self.links = tuple(LinkModel(p, self.rng, keep_order=False, whole_ms=True,
                                     tamper=tamper)
                           for p in (profile, back if back is not None else profile))
        self.stats = tuple(link.counters for link in self.links)
        self.now = 0
        self._events: List[_Event] = []
        self._seq = 0

    @property
    def profiles(self) -> Tuple[LinkProfile, ...]:
        return tuple(link.profile for link in self.links)

    def _transmit(self, src: int, datagrams: List[bytes]) -> None:
        link = self.links[src]
        for d in datagrams:
            for at, data in link.admit(d, self.now):
                self._seq += 1
                heapq.heappush(self._events, _Event(int(at), self._seq, 1 - src, data))

    def step(self) -> None:
        """Advance to the next event or timer, deliver what is due, let both ends send."""
        nxt: Optional[int] = self._events[0].at if self._events else None
        for end in self.ends:
            d = end.next_deadline(self.now)
            if d is not None and (nxt is None or d < nxt):
                nxt = d
        if nxt is None:
            nxt = self.now + 1
        self.now = max(self.now, nxt)
        ev = self._events
        while ev and ev[0].at <= self.now:
            e = heapq.heappop(ev)
            self.links[1 - e.dst].release(e.data)
            self.ends[e.dst].receive_datagram(e.data, self.now)
        for i, end in enumerate(self.ends):
            out = end.datagrams_to_send(self.now)
            if out:
                self._transmit(i, out)

    def transfer(self, payload: bytes, *, chunk: int = 65536, limit_ms: int = 600_000,
                 both_ways: bool = False) -> Tuple[bytes, bytes]:
        """Send ``payload`` from end 0 to end 1 (and the reverse too if ``both_ways``).

        The sender writes while kcp-go's Write would not block; the receiver reads eagerly.
        Returns what each end received (end 1's, end 0's). Stops at ``limit_ms`` simulated ms.
        """
        senders = [(0, 1)] + ([(1, 0)] if both_ways else [])
        sent = [0, 0]
        got: List[List[bytes]] = [[], []]
        ngot = [0, 0]
        total = len(payload)
        while self.now < limit_ms:
            for s, r in senders:
                end = self.ends[s]
                while sent[s] < total and end.writable():
                    n = min(chunk, total - sent[s])
                    end.send(payload[sent[s]:sent[s] + n])
                    sent[s] += n
            self.step()
            for s, r in senders:
                end = self.ends[r]
                while True:
                    m = end.recv()
                    if m is None:
                        break
                    got[r].append(m)
                    ngot[r] += len(m)
            if all(ngot[r] >= total for _, r in senders):
                break
        return b"".join(got[1]), b"".join(got[0])
