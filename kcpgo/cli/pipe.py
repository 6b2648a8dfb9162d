"""``Pipe``: copy bytes both ways between a TCP (or unix) socket and an smux stream, as kcptun's
``std.Pipe`` does for every tunnelled connection (docs/kcptun.md §5.3 item 3, §5.6).

Close rules (kcptun.md §5.3, §6 for ``--closewait``, kcptun.md §11 item 4):

* when either direction ends with an error (a reset, the smux session's death), both ends are
  closed at once;
* when a direction ends cleanly (EOF: the TCP peer's FIN or the stream's FIN) and
  ``closewait`` is 0, both ends are closed at once: kcptun 20210922's rule (replies still in
  flight are lost; a kcptun peer does the same at our FIN);
* with ``closewait`` N > 0 the end is forwarded as a half-close (``shutdown(SHUT_WR)``: a FIN
  on the other side), the other direction keeps copying, and both ends are closed when it ends
  too or N seconds later, whichever comes first. kcptun's own ``--closewait`` only delays the
  close and forwards nothing; forwarding the FIN lets the far side answer and finish early
  (a target that replies to EOF, an HTTP/1.0 client), and a kcptun peer, which closes the
  whole stream at a FIN (kcptun.md §4.5), just ends the wait sooner. What a target keeps
  sending meanwhile to a kcptun client that already closed the stream is sent and dropped
  there, for at most N seconds (hence the default 0, :mod:`kcpgo.cli.kcptun_config`).

Copies move up to :data:`BUFSIZE` bytes per call with no per-byte Python work: ``recv`` returns
a bytes object that ``send`` hands on as it is. A stream's ``recv`` joins the frames already
buffered (up to the size asked), so a bulk stream -> TCP copy makes one TCP send per batch of
frames, not per frame; small payloads (request/response traffic) are written at once.

Stream -> TCP without a hand-over: when the stream offers it (``Stream.set_receiver``, hub
mode) and ``tcp`` is a gevent socket, bytes arriving on the stream are written to the TCP
socket by kcpgo's reader itself, in the loop turn that brought them, with a send that never
waits (``timeout 0``); only what that send does not take (a full socket buffer), EOF and
errors go through the copier greenlet, which then writes first (it holds the stream's bytes
in order: nothing is written directly while it writes).
"""
from __future__ import annotations

import socket as _socket
from typing import Any, List, Optional, Tuple

import gevent
from gevent import socket as gsocket

__all__ = ["Pipe", "BUFSIZE"]

#: Bytes per ``recv`` (a TCP read, or up to one smux frame's payload from a stream).
BUFSIZE = 65536


class Pipe:
    """Copies ``tcp`` <-> ``stream`` until both directions ended (see the module docstring).

    ``tcp`` and ``stream`` are blocking socket-like objects on the current gevent hub (a
    gevent socket and a :class:`kcpgo.Stream`); ``closewait`` in seconds. :meth:`run` blocks
    the calling greenlet until both are closed; the other direction runs in a greenlet of its
    own.
    """

    __slots__ = ("tcp", "stream", "closewait", "errors", "_ends", "_closing", "_timer",
                 "_writing", "_send_now")

    def __init__(self, tcp: Any, stream: Any, closewait: float = 0) -> None:
        self.tcp = tcp
        self.stream = stream
        self.closewait = closewait
        #: The error that ended each direction (``[tcp -> stream, stream -> tcp]``), ``None``
        #: for EOF or for the end caused by our own close.
        self.errors: List[Optional[BaseException]] = [None, None]
        self._ends = 0
        self._closing = False
        self._timer: Optional[gevent.Greenlet] = None
        #: The stream -> TCP greenlet holds bytes it has not written yet (no direct writes).
        self._writing = False
        #: ``tcp.send`` for direct writes (a gevent socket's, called with timeout 0), or None.
        self._send_now: Optional[Any] = None

    def run(self) -> Tuple[Optional[BaseException], Optional[BaseException]]:
        """Copy until both directions ended and both ends are closed; returns the errors of
        ``(tcp -> stream, stream -> tcp)`` (``None``: EOF or closed by the other direction).
        Never raises for I/O errors."""
        direct = getattr(self.stream, "set_receiver", None)
        if direct is not None and isinstance(self.tcp, gsocket.socket):
            self._send_now = self.tcp.send
            if not direct(self._direct):
                self._send_now = None
        down = gevent.spawn(self._copy, self.stream, self.tcp, 1)
        try:
            self._copy(self.tcp, self.stream, 0)
            down.join()
        finally:
            if not down.dead:       # killed (GreenletExit in this greenlet): end both now
                self._close()
                down.kill(block=False)
        return self.errors[0], self.errors[1]

    def _direct(self, data: bytes) -> int:
        """The stream's receiver (kcpgo's reader): write ``data`` to TCP now if that needs no
        wait; returns the bytes written, 0 to leave them to the copier greenlet."""
        send = self._send_now
        if send is None or self._writing or self._closing:
            return 0
        try:
            return send(data, 0, 0.0)
        except (BlockingIOError, InterruptedError):     # full: the greenlet waits
            return 0
        except OSError:             # the greenlet meets the error itself, and ends
            self._send_now = None
            return 0

    def _copy(self, src: Any, dst: Any, which: int) -> None:
        recv, send, sendall = src.recv, dst.send, dst.sendall
        err: Optional[BaseException] = None
        try:
            while True:
                data = recv(BUFSIZE)
                if not data:
                    break
                if which:
                    self._writing = True        # stream -> TCP: no direct write meanwhile
                # One send usually takes it all; gevent's sendall costs a getsockopt per
                # call, which a request/response exchange pays on every reply.
                n = send(data)
                if n < len(data):
                    sendall(memoryview(data)[n:])
                if which:
                    self._writing = False
        except OSError as e:
            if not self._closing:
                err = e
        if which:
            self._send_now = None
        self._ended(which, dst, err)

    def _ended(self, which: int, dst: Any, err: Optional[BaseException]) -> None:
        self.errors[which] = err
        self._ends += 1
        if self._closing:
            return
        if self._ends == 2 or err is not None or self.closewait <= 0:
            self._close()
            return
        try:
            dst.shutdown(_socket.SHUT_WR)       # forward the FIN (a half-close)
        except OSError:
            pass
        self._timer = gevent.spawn_later(self.closewait, self._close)

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        timer = self._timer
        if timer is not None and timer is not gevent.getcurrent():
            timer.kill(block=False)
        for end in (self.tcp, self.stream):
            try:
                end.close()
            except OSError:
                pass
