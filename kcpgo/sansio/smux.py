"""A sans-IO smux v1/v2 session (docs/kcptun.md §4): many streams over one KCP byte stream.

Bytes and an explicit integer-millisecond ``now`` in, frames and events out; nothing here
reads a clock or touches a socket. A driver:

* hands every piece read from the KCP session to :meth:`SmuxSession.receive` while
  :attr:`SmuxSession.receive_paused` is false (the session bucket, kcptun.md §4.7) and acts
  on the returned events (:class:`StreamOpened`, :class:`StreamData`, :class:`StreamEnded`,
  :class:`WindowUpdate`, :class:`SessionError`);
* calls :meth:`SmuxSession.consumed` when the application has read stream bytes (returns
  bucket tokens; in v2 may queue a UPD, kcptun.md §4.8);
* writes each bytes object of :meth:`SmuxSession.data_to_send` (one smux frame each) to KCP;
* calls :meth:`SmuxSession.timer` at :meth:`SmuxSession.next_deadline` (keepalive,
  kcptun.md §4.6).

Stream states (kcptun.md §4.5; PSH is accepted until the local side closes, so a half-close
works):

=================  ==================  ==================  =================  ==============
state              local shutdown      local close         FIN received       PSH received
=================  ==================  ==================  =================  ==============
OPEN               FIN → LOCAL_FIN     FIN → (removed)     → REMOTE_FIN       data
LOCAL_FIN          (no-op)             → (removed)         → (removed)        data
REMOTE_FIN         FIN → (removed)     FIN → (removed)     reset → (removed)  data
(removed)          —                   —                   (ignored)          (discarded) ¹
=================  ==================  ==================  =================  ==============

¹ the first PSH for a stream closed locally before the peer's FIN is answered with a second
FIN, which the peer reads as a reset (docs/deviations.md D46).

Sending PSH is allowed in OPEN and REMOTE_FIN. A removed stream is CLOSED: its id is no longer
known, its unread bytes go back to the bucket, frames for it are discarded (kcptun.md §4.2).
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Union

from .smux_frames import (CMD_FIN, CMD_NOP, CMD_PSH, CMD_SYN, CMD_UPD, VERSIONS, FrameParser,
                          SmuxError, SmuxProtocolError, decode_upd, encode_frame, encode_upd,
                          s32, u32)

__all__ = ["SmuxSession", "StreamOpened", "StreamData", "StreamEnded", "StreamReset",
           "WindowUpdate",
           "SessionError", "SmuxError", "SmuxProtocolError", "SmuxSessionClosed",
           "SmuxStreamError", "OPEN", "LOCAL_FIN", "REMOTE_FIN", "CLOSED",
           "INITIAL_PEER_WINDOW", "MAX_FRAME_SIZE", "MAX_RECEIVE_BUFFER", "MAX_STREAM_BUFFER",
           "KEEPALIVE_INTERVAL", "KEEPALIVE_TIMEOUT"]

#: kcptun.md §4.5 stream states.
OPEN = "open"
LOCAL_FIN = "local-fin"        # we sent FIN, the peer may still send
REMOTE_FIN = "remote-fin"      # the peer sent FIN, we may still send
CLOSED = "closed"              # both FINs, or closed locally: the stream is gone

#: kcptun.md §4.8: the peer's window before its first UPD (bytes).
INITIAL_PEER_WINDOW = 262144
#: kcptun.md §4.3 smux defaults: PSH payload cut (bytes), session bucket (bytes), v2 stream window
#: (bytes; kcptun's --streambuf is 2097152), keepalive interval and timeout (ms).
MAX_FRAME_SIZE = 32768
MAX_RECEIVE_BUFFER = 4194304
MAX_STREAM_BUFFER = 65536
KEEPALIVE_INTERVAL = 10_000
KEEPALIVE_TIMEOUT = 30_000
_LAST_SID = 0xFFFFFFFF
#: Streams closed locally while the peer could still write, remembered (oldest forgotten
#: first) so that its next PSH gets the reset FIN of docs/deviations.md D46.
CLOSED_MEMORY = 1024


class SmuxSessionClosed(SmuxError):
    """The session is dead (closed locally, keepalive timeout, protocol error); ``cause``."""

    def __init__(self, message: str, cause: Optional[BaseException] = None) -> None:
        super().__init__(message)
        self.cause = cause


class SmuxStreamError(SmuxError):
    """A stream operation that its state does not allow (unknown sid, write after FIN)."""


class StreamOpened(NamedTuple):
    """The peer opened stream ``sid`` with SYN (kcptun.md §4.5)."""
    sid: int


class StreamData(NamedTuple):
    """PSH payload for stream ``sid``; counts against the bucket until :meth:`consumed`."""
    sid: int
    data: bytes


class StreamEnded(NamedTuple):
    """The peer sent FIN on ``sid``: EOF after the data already delivered (kcptun.md §4.5).
    ``closed``: we had sent FIN too, so the stream is now gone."""
    sid: int
    closed: bool


class StreamReset(NamedTuple):
    """The peer closed ``sid`` and discards what we still send on it: a second FIN after its
    first, which kcpgo sends when PSH arrives for a stream it closed (docs/deviations.md D46;
    a kcptun peer never sends one). Writing is pointless now; the stream is gone."""
    sid: int


class WindowUpdate(NamedTuple):
    """v2: the peer's UPD for ``sid``; ``window`` bytes may now be sent (may be <= 0;
    kcptun.md §4.8)."""
    sid: int
    window: int


class SessionError(NamedTuple):
    """The session died (protocol error or keepalive timeout; kcptun.md §4.6, 4.9). Silent
    on the wire: every stream is gone; the driver should close the KCP session."""
    error: SmuxError


Event = Union[StreamOpened, StreamData, StreamEnded, StreamReset, WindowUpdate, SessionError]


class _Stream:
    __slots__ = ("sid", "state", "unread", "num_written", "peer_consumed", "peer_window",
                 "num_read", "incr", "wrote")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.state = OPEN
        self.unread = 0                           # delivered, not yet consumed (bucket)
        self.num_written = 0                      # v2 sender, u32
        self.peer_consumed = 0                    # v2 sender, u32
        self.peer_window = INITIAL_PEER_WINDOW    # v2 sender, u32
        self.num_read = 0                         # v2 receiver, u32
        self.incr = 0                             # v2 receiver, u32
        self.wrote = False                        # PSH sent on it (D46)


class SmuxSession:
    """One smux session, either role (docs/kcptun.md §4).

    ``version`` 1 or 2 (no negotiation, kcptun.md §4.9). ``client``: stream ids 3, 5, …
    (else 2, 4, …; kcptun.md §4.4); ``may_open`` defaults to ``client``: a server never opens
    streams towards a kcptun client. ``max_frame_size`` (bytes, ≤ 65535) cuts PSH payloads;
    ``max_receive_buffer`` (bytes) is the bucket of kcptun.md §4.7; ``max_stream_buffer``
    (bytes) the v2 window announced in UPD (kcptun.md §4.8); ``keepalive_interval`` /
    ``keepalive_timeout`` in ms (``None`` disables; kcptun.md §4.6); ``now`` the creation
    time in ms. ``ValueError`` for an inconsistent configuration (as
    smux's ``VerifyConfig``).
    """

    def __init__(self, version: int = 1, *, client: bool = True, may_open: Optional[bool] = None,
                 max_frame_size: int = MAX_FRAME_SIZE,
                 max_receive_buffer: int = MAX_RECEIVE_BUFFER,
                 max_stream_buffer: int = MAX_STREAM_BUFFER,
                 keepalive_interval: Optional[int] = KEEPALIVE_INTERVAL,
                 keepalive_timeout: Optional[int] = KEEPALIVE_TIMEOUT, now: int = 0) -> None:
        if version not in VERSIONS:
            raise ValueError(f"smux version {version!r}: must be 1 or 2")
        if not 0 < max_frame_size <= 0xFFFF:
            raise ValueError(f"max_frame_size {max_frame_size}: must be 1..65535")
        if max_receive_buffer <= 0 or not 0 < max_stream_buffer <= max_receive_buffer:
            raise ValueError("max_stream_buffer must be > 0 and <= max_receive_buffer")
        if keepalive_interval is not None and keepalive_interval <= 0:
            raise ValueError("keepalive_interval must be > 0 ms")
        if keepalive_timeout is not None and (keepalive_timeout <= 0 or (
                keepalive_interval is not None and keepalive_interval > keepalive_timeout)):
            raise ValueError("keep-alive timeout must be larger than keep-alive interval")
        self.version = version
        self.client = client
        self.may_open = client if may_open is None else may_open
        self.max_frame_size = max_frame_size
        self.max_receive_buffer = max_receive_buffer
        self.max_stream_buffer = max_stream_buffer
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self._parser = FrameParser(version)
        self._streams: Dict[int, _Stream] = {}
        #: Streams that ended by FIN both ways while the application still held unread
        #: bytes: sid -> bytes still charged to the bucket (until consumed or closed).
        self._held: Dict[int, int] = {}
        #: D46: sids closed locally while the peer had not sent FIN (insertion-ordered).
        self._closed_early: Dict[int, None] = {}
        #: Reset FINs sent (PSH arrived for a stream closed locally; D46).
        self.resets_sent = 0
        self._next_sid = 1 if client else 0
        self._bucket = max_receive_buffer
        self._control: List[bytes] = []       # NOP, UPD: may overtake data (kcptun.md §4.10)
        self._frames: List[bytes] = []        # SYN, PSH, FIN in the order produced
        self._next_nop = None if keepalive_interval is None else now + keepalive_interval
        self._next_check = None if keepalive_timeout is None else now + keepalive_timeout
        self._data_seen = False
        self.error: Optional[SmuxError] = None
        self.closed = False

    # -- introspection ------------------------------------------------------------------
    @property
    def bucket(self) -> int:
        """Session receive tokens in bytes (kcptun.md §4.7): may go negative by one frame."""
        return self._bucket

    @property
    def receive_paused(self) -> bool:
        """True while the bucket is exhausted: stop reading KCP until :meth:`consumed`
        (kcptun.md §4.7)."""
        return self._bucket <= 0

    @property
    def first_byte(self) -> Optional[int]:
        """The first byte the peer sent (``0xff``: snappy; 1/2: smux version; ``None``:
        nothing yet). Log it when a session dies early (kcptun.md §3.3, 11)."""
        return self._parser.first_byte

    def state(self, sid: int) -> str:
        """The stream's state: ``OPEN``, ``LOCAL_FIN``, ``REMOTE_FIN`` or ``CLOSED``."""
        s = self._streams.get(sid)
        return CLOSED if s is None else s.state

    def streams(self) -> List[int]:
        """The ids of the streams not yet closed."""
        return sorted(self._streams)

    def send_window(self, sid: int) -> Optional[int]:
        """Bytes :meth:`send` accepts now on ``sid`` (v2, kcptun.md §4.8; ``None`` in v1:
        unbounded). ``SmuxStreamError`` for an unknown sid."""
        s = self._known(sid)
        if self.version == 1:
            return None
        return max(0, s32(s.peer_window) - s32(s.num_written - s.peer_consumed))

    # -- streams --------------------------------------------------------------------------
    def _check_alive(self) -> None:
        if self.closed:
            raise SmuxSessionClosed(f"smux session closed: {self.error or 'closed locally'}",
                                    self.error)

    def _known(self, sid: int) -> _Stream:
        self._check_alive()
        s = self._streams.get(sid)
        if s is None:
            raise SmuxStreamError(f"smux stream {sid} is not open")
        return s

    def open_stream(self) -> int:
        """Open the next stream (kcptun.md §4.4, 4.5): queue SYN, return its sid (client 3,
        5, …; server 2, 4, …). ``SmuxStreamError`` when this role may not open streams or ids
        are exhausted; ``SmuxSessionClosed`` on a dead session."""
        self._check_alive()
        if not self.may_open:
            raise SmuxStreamError("a smux server never opens streams (kcptun clients never "
                                  "accept them; kcptun.md §4.4)")
        sid = self._next_sid + 2
        if sid > _LAST_SID:
            raise SmuxStreamError("smux stream ids exhausted (go away)")
        self._next_sid = sid
        self._streams[sid] = _Stream(sid)
        self._frames.append(encode_frame(self.version, CMD_SYN, sid))
        return sid

    def send(self, sid: int, data: bytes) -> int:
        """Queue ``data`` on stream ``sid`` as PSH frames of ≤ ``max_frame_size`` bytes;
        returns the bytes accepted: all of them in v1, at most :meth:`send_window` in v2
        (send the rest after a :class:`WindowUpdate`). ``SmuxStreamError`` after our FIN or
        for an unknown sid; ``SmuxProtocolError("consumed")`` when the peer acknowledged more
        than was sent (kcptun.md §4.8)."""
        s = self._known(sid)
        if s.state == LOCAL_FIN:
            raise SmuxStreamError(f"smux stream {sid}: write after FIN")
        n = len(data)
        if self.version == 2:
            inflight = s32(s.num_written - s.peer_consumed)
            if inflight < 0:
                raise SmuxProtocolError(f"smux stream {sid}: peer consumed more than was sent",
                                        "consumed")
            n = min(n, max(0, s32(s.peer_window) - inflight))
            s.num_written = u32(s.num_written + n)
        if n:
            s.wrote = True
        view = memoryview(data)[:n]
        step, ver, frames = self.max_frame_size, self.version, self._frames
        for i in range(0, n, step):
            frames.append(encode_frame(ver, CMD_PSH, sid, view[i:i + step]))
        return n

    def shutdown(self, sid: int) -> None:
        """Half-close: queue FIN, keep receiving (kcptun.md §4.5). No-op after our FIN."""
        s = self._known(sid)
        if s.state == LOCAL_FIN:
            return
        self._frames.append(encode_frame(self.version, CMD_FIN, sid))
        if s.state == REMOTE_FIN:
            self._remove(s, keep_unread=True)
        else:
            s.state = LOCAL_FIN

    def close_stream(self, sid: int) -> None:
        """Close: queue FIN unless sent, forget the stream (later frames for it are discarded,
        its unread bytes return to the bucket; kcptun.md §4.5). No-op for an unknown sid and on
        a dead session."""
        s = self._streams.get(sid)
        if s is None:
            self._bucket += self._held.pop(sid, 0)
            return
        if s.state != LOCAL_FIN:
            self._frames.append(encode_frame(self.version, CMD_FIN, sid))
        if s.state != REMOTE_FIN:                   # the peer may still be writing
            early = self._closed_early
            early[sid] = None
            if len(early) > CLOSED_MEMORY:
                del early[next(iter(early))]
        self._remove(s)

    def _remove(self, s: _Stream, keep_unread: bool = False) -> None:
        """Forget ``s``. Its unread bytes return to the bucket, unless ``keep_unread`` (FIN
        went both ways but the application still holds them: they stay charged until
        :meth:`consumed` or :meth:`close_stream`, so the bucket keeps bounding memory,
        kcptun.md §4.7)."""
        s.state = CLOSED
        del self._streams[s.sid]
        if keep_unread and s.unread > 0:
            self._held[s.sid] = s.unread
        else:
            self._bucket += s.unread
        s.unread = 0

    def consumed(self, sid: int, n: int) -> None:
        """The application read ``n`` bytes of ``sid``: return them to the bucket
        (kcptun.md §4.7); in v2 queue UPD(consumed, max_stream_buffer) on the first read and
        after every max_stream_buffer/2 bytes (kcptun.md §4.8). For a stream that ended by FIN
        both ways, the bytes still held return to the bucket (no UPD: the stream is gone);
        other unknown sids are ignored (their bytes returned when the stream closed)."""
        if n <= 0 or self.closed:
            return
        s = self._streams.get(sid)
        if s is None:
            held = self._held.get(sid)
            if held:
                n = min(n, held)
                self._bucket += n
                if held > n:
                    self._held[sid] = held - n
                else:
                    del self._held[sid]
            return
        n = min(n, s.unread)
        s.unread -= n
        self._bucket += n
        if self.version == 2 and n:
            s.num_read = u32(s.num_read + n)
            s.incr = u32(s.incr + n)
            if s.incr >= self.max_stream_buffer // 2 or s.num_read == n:
                self._control.append(encode_upd(2, sid, s.num_read, self.max_stream_buffer))
                s.incr = 0

    # -- input --------------------------------------------------------------------------
    def receive(self, data: bytes, now: int) -> List[Event]:
        """Events for a piece of the peer's byte stream (any split; kcptun.md §4.2), in wire
        order. A protocol error ends the list with :class:`SessionError` and kills the session;
        a dead session ignores input. ``now`` in ms (any byte counts as liveness for the
        next keepalive check)."""
        if self.closed:
            return []
        try:
            frames = self._parser.feed(data)
        except SmuxProtocolError as e:
            frames, err = e.frames, e
        else:
            err = None
        events: List[Event] = []
        if data:
            self._data_seen = True
        streams = self._streams
        for f in frames:
            cmd, sid = f.cmd, f.sid
            if cmd == CMD_PSH:
                s = streams.get(sid)
                if s is not None and f.data:
                    s.unread += len(f.data)
                    self._bucket -= len(f.data)
                    events.append(StreamData(sid, f.data))
                elif s is None and sid in self._closed_early:
                    del self._closed_early[sid]             # D46: tell the writer, once
                    self._frames.append(encode_frame(self.version, CMD_FIN, sid))
                    self.resets_sent += 1
            elif cmd == CMD_SYN:
                if sid not in streams:
                    streams[sid] = _Stream(sid)
                    events.append(StreamOpened(sid))
            elif cmd == CMD_FIN:
                s = streams.get(sid)
                if s is None:
                    continue
                if s.state == REMOTE_FIN:
                    if s.wrote:                             # the answer to our PSH: reset (D46)
                        self._remove(s, keep_unread=True)
                        events.append(StreamReset(sid))
                    continue                                # else a repeated FIN: ignored
                if s.state == LOCAL_FIN:
                    self._remove(s, keep_unread=True)
                    events.append(StreamEnded(sid, True))
                else:
                    s.state = REMOTE_FIN
                    events.append(StreamEnded(sid, False))
            elif cmd == CMD_UPD:
                s = streams.get(sid)
                if s is not None:
                    s.peer_consumed, s.peer_window = decode_upd(f.data)
                    win = s32(s.peer_window) - s32(s.num_written - s.peer_consumed)
                    events.append(WindowUpdate(sid, win))
            # CMD_NOP: nothing but liveness
        if err is not None:
            events.append(self._die(err))
        return events

    def _die(self, err: SmuxError) -> SessionError:
        self.error = err
        self.closed = True
        for s in list(self._streams.values()):
            self._remove(s)
        self._bucket += sum(self._held.values())
        self._held.clear()
        self._control.clear()
        self._frames.clear()
        return SessionError(err)

    # -- output and timers ----------------------------------------------------------------
    def data_to_send(self) -> List[bytes]:
        """The queued frames, one bytes object per smux frame, oldest first (control frames
        NOP/UPD ahead of SYN/PSH/FIN, which keep their order; kcptun.md §4.10). Drains the
        queue."""
        out = self._control + self._frames
        self._control, self._frames = [], []
        return out

    @property
    def pending(self) -> int:
        """Frames queued for :meth:`data_to_send`."""
        return len(self._control) + len(self._frames)

    def next_deadline(self, now: int) -> Optional[int]:
        """When (ms) :meth:`timer` must run next; ``None`` when nothing is scheduled."""
        if self.closed:
            return None
        times = [t for t in (self._next_nop, self._next_check) if t is not None]
        return min(times) if times else None

    def timer(self, now: int) -> List[Event]:
        """Run due keepalive work at ``now`` (ms, kcptun.md §4.6): queue a NOP every interval;
        every timeout period, if no frame arrived since the previous check and the bucket is not
        exhausted, kill the session (returns ``[SessionError]``)."""
        if self.closed:
            return []
        if self._next_nop is not None and now >= self._next_nop:
            self._control.append(encode_frame(self.version, CMD_NOP, 0))
            ival = self.keepalive_interval
            self._next_nop += ival * max(1, (now - self._next_nop) // ival + 1)
        if self._next_check is not None and now >= self._next_check:
            tout = self.keepalive_timeout
            self._next_check += tout * max(1, (now - self._next_check) // tout + 1)
            if not self._data_seen and self._bucket > 0:
                return [self._die(SmuxSessionClosed("smux keepalive timeout: nothing received "
                                                    f"for {tout} ms"))]
            self._data_seen = False
        return []

    def close(self) -> None:
        """Close the session locally: every stream is gone, nothing is sent (smux sends no FIN
        on session close, kcptun.md §4.5; kcpgo's driver closes the open streams first,
        docs/deviations.md D61). Idempotent."""
        if not self.closed:
            self._die(SmuxSessionClosed("smux session closed locally"))
            self.error = None
