"""``Connection``: one kcp-go session, sans-IO. The only object a driver touches.

A driver (the gevent runtime's :class:`~kcpgo.runtime.channel.Channel`, the in-memory
:class:`~kcpgo.sansio.memnet.Network`, your own event loop) talks to it in four ways, as to
aioquic's ``QuicConnection``:

* application calls: :meth:`send` / :meth:`recv` / :meth:`recv_stream` (kcp-go ``Write`` /
  ``Read`` semantics), with :meth:`writable`, :meth:`send_room`, :meth:`readable`;
* network input: :meth:`receive_datagram` (a wire datagram) or :meth:`receive_payload` (one a
  demultiplexer already opened with :meth:`PacketCodec.open <kcpgo.sansio.packet.PacketCodec.open>`);
* output: :meth:`datagrams_to_send`, :meth:`flush_acks`, :meth:`flush` return wire datagrams;
* time: every call that needs it takes ``now`` (integer ms); :meth:`next_deadline` says when
  to call :meth:`datagrams_to_send` again, or ``None`` when idle.

State a driver reads: :attr:`dead` (the dead-link event: a segment was sent ``dead_link``
times), :attr:`pending_acks`, :attr:`waitsnd`, :attr:`in_flight`, :attr:`window_update_due`,
and the RTT estimates.
Nothing here reads a clock or touches a socket (docs/protocol.md §1, §2.3, §5).
"""
from __future__ import annotations

from operator import index
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from ..snmp import DEFAULT_SNMP, Snmp
from .kcp import KCP
from .kcpdefs import FLUSH_FULL, MTU_DEF, PROBE_INIT
from .packet import PacketCodec
from .wire import MTU_LIMIT, OVERHEAD

if TYPE_CHECKING:  # pragma: no cover
    from ..codec.crypt import BlockCrypt

__all__ = ["Connection", "MODES", "MTU_DEFAULT", "MTU_MIN", "kcp_mtu_for"]

#: §7: kcptun's presets, as (nodelay, interval, resend, nc).
MODES = {
    "normal": (0, 40, 2, 1),
    "fast": (0, 30, 2, 1),
    "fast2": (1, 20, 2, 1),
    "fast3": (1, 10, 2, 1),
}
#: §1.4: kcp-go's default session MTU (the KCP default, before cipher and FEC headers).
MTU_DEFAULT = MTU_DEF
#: §1.4 [5.6.1]: KCP refuses an MTU below 50.
MTU_MIN = 50


def kcp_mtu_for(mtu: int, overhead: int) -> int:
    """The KCP-level MTU for a session ``mtu`` (wire bytes) when the pipeline adds ``overhead``
    bytes (§1.4). ``ValueError`` outside 50..1500 or when no data would fit, ``TypeError``
    if ``mtu`` is not an int."""
    mtu = index(mtu)
    if not MTU_MIN <= mtu <= MTU_LIMIT:
        raise ValueError(f"mtu must be in {MTU_MIN}..{MTU_LIMIT}, got {mtu!r}")
    if mtu - overhead <= OVERHEAD:
        raise ValueError(f"mtu {mtu} leaves no room for data after {overhead} header bytes "
                         f"and the {OVERHEAD}-byte KCP header")
    return mtu - overhead


class Connection:
    """One KCP conversation with its FEC/crypto pipeline, driven by explicit calls and ``now``.

    ``conv``: u32 conversation id. ``crypt``: a :class:`~kcpgo.codec.crypt.BlockCrypt` or
    ``None`` (no crypto header). FEC framing is sent when both shard counts are > 0. ``mtu``:
    the largest wire datagram, headers included (§1.4; ``ValueError`` outside 50..1500).
    ``mode``: a kcptun preset (§7). ``admit_limit``: at most this many new segments per flush
    (``None``: all the window allows, as kcp-go). ``probe_init``: ms before the first probe of
    a closed peer window (7000 in 5.6.1, 500 in the latest kcp-go). ``window_recovery``:
    recover a lost window update in about an RTO (docs/deviations.md D60; kcp-go waits for
    its probe timer). ``stream``, ``window``
    (segments; values <= 0 keep the default), ``ack_nodelay``, ``write_delay``: as the setters.
    """

    def __init__(self, conv: int, *, crypt: Optional["BlockCrypt"] = None, data_shards: int = 0,
                 parity_shards: int = 0, mtu: int = MTU_DEFAULT, mode: Optional[str] = None,
                 snmp: Optional[Snmp] = None, admit_limit: Optional[int] = None,
                 probe_init: int = PROBE_INIT, window_recovery: bool = False,
                 stream: bool = False,
                 window: Optional[Tuple[int, int]] = None, ack_nodelay: bool = False,
                 write_delay: bool = False) -> None:
        self.snmp = snmp if snmp is not None else DEFAULT_SNMP
        self.codec = PacketCodec(crypt, data_shards, parity_shards, self.snmp)
        #: The state machine. Public for sans-IO users; drivers use this class's API only.
        kcp = self.kcp = KCP(conv, mtu=MTU_DEFAULT - self.codec.overhead, snmp=self.snmp)
        kcp.admit_limit = admit_limit
        kcp.probe_init = probe_init
        kcp.window_recovery = bool(window_recovery)
        kcp.stream = bool(stream)
        kcp.ack_nodelay = bool(ack_nodelay)
        if window is not None:
            kcp.set_wndsize(*window)
        self.mtu = MTU_DEFAULT
        self.set_mtu(mtu)
        if mode is not None:
            self.set_mode(mode)
        #: kcp-go ``SetWriteDelay``: when False (the default) every send is flushed at once.
        self.write_delay = bool(write_delay)

    @property
    def conv(self) -> int:
        return self.kcp.conv

    # ------------------------------------------------------------------ configuration

    def set_mtu(self, mtu: int) -> None:
        """Set the session MTU: the largest wire datagram in bytes, headers included (§1.4).

        Lowering it re-cuts the data queued but not yet sent for the new mss (``KCP.set_mtu``,
        docs/deviations.md D23): each chunk queued by :meth:`send` (a message of its own, frg
        0) becomes chunks of at most the new mss, each again a message (stream mode re-packs
        the bytes), which never fails; segments already sent keep their size, so their
        retransmissions (and the FEC parity of their groups) can still exceed the new MTU.
        ``ValueError`` outside 50..1500, when no data fits after the headers, or when a
        message queued directly with message-mode ``KCP.send`` cannot be re-cut within
        ``KCP.max_fragments``; ``TypeError`` for a non-int. A call that raises changes nothing.
        """
        self.kcp.set_mtu(kcp_mtu_for(mtu, self.codec.overhead))
        self.mtu = mtu

    @property
    def mss(self) -> int:
        """Data bytes per segment: the KCP mtu minus the 24-byte header (§1.4). In message
        mode :meth:`send` cuts data into chunks of at most this size, each one message."""
        return self.kcp.mss

    def set_mode(self, mode: str) -> None:
        """Apply one of kcptun's presets: normal, fast, fast2, fast3 (§7)."""
        try:
            params: Tuple[int, int, int, int] = MODES[mode]
        except KeyError:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}") from None
        self.kcp.set_nodelay(*params)

    def set_nodelay(self, nodelay: int, interval: int, resend: int, nc: int) -> None:
        """kcp-go ``SetNoDelay`` (§1.11): each value applies if >= 0; interval in ms."""
        self.kcp.set_nodelay(nodelay, interval, resend, nc)

    def set_window_size(self, sndwnd: int, rcvwnd: int) -> None:
        """Send/receive windows in segments (values <= 0 leave one unchanged; max 65535,
        ``ValueError`` above; ``TypeError`` for a non-int; a call that raises changes nothing)."""
        self.kcp.set_wndsize(index(sndwnd), index(rcvwnd))

    def close_receiving(self) -> None:
        """Take no more data (a closed socket's receive side, docs/deviations.md D59): the
        receive window becomes 0, so PUSHes past what was received are neither kept nor
        acknowledged (the peer keeps them, as TCP's peer after an RST) and the window
        announced is 0; ACKs, una and duplicates are still handled. :meth:`recv` still returns
        what was already queued, then ``None``; segments the old window held out of the
        queue are not delivered. Cannot be undone."""
        self.kcp.rcv_wnd = 0

    @property
    def stream(self) -> bool:
        """Stream mode (kcptun): writes are packed into full segments."""
        return self.kcp.stream

    @stream.setter
    def stream(self, enable: bool) -> None:
        self.kcp.stream = bool(enable)

    @property
    def ack_nodelay(self) -> bool:
        """Flush ACKs as soon as input queues them."""
        return self.kcp.ack_nodelay

    @ack_nodelay.setter
    def ack_nodelay(self, enable: bool) -> None:
        self.kcp.ack_nodelay = bool(enable)

    @property
    def dead_link(self) -> int:
        """Transmissions of one segment after which :attr:`dead` is set (kcp-go default 20)."""
        return self.kcp.dead_link

    @dead_link.setter
    def dead_link(self, transmissions: int) -> None:
        transmissions = index(transmissions)
        if transmissions < 1:
            raise ValueError("dead link threshold must be >= 1")
        self.kcp.dead_link = transmissions

    # ------------------------------------------------------------------ state

    @property
    def dead(self) -> bool:
        """The dead-link event: some segment was transmitted :attr:`dead_link` times."""
        return self.kcp.dead

    @property
    def waitsnd(self) -> int:
        """Segments queued or in flight (kcp-go ``WaitSnd``)."""
        return self.kcp.waitsnd

    @property
    def in_flight(self) -> int:
        """Segments sent and not yet passed by the peer's una (kcp-go's snd_buf)."""
        return len(self.kcp.snd_buf)

    @property
    def probes_unanswered(self) -> int:
        """Window probes sent since the peer's last datagram (D47: they count toward
        :attr:`dead_link`)."""
        return self.kcp.probes_unanswered

    @property
    def interval(self) -> int:
        """The flush interval in ms (``set_nodelay``, §1.11)."""
        return self.kcp.interval

    @property
    def pending_acks(self) -> int:
        """ACK segments waiting for the next flush."""
        return self.kcp.pending_acks

    @property
    def window_nearly_closed(self) -> bool:
        """Whether the next flush would announce a receive window of at most half
        ``rcv_wnd`` (the application has not read what fills the rest; §1.7). A driver that
        lets ACKs wait for a read sends them once this is False (docs/deviations.md D60)."""
        kcp = self.kcp
        return kcp._free_window() * 2 <= kcp.rcv_wnd

    @property
    def peer_restarted(self) -> bool:
        """Whether the peer's KCP state was found new: after it had acknowledged our earlier
        segments and sent us data, it acknowledges segments in flight with una 0, twice at
        least 200 ms apart (a restarted server, or a kcp-go listener that closed this session
        and made a new one for our address; docs/deviations.md D62). Neither direction can
        deliver again."""
        return self.kcp.peer_restarted

    @property
    def window_update_due(self) -> bool:
        """Whether a read or a larger receive window opened the window well beyond what the
        peer was last told (a WINS waits for the next flush, due at once; §1.7, D35)."""
        return bool(self.kcp.probe)

    @property
    def rto(self) -> int:
        """Current retransmission timeout, ms."""
        return self.kcp.rx_rto

    @property
    def srtt(self) -> int:
        """Smoothed round-trip time, ms."""
        return self.kcp.rx_srtt

    @property
    def rttvar(self) -> int:
        """Round-trip time variation, ms."""
        return self.kcp.rx_rttvar

    # ------------------------------------------------------------------ application side

    def send(self, data: Any) -> int:
        """Queue ``data`` (kcp-go ``Write``, §5.4: never partial). Returns its length in bytes.

        The bytes are cut into chunks of at most :attr:`mss` bytes, each sent with frg 0. In
        message mode each chunk is one message: the peer's :meth:`recv` returns a send of at
        most mss bytes whole, and a longer one as its mss-sized chunks, in order; there is no
        size limit (unlike ``KCP.send``'s fragments, D20). Stream mode packs the bytes into
        full segments. ``TypeError``, queueing nothing, for an object without the buffer
        protocol.
        """
        kcp = self.kcp
        n = kcp.write(data)
        if n and (not self.write_delay or kcp.waitsnd >= kcp.snd_wnd):
            kcp.flush_requested = FLUSH_FULL
        self.snmp.BytesSent += n
        return n

    def writable(self) -> bool:
        """Whether kcp-go's Write would accept data now (5.6.1: below both windows)."""
        kcp = self.kcp
        waiting = kcp.waitsnd
        return waiting < kcp.snd_wnd and waiting < kcp.rmt_wnd

    def send_room(self) -> int:
        """Bytes that fit in the free window now (0 when not :meth:`writable`)."""
        kcp = self.kcp
        room = min(kcp.snd_wnd, kcp.rmt_wnd) - kcp.waitsnd
        return room * kcp.mss if room > 0 else 0

    def has_queued(self) -> bool:
        """Whether received segments wait in the receive queue, empty messages included.
        Unlike :meth:`readable`, changes nothing: a driver's cheap "did data arrive" check
        (busy-polling's reply detection, ``kcpgo.runtime.channel``)."""
        return bool(self.kcp.rcv_queue)

    def readable(self) -> bool:
        """Whether :meth:`recv` and :meth:`recv_stream` would return data now (exactly).

        Complete zero-length messages at the head of the receive queue are consumed here, as
        ``recv`` would skip them (docs/deviations.md D10, D22): otherwise a peer's empty PUSH
        would make the session look readable while ``recv`` returns nothing, and a queue of
        them would hold the receive window closed while nobody reads. Consuming them may
        reopen the window (see :attr:`window_update_due`).
        """
        kcp = self.kcp
        rq = kcp.rcv_queue
        if not rq:
            return False                     # (a driver asks after every batch)
        frg, data = rq[0]
        if frg == 0 and data:
            return True                      # the common case: a non-empty whole segment
        size = kcp.peek_size()
        while size == 0:
            kcp.recv()
            size = kcp.peek_size()
        return size > 0

    def recv(self) -> Optional[bytes]:
        """The next message (stream mode: the next segment), or ``None`` if none is ready.

        Zero-length messages (kcp-go never sends one; C KCP can) are skipped rather than
        returned, because ``b""`` means end-of-stream to socket code (D10).
        """
        kcp = self.kcp
        rq = kcp.rcv_queue
        if rq:
            frg, data = rq[0]
            if frg == 0 and data:            # the common case: one non-empty whole segment
                data = kcp.recv()
                self.snmp.BytesReceived += len(data)
                return data
        while True:
            size = kcp.peek_size()
            if size < 0:
                return None
            msg = kcp.recv()
            if size:
                self.snmp.BytesReceived += size
                return msg

    def recv_stream(self, limit: int) -> bytes:
        """Stream mode: up to ``limit`` bytes of whole segments joined (at least one segment,
        even if longer), or ``b""`` if no data is ready; zero-length messages are skipped."""
        kcp = self.kcp
        rq = kcp.rcv_queue
        if rq:
            frg, data = rq[0]
            if frg == 0 and data:            # fast path: takes at least this segment
                data = kcp.recv_stream(limit)
                self.snmp.BytesReceived += len(data)
                return data
        while kcp.peek_size() >= 0:
            data = kcp.recv_stream(limit)
            if data:
                self.snmp.BytesReceived += len(data)
                return data
        return b""

    # ------------------------------------------------------------------ network side

    # ------------------------------------------------------------------ [latest] OOB

    @property
    def oob_max_size(self) -> int:
        """Largest OOB payload in bytes (kcp-go latest ``GetOOBMaxSize``: the KCP MTU minus the
        conv, §2.2(e)); 0 without FEC, where OOB is not possible."""
        return self.kcp.mtu - 4 if self.codec.fec_encoder is not None else 0

    def oob_datagram(self, payload: bytes) -> bytes:
        """The wire datagram of one OOB packet carrying ``payload`` (kcp-go latest ``SendOOB``;
        §2.2(e)): unreliable, unordered, not FEC-protected; the driver sends it as it is.
        ``ValueError`` without FEC on this session (kcp-go: "OOB requires FEC to be enabled")
        or for a payload above :attr:`oob_max_size`. Only the latest kcp-go (and kcpgo)
        understand it: a 5.6.1 peer reads it as KCP input of conv 0xFFFFFFFF (§5.2)."""
        if self.codec.fec_encoder is None:
            raise ValueError("OOB needs FEC on this session (data_shards and parity_shards "
                             "> 0), as in kcp-go")
        if len(payload) > self.oob_max_size:
            raise ValueError(f"OOB payload of {len(payload)} bytes exceeds oob_max_size "
                             f"({self.oob_max_size} bytes)")
        return self.codec.encode_oob(self.kcp.conv, bytes(payload))

    def recv_oob(self) -> Optional[bytes]:
        """The oldest OOB payload received and not yet taken, or ``None``. At most
        ``kcpgo.sansio.packet.OOB_QUEUE_MAX`` wait; more are dropped (:attr:`oob_dropped`)."""
        oob = self.codec.oob
        return oob.popleft() if oob else None

    @property
    def oob_pending(self) -> int:
        """OOB payloads waiting for :meth:`recv_oob`."""
        return len(self.codec.oob)

    @property
    def oob_dropped(self) -> int:
        """OOB payloads dropped because the queue was full (receiving side)."""
        return self.codec.oob_dropped

    def receive_datagram(self, wire: bytes, now: int,
                         parity: Optional[List[bytes]] = None) -> bool:
        """Feed one datagram from the peer. Returns whether it passed the crypto check and
        reached KCP, or the OOB queue (else it was dropped).

        ``parity``: a list that takes an FEC parity packet (opened) instead of KCP; feed it
        later with :meth:`receive_payload`. A driver uses it to feed a batch's data before
        its parity (``kcpgo.runtime.channel.Channel.on_batch``): to FEC and KCP that is
        reordering within the batch, which the protocol tolerates."""
        return self.codec.receive(wire, self.kcp, now, parity)

    def receive_datagrams(self, wires: List[bytes], now: int,
                          parity: Optional[List[bytes]] = None) -> bool:
        """:meth:`receive_datagram` for several datagrams from the peer, in order, decrypted
        with one cipher call where the cipher allows it (``PacketCodec.open_many``). Returns
        whether any passed the crypto check."""
        return self.codec.receive_many(wires, self.kcp, now, parity)

    def receive_payload(self, payload: bytes, now: int) -> None:
        """Feed one datagram already opened by ``PacketCodec.open`` (a listener's demux)."""
        self.codec.feed(payload, self.kcp, now)

    def has_output(self, now: int, acks: bool = True) -> bool:
        """Whether :meth:`datagrams_to_send` with ``acks=False`` may return datagrams at
        ``now`` (a flush was requested, or a timer is due): False means it would return
        ``[]`` and change nothing. Cheaper than that call, for a driver's check after each
        received batch (tools/bench_rx.py). ``acks=False``: not counting a periodic tick that
        is due only because ACKs are pending (an idle session's tick is overdue as soon as
        it receives), for a driver that lets ACKs wait for a reply to carry them."""
        due = self.kcp.check(now, acks)
        return due is not None and due <= now

    def datagrams_to_send(self, now: int, acks: bool = True) -> List[bytes]:
        """Wire datagrams due at ``now``: requested flushes, the periodic tick, and (with
        ``acks``) the pending ACKs. A driver that sends a batch's ACKs a little later, see
        :meth:`flush_acks`, passes ``acks=False``."""
        out = self.kcp.update(now, acks)
        if not out:
            return out
        return self.codec.encode_many(out, now)

    def flush_acks(self, now: int) -> List[bytes]:
        """Wire datagrams carrying the pending ACKs only (none if there are none)."""
        if not self.kcp.pending_acks:
            return []
        return self.codec.encode_many(self.kcp.flush(now, ack_only=True), now)

    def flush(self, now: int) -> List[bytes]:
        """A full flush now regardless of timers (kcp-go's final flush on Close). ``now`` is
        the integer ms clock (``TypeError`` otherwise, before any change)."""
        now = index(now)
        return self.codec.encode_many(self.kcp.flush(now), now)

    def next_deadline(self, now: int, acks: bool = True) -> Optional[int]:
        """Absolute ms of the next needed :meth:`datagrams_to_send`, or ``None`` when idle
        (``acks=False``: leaving pending ACKs to the driver, as :meth:`has_output`)."""
        return self.kcp.check(now, acks)
