"""A sans-IO kcp-go session: one KCP state machine plus its datagram pipeline.

This is what the gevent runtime drives, and what tests drive over an in-memory link:

* ``send(data)`` / ``recv()`` — the application side (kcp-go ``Write`` / ``Read`` semantics);
* ``receive_datagram(wire, now)`` — one datagram from the peer;
* ``datagrams_to_send(now)`` — wire datagrams due now;
* ``next_deadline(now)`` — when to call ``datagrams_to_send`` again, or ``None`` when idle.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

from .kcp import FLUSH_FULL, KCP
from .packet import MTU_LIMIT, PacketCodec
from .snmp import DEFAULT_SNMP, Snmp

if TYPE_CHECKING:  # pragma: no cover
    from .crypt import BlockCrypt

__all__ = ["Connection", "MODES", "MTU_DEFAULT", "MTU_MIN"]

#: §7: kcptun's presets, as (nodelay, interval, resend, nc).
MODES = {
    "normal": (0, 40, 2, 1),
    "fast": (0, 30, 2, 1),
    "fast2": (1, 20, 2, 1),
    "fast3": (1, 10, 2, 1),
}
MTU_DEFAULT = 1400
#: §1.4 [5.6.1]: KCP refuses an MTU below 50.
MTU_MIN = 50


class Connection:
    """One KCP conversation with its FEC/crypto pipeline, driven by explicit calls and ``now``.

    ``mtu`` is the session MTU: the largest wire datagram, headers included (§1.4).
    """

    def __init__(self, conv: int, *, crypt: Optional["BlockCrypt"] = None, data_shards: int = 0,
                 parity_shards: int = 0, mtu: int = MTU_DEFAULT, mode: Optional[str] = None,
                 snmp: Optional[Snmp] = None) -> None:
        self.snmp = snmp if snmp is not None else DEFAULT_SNMP
        self.codec = PacketCodec(crypt, data_shards, parity_shards, self.snmp)
        self.kcp = KCP(conv, mtu=MTU_DEFAULT - self.codec.overhead, snmp=self.snmp)
        self.mtu = MTU_DEFAULT
        self.set_mtu(mtu)
        if mode is not None:
            self.set_mode(mode)
        #: kcp-go ``SetWriteDelay``: when False (the default) every send is flushed at once.
        self.write_delay = False
        #: Flush pending ACKs after every received batch instead of waiting for the tick.
        self.ack_per_batch = True

    @property
    def conv(self) -> int:
        return self.kcp.conv

    # ------------------------------------------------------------------ configuration

    def set_mtu(self, mtu: int) -> None:
        """Set the session MTU (wire datagram size). ``ValueError`` outside 50..1500."""
        if not MTU_MIN <= mtu <= MTU_LIMIT:
            raise ValueError(f"mtu must be in {MTU_MIN}..{MTU_LIMIT}, got {mtu!r}")
        kcp_mtu = self.codec.kcp_mtu(mtu)
        if kcp_mtu <= 24:
            raise ValueError(f"mtu {mtu} leaves no room for data after "
                             f"{self.codec.overhead} header bytes")
        self.kcp.set_mtu(kcp_mtu)
        self.mtu = mtu

    def set_mode(self, mode: str) -> None:
        """Apply one of kcptun's presets: normal, fast, fast2, fast3 (§7)."""
        try:
            params: Tuple[int, int, int, int] = MODES[mode]
        except KeyError:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}") from None
        self.kcp.set_nodelay(*params)

    # ------------------------------------------------------------------ application side

    def send(self, data: bytes) -> int:
        """Queue ``data`` (kcp-go ``Write``: chunks of <= mss, never partial). Returns its length."""
        n = self.kcp.write(data)
        kcp = self.kcp
        if n and (not self.write_delay or kcp.wait_snd() >= kcp.snd_wnd):
            kcp.flush_requested = FLUSH_FULL
        self.snmp.BytesSent += n
        return n

    def writable(self) -> bool:
        """Whether kcp-go's Write would accept data now (5.6.1: below both windows)."""
        kcp = self.kcp
        waiting = kcp.wait_snd()
        return waiting < kcp.snd_wnd and waiting < kcp.rmt_wnd

    def readable(self) -> bool:
        """Whether :meth:`recv` would return data (or skip an empty message) now."""
        return self.kcp.peek_size() >= 0

    def recv(self) -> Optional[bytes]:
        """The next message (stream mode: the next segment), or ``None`` if none is ready.

        Zero-length messages (kcp-go never sends one) are skipped rather than returned, because
        ``b""`` means end-of-stream to socket code.
        """
        kcp = self.kcp
        while True:
            msg = kcp.recv()
            if msg is None:
                return None
            if msg:
                self.snmp.BytesReceived += len(msg)
                return msg

    def recv_stream(self, limit: int) -> bytes:
        """Stream mode: up to ``limit`` bytes of whole segments joined (at least one segment)."""
        data = self.kcp.recv_stream(limit)
        self.snmp.BytesReceived += len(data)
        return data

    # ------------------------------------------------------------------ network side

    def receive_datagram(self, wire: bytes, now: int) -> bool:
        """Feed one datagram from the peer. Returns whether it reached KCP (else dropped)."""
        return self.codec.receive(wire, self.kcp, now)

    def datagrams_to_send(self, now: int, batch_acks: Optional[bool] = None) -> List[bytes]:
        """Wire datagrams due at ``now``: requested flushes, the periodic tick, batch ACKs.

        ``batch_acks`` overrides :attr:`ack_per_batch` for this call (a driver that flushes
        the ACKs a little later, see :meth:`flush_acks`, passes False).
        """
        out = self.kcp.update(now, self.ack_per_batch if batch_acks is None else batch_acks)
        if not out:
            return out
        return self.codec.encode_many(out)

    def flush_acks(self, now: int) -> List[bytes]:
        """Wire datagrams carrying the pending ACKs only (none if there are none)."""
        if not self.kcp._acks:
            return []
        return self.codec.encode_many(self.kcp.flush(now, ack_only=True))

    def flush(self, now: int) -> List[bytes]:
        """A full flush now regardless of timers (kcp-go's final flush on Close)."""
        return self.codec.encode_many(self.kcp.flush(now))

    def next_deadline(self, now: int) -> Optional[int]:
        """Absolute ms of the next needed :meth:`datagrams_to_send`, or ``None`` when idle."""
        return self.kcp.check(now)
