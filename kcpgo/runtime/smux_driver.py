"""``SmuxDriver``: runs a sans-IO :class:`~kcpgo.sansio.smux_stack.SmuxStack` over a KCP
:class:`~kcpgo.runtime.channel.Channel` (docs/kcptun.md §2, §4).

No greenlet of its own, as the channel: the endpoint's reader and the runtime's scheduler run
it through the channel's ``on_update`` and a keepalive timer. It

* reads KCP only while the smux bucket has room (kcptun.md §4.7), so a session whose streams
  are not read pushes back on KCP and so on the peer, with memory bounded by the bucket;
* writes one KCP write per smux frame (a snappy chunk with compression, kcptun.md §3.2) while
  KCP's window has room; frames beyond that wait here, at most about :data:`OUT_LIMIT` bytes:
  :meth:`SmuxDriver.send_room` says how much a stream may send;
* keeps each stream's received bytes until the facade takes them (:meth:`take`), and tells
  the session what was consumed (bucket tokens; v2 UPD, kcptun.md §4.8);
* bounds streams opened by the peer and not yet accepted (``accept_limit``): at the limit it
  stops reading, as smux does, until the application accepts one (one read's SYNs may go
  beyond it); once nobody accepts any more (a closed listener) a SYN is answered with FIN at
  once and counted in :attr:`SmuxDriver.refused`;
* on a session error (protocol error, keepalive timeout, a framing mismatch) or a KCP failure
  (dead link, idle timeout, socket error) latches the cause in :attr:`SmuxDriver.error` as a
  ``ConnectionResetError`` naming it, releases the KCP session and tells every stream.

Whoever sits on top (the blocking :class:`~kcpgo.facade.stream.Stream`, an asyncio adapter)
registers ``on_stream(sid)`` (something changed for one stream) and ``on_session()`` (a stream
is waiting to be accepted, or the session died).
"""
from __future__ import annotations

import errno
import logging
from collections import deque
from typing import Callable, Deque, Dict, List, Optional

from ..address import format_address
from ..sansio.smux import (CLOSED, SessionError, SmuxSessionClosed, StreamData, StreamEnded,
                           StreamOpened, StreamReset, WindowUpdate)
from ..sansio.smux_stack import SmuxStack
from .channel import LINGER, Channel
from .clock import now_ms

__all__ = ["SmuxDriver", "StreamBuffer", "OUT_LIMIT", "ACCEPT_LIMIT", "LINGER"]

log = logging.getLogger("kcpgo.smux")

#: Bytes of smux frames a session holds beyond what KCP's send window took (then a stream's
#: send blocks). Small: the KCP send queue is where data waits; this only evens out frames.
OUT_LIMIT = 65536
#: Streams the peer opened that the application has not accepted yet (kcp-go's smux:
#: acceptBacklog 1024; beyond it the Go receive loop stalls the whole session instead).
ACCEPT_LIMIT = 1024
#: Bytes taken from KCP per read at most (KCP returns whole segments up to this); also what
#: bounds the SYNs one read may add beyond ``accept_limit`` (8 bytes each).
_READ = 1 << 18
#: Bytes taken while the framing is undecided (a listener following its peer): a few chunks.
_FIRST_READ = 65536


class StreamBuffer:
    """What the driver keeps for one stream: received bytes and flags for the facade."""

    __slots__ = ("sid", "chunks", "size", "eof", "reset", "closed", "discard", "on_update")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.chunks: Deque[bytes] = deque()
        self.size = 0               # bytes in chunks
        self.eof = False            # the peer sent FIN (kcptun.md §4.5)
        self.reset = False          # ... and then a second one: it discards what we send (D46)
        self.closed = False         # closed locally: the session forgot the stream
        self.discard = False        # shut down for reading: data is dropped as it arrives
        self.on_update: Callable[[], None] = _nothing


class SmuxDriver:
    """One smux session over one KCP channel; see the module docstring.

    ``stack``: the sans-IO session (its role and framing); ``channel``: a stream-mode KCP
    session whose ``on_update`` this driver takes over. ``accept_limit``: peer-opened streams
    waiting for :meth:`accept`.
    """

    def __init__(self, channel: Channel, stack: SmuxStack, *,
                 accept_limit: int = ACCEPT_LIMIT) -> None:
        self.chan = channel
        self.conn = channel.conn
        self.stack = stack
        self.runtime = channel.runtime
        self.accept_limit = accept_limit
        self.streams: Dict[int, StreamBuffer] = {}
        self.accept_queue: Deque[int] = deque()
        #: SYNs answered with FIN because :attr:`accept_queue` was full.
        self.refused = 0
        #: The latched cause of death (``ConnectionResetError``); ``None`` while alive.
        self.error: Optional[BaseException] = None
        #: True once finished: the KCP session is released (after a linger, see close).
        self.closed = False
        self._linger_until: Optional[int] = None
        self.on_session: Callable[[], None] = _nothing
        #: Called once the KCP session is released (after a linger, see :meth:`close`).
        self.on_finish: Callable[[], None] = _nothing
        self._out: Deque[bytes] = deque()
        self._out_bytes = 0
        self._room_waiters: Dict[int, StreamBuffer] = {}
        self._busy = False
        self._again = False
        self._flushing = False
        self._timer = self.runtime.timer(self._on_timer)
        channel.on_update = self._on_channel_update
        self._arm(now_ms())

    # ------------------------------------------------------------------ for the facade

    def open(self) -> StreamBuffer:
        """Open a stream (SYN, kcptun.md §4.5) and return its buffer. ``ConnectionResetError``
        on a dead session; ``SmuxStreamError`` in the accepting role (kcptun.md §4.4)."""
        self._check()
        smux = self.stack.smux
        assert smux is not None          # a client's framing is fixed
        sid = smux.open_stream()
        buf = self.streams[sid] = StreamBuffer(sid)
        self._send_frames()
        return buf

    def accept(self) -> Optional[StreamBuffer]:
        """The oldest peer-opened stream not yet accepted, or ``None``. Taking one from a
        full queue resumes reading (see :attr:`accept_limit`)."""
        queue = self.accept_queue
        full = len(queue) >= self.accept_limit > 0
        while queue:
            buf = self.streams.get(queue.popleft())
            if buf is not None and not buf.closed:
                if full and self.error is None:
                    self.runtime.call_soon(self._pump)      # reading was paused for it
                return buf
        return None

    def refuse_new(self) -> None:
        """Refuse streams the peer opens from now on (FIN at once, :attr:`refused`), and
        those waiting to be accepted: nobody will accept them (a closed listener)."""
        self.accept_limit = 0
        while self.accept_queue:
            sid = self.accept_queue.popleft()
            self.refused += 1
            self.close_stream(sid)

    def send_room(self, sid: int) -> int:
        """Bytes :meth:`send` takes on ``sid`` now: 0 while frames wait for KCP's window
        beyond :data:`OUT_LIMIT`, or (v2) while the peer's window is closed."""
        if self._out_bytes >= OUT_LIMIT:
            return 0
        smux = self.stack.smux
        win = smux.send_window(sid) if smux is not None else 0
        room = OUT_LIMIT - self._out_bytes
        if win is not None and win < room:
            room = win
        return room

    def send(self, sid: int, data: memoryview) -> int:
        """Queue ``data`` (at most :meth:`send_room` bytes) as PSH frames; returns the bytes
        taken. Raises ``SmuxStreamError`` after our FIN."""
        smux = self.stack.smux
        assert smux is not None
        n = smux.send(sid, data)
        if n:
            self._send_frames()
        return n

    def shutdown(self, sid: int) -> None:
        """Half-close: FIN after the bytes already sent (kcptun.md §4.5)."""
        smux = self.stack.smux
        if smux is not None and not smux.closed and smux.state(sid) != CLOSED:
            smux.shutdown(sid)      # (FIN both ways already: the stream is gone, nothing to do)
            self._send_frames()

    def close_stream(self, sid: int) -> None:
        """Close: FIN unless sent, forget the stream; unread bytes are dropped (returned to
        the bucket)."""
        buf = self.streams.pop(sid, None)
        if buf is None:
            return
        buf.closed = True
        buf.chunks.clear()
        buf.size = 0
        smux = self.stack.smux
        if smux is not None and not smux.closed:
            smux.close_stream(sid)
            self._send_frames()

    def discard(self, buf: StreamBuffer) -> None:
        """Drop ``buf``'s received bytes, now and as they arrive, as if read (``SHUT_RD``)."""
        buf.discard = True
        while buf.size:
            self.take(buf, buf.size)

    def take(self, buf: StreamBuffer, n: int) -> bytes:
        """Up to ``n`` received bytes of ``buf`` (``b""`` if none): as many frames' payloads
        as fit, joined (a stream is a byte stream, as a TCP socket's buffer), reported as
        consumed."""
        chunks = buf.chunks
        if not chunks:
            return b""
        data = chunks.popleft()
        size = len(data)
        if size > n:
            chunks.appendleft(data[n:])
            data = data[:n]
        elif chunks and size < n:
            parts = [data]
            while chunks and size < n:
                more = chunks.popleft()
                if size + len(more) > n:
                    cut = n - size
                    chunks.appendleft(more[cut:])
                    more = more[:cut]
                parts.append(more)
                size += len(more)
            data = b"".join(parts)
        buf.size -= len(data)
        smux = self.stack.smux
        if smux is not None and not smux.closed:
            paused = smux.receive_paused
            smux.consumed(buf.sid, len(data))
            if paused and not smux.receive_paused:
                self._pump()                    # read again (and send the UPD, if any)
            elif smux.pending:
                self._send_frames()
        return data

    def close(self, linger: float = LINGER) -> None:
        """Close the session (idempotent): every stream's calls raise
        ``ConnectionResetError("smux session closed locally")`` from now on, and nothing more
        is read. Every stream still open is closed with a FIN after what it wrote, as closing
        each socket would (smux sends none: the peer waits for its keepalive timeout,
        docs/deviations.md D61). Frames already written (data, FINs) keep going out and the
        KCP session is released once the peer acknowledged all of it, or after ``linger``
        seconds, like a closed TCP socket's send queue."""
        if self.error is None:
            smux = self.stack.smux
            if smux is not None and not smux.closed:
                for sid in list(self.streams):
                    smux.close_stream(sid)      # its buffer stays: _die wakes its callers
            self._die(ConnectionResetError(errno.ECONNRESET, "smux session closed locally"),
                      linger)

    @property
    def unsent(self) -> int:
        """Bytes of frames waiting for KCP's send window (not yet in KCP's queue)."""
        return self._out_bytes

    def want_room(self, buf: StreamBuffer) -> None:
        """``buf``'s writer waits for :meth:`send_room`: call its ``on_update`` once frames
        left for KCP (WindowUpdate events wake v2 writers anyway)."""
        self._room_waiters[buf.sid] = buf

    # ------------------------------------------------------------------ the pump

    def _check(self) -> None:
        if self.error is not None:
            raise ConnectionResetError(self.error.errno, self.error.strerror)

    def _on_channel_update(self) -> None:
        """The KCP session changed (data arrived, ACKs opened the window, it failed)."""
        chan = self.chan
        if chan.error is None and (self._flushing or (
                not self._out and not self._room_waiters and self.error is None
                and not self.conn.readable())):
            # a flush of ours, or an ACK-only batch with nobody waiting for room: nothing
            # to read, nothing to write (a request/response round trip brings one such batch)
            return
        if self._busy:
            self._again = True
            return
        if chan.error is not None:
            if self.error is None:
                self._die(ConnectionResetError(
                    errno.ECONNRESET, f"KCP session to {format_address(chan.peer)} failed: "
                                      f"{_text(chan.error)}"))
            else:
                self._finish()
            return
        self._pump()

    def _send_frames(self) -> None:
        """The application queued frames: write them (the send half of :meth:`_pump`;
        nothing new arrived, so nothing is read)."""
        if self._busy or self.error is not None:
            self._pump()                # re-entrant: run once more; or lingering
            return
        self._busy = True
        try:
            self._write_out()
        finally:
            self._busy = False
        if self._again or self.chan.error is not None:
            self._on_channel_update()   # something happened meanwhile (a failed flush)
        elif self._room_waiters and self._out_bytes < OUT_LIMIT:
            waiters = list(self._room_waiters.values())
            self._room_waiters.clear()
            for buf in waiters:
                buf.on_update()

    def _pump(self) -> None:
        """Read what KCP has (while the bucket has room), act on the events, write frames
        while KCP's window has room, re-arm the keepalive timer. Not re-entrant: a channel
        update during the pump makes it run once more."""
        if self._busy:
            self._again = True
            return
        if self.closed:
            return
        if self.error is not None:              # lingering (close): only send
            self._linger()
            return
        self._busy = True
        touched: Dict[int, StreamBuffer] = {}
        accepted = False
        try:
            while True:
                self._again = False
                accepted |= self._read(touched)
                self._write_out()
                if not self._again or self.error is not None:
                    break
        finally:
            self._busy = False
        if self.error is not None:
            return
        if self.conn.window_update_due:
            self.chan.kick()
        waiters = self._room_waiters
        if waiters and self._out_bytes < OUT_LIMIT:
            touched.update(waiters)
            waiters.clear()
        for buf in touched.values():
            buf.on_update()
        if accepted:
            self.on_session()

    def _read(self, touched: Dict[int, StreamBuffer]) -> bool:
        stack, conn = self.stack, self.conn
        accepted = False
        smux = stack.smux
        queue, limit = self.accept_queue, self.accept_limit
        took = False
        while not stack.receive_paused and (len(queue) < limit or not limit):
            # streams waiting to be accepted pause reading, as smux's accept backlog does
            # (D41); at most what the bucket takes (KCP hands at least one segment): memory stays
            # within the bucket plus one segment and one snappy chunk (kcptun.md §4.7)
            room = smux.bucket if smux is not None else _FIRST_READ
            data = conn.recv_stream(room if room < _READ else _READ)
            if not data:
                break
            took = True
            events = stack.receive(data, now_ms())
            if events and self._events(events, touched):
                accepted = True
            if self.error is not None:
                break
        if took:
            self.chan.data_taken()      # a bulk batch's ACKs waited for this read (D60)
        return accepted

    def _events(self, events: List[object], touched: Dict[int, StreamBuffer]) -> bool:
        """Apply ``events``; returns whether a stream is waiting to be accepted."""
        streams = self.streams
        accepted = False
        for ev in events:
            kind = type(ev)
            if kind is StreamData:
                buf = streams.get(ev.sid)           # type: ignore[attr-defined]
                if buf is not None:
                    buf.chunks.append(ev.data)      # type: ignore[attr-defined]
                    buf.size += len(ev.data)        # type: ignore[attr-defined]
                    if buf.discard:
                        self.take(buf, buf.size)
                    else:
                        touched[buf.sid] = buf
            elif kind is StreamEnded or kind is WindowUpdate or kind is StreamReset:
                buf = streams.get(ev.sid)           # type: ignore[attr-defined]
                if buf is not None:
                    if kind is StreamEnded:
                        buf.eof = True
                    elif kind is StreamReset:
                        buf.eof = buf.reset = True
                    touched[buf.sid] = buf
            elif kind is StreamOpened:
                sid = ev.sid                        # type: ignore[attr-defined]
                if not self.accept_limit:           # nobody accepts any more (closed)
                    self.refused += 1
                    smux = self.stack.smux
                    assert smux is not None
                    smux.close_stream(sid)
                else:
                    streams[sid] = StreamBuffer(sid)
                    self.accept_queue.append(sid)
                    accepted = True
            elif kind is SessionError:
                self._session_error(ev.error)       # type: ignore[attr-defined]
                return accepted
        return accepted

    def _write_out(self) -> None:
        """Frames from the session into ``_out``, then into KCP while its window has room."""
        out = self._out
        for w in self.stack.writes():
            out.append(w)
            self._out_bytes += len(w)
        if not out:
            return
        conn = self.conn
        wrote = False
        while out and conn.writable():
            w = out.popleft()
            self._out_bytes -= len(w)
            conn.send(w)
            wrote = True
        if wrote:
            # The flush's own update call brings nothing new to read (no input happened):
            # no second pass of the pump for it, unless it failed the channel.
            self._flushing = True
            try:
                self.chan.flush()
            finally:
                self._flushing = False

    def _arm(self, now: int) -> None:
        self._timer.schedule(self.stack.next_deadline(now))

    def _on_timer(self, now: int) -> None:
        if self.closed:
            return
        if self.chan.released:              # closed under us (a listener's backlog, say)
            self._die(ConnectionResetError(errno.ECONNRESET, "the KCP session was closed"))
            return
        if self.error is not None:          # lingering: its time is up
            self._finish()
            return
        events = self.stack.timer(now)
        if events:
            self._events(events, {})
        if self.error is None:
            self._pump()
            self._arm(now)

    # ------------------------------------------------------------------ death

    def silent_peer_hint(self) -> str:
        """Why a peer whose KCP answers (key and port are right) sent no smux frame."""
        return ("the peer's KCP answers but it sent no smux frame: it has not answered yet "
                "(its keepalive interval may be longer than this wait), or it rejected this "
                "side's framing "
                f"({self.stack.describe()}; kcptun runs snappy framing, compression=True, "
                "unless --nocomp, and its --smuxver must match; a kcptun server logs "
                "'invalid protocol' and goes silent, kcptun.md §4.9)")

    def _session_error(self, err: BaseException) -> None:
        stack = self.stack
        text = str(err)
        first = stack.first_byte
        if isinstance(err, SmuxSessionClosed) and "keepalive" in text:
            if first is None and self.chan.heard:
                text += "; " + self.silent_peer_hint()
            elif first is None:
                text += ("; nothing valid was ever received from the peer: it is gone, or "
                         "key/crypt differ" + self.chan.unheard_suffix(failing=True))
            else:
                text += " (the peer or the path to it is gone)"
        elif first is not None and not self.streams:
            text += f" (the peer's first byte was {first:#04x})"
        where = format_address(self.chan.peer)
        log.warning("smux session with %s (%s) ended: %s", where, stack.describe(), text)
        self._die(ConnectionResetError(errno.ECONNRESET, f"smux session with {where} ended: "
                                                         f"{text}"))

    def _die(self, exc: ConnectionResetError, linger: float = 0.0) -> None:
        """Latch ``exc``, tell every stream and the session's owner; then finish at once, or
        (``linger`` seconds > 0, a local close) once what was written has been acknowledged."""
        if self.error is not None:
            return
        self.error = exc
        if linger > 0:
            for w in self.stack.writes():           # FINs and data not yet taken
                self._out.append(w)
                self._out_bytes += len(w)
        elif not self.chan.released and self.chan.error is None:
            self._write_out()       # what fits the window (FINs too) goes in the final flush
        smux = self.stack.smux
        if smux is not None:
            smux.close()
        self.accept_queue.clear()
        for buf in list(self.streams.values()):
            buf.on_update()
        self.on_session()
        if linger > 0 and not self.chan.released and self.chan.error is None:
            self._linger_until = now_ms() + int(linger * 1000)
            self._timer.schedule(self._linger_until)
            self._linger()
        else:
            self._finish()

    def _linger(self) -> None:
        """A closed session still sending: write frames as the window allows; finish once
        KCP has nothing unacknowledged."""
        self._write_out()
        if not self._out and not self.conn.waitsnd:
            self._finish()

    def _finish(self) -> None:
        """Release the KCP session (its final flush) and stop. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._timer.close()
        self._out.clear()
        self._out_bytes = 0
        self.chan.on_update = _nothing
        self.chan.release()
        self.on_finish()

    def __repr__(self) -> str:
        state = "dead" if self.closed else f"{len(self.streams)} streams"
        return (f"<kcpgo SmuxDriver {self.stack.describe()} peer={self.chan.peer} "
                f"conv={self.chan.conv:#010x} {state}>")


def _text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _nothing() -> None:
    pass
