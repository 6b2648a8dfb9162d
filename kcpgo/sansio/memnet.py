"""A deterministic in-memory network for sans-IO sessions, with a fake millisecond clock.

For tests and demos of the protocol layers without sockets or sleeping. Each direction of the link applies seeded random loss, duplication, delay with jitter (which
reorders) and an explicit reordering probability. Endpoints are :class:`kcpgo.connection.
Connection` objects; nothing sleeps, so a simulated minute runs in well under a second.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from .connection import Connection


@dataclass
class LinkProfile:
    loss: float = 0.0        # probability a datagram is dropped
    dup: float = 0.0         # probability a datagram is delivered twice
    reorder: float = 0.0     # probability a datagram is held back by an extra delay
    delay: int = 10          # one-way delay, ms
    jitter: int = 0          # uniform extra delay 0..jitter ms
    reorder_delay: int = 15  # extra delay of a reordered datagram, ms


@dataclass
class LinkStats:
    sent: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delivered: int = 0


@dataclass(order=True)
class _Event:
    at: int
    seq: int
    dst: int = field(compare=False)
    data: bytes = field(compare=False)


class Network:
    """Two endpoints (0 and 1) joined by two one-way links with their own profiles."""

    def __init__(self, a: Connection, b: Connection, seed: int,
                 profile: LinkProfile = LinkProfile(), back: Optional[LinkProfile] = None,
                 tamper: Optional[Callable[[random.Random, bytes], bytes]] = None) -> None:
        self.ends = (a, b)
        self.profiles = (profile, back if back is not None else profile)
        self.stats = (LinkStats(), LinkStats())
        self.rng = random.Random(seed)
        self.tamper = tamper
        self.now = 0
        self._events: List[_Event] = []
        self._seq = 0

    def _transmit(self, src: int, datagrams: List[bytes]) -> None:
        prof = self.profiles[src]
        st = self.stats[src]
        rng = self.rng
        for d in datagrams:
            st.sent += 1
            if rng.random() < prof.loss:
                st.dropped += 1
                continue
            copies = 1
            if prof.dup and rng.random() < prof.dup:
                copies = 2
                st.duplicated += 1
            for _ in range(copies):
                at = self.now + prof.delay + (rng.randint(0, prof.jitter) if prof.jitter else 0)
                if prof.reorder and rng.random() < prof.reorder:
                    at += prof.reorder_delay
                    st.reordered += 1
                data = self.tamper(rng, d) if self.tamper else d
                self._seq += 1
                heapq.heappush(self._events, _Event(at, self._seq, 1 - src, data))

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
            self.stats[1 - e.dst].delivered += 1
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
