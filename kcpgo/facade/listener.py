"""``Listener``: kcp-go's server side on one UDP socket (docs/protocol.md §5.2).

The demultiplexing decisions are :mod:`kcpgo.sansio.demux`'s; this module applies them.

One reader greenlet serves every session of the listener. Datagrams are demultiplexed by the
remote address, as kcp-go 5.6.1 does, not by conv:

* a datagram that passes the crypto check creates a session for a new address (while the
  accept backlog has room) only if it can begin a conversation: it carries a PUSH whose sn is
  below the receive window a new session gets and whose una is 0 (its sender has received
  nothing of the conversation yet). kcp-go creates one from any datagram with a conv; kcpgo
  drops ACK-only, probe-only and mid-stream datagrams and bytes that are not KCP, counted in
  :attr:`Listener.stray` (docs/deviations.md D30). FEC parity alone never creates one;
* from a known address, a different conv is taken as a restarted peer only if the datagram
  carries a PUSH with sn 0 (kcpgo, D31; kcp-go: sn 0 in the first segment, whatever its cmd):
  the old session is reset (its calls raise ``ConnectionResetError`` after the data already
  received, as after a TCP RST) and a new one replaces it; otherwise the datagram is dropped
  (:attr:`Listener.mismatched`);
* a closed (or replaced) session is forgotten (kcp sessions have no teardown handshake), but
  for 30 s, like TCP's TIME_WAIT, its address cannot begin a session with its conv again:
  the late ACKs and retransmissions its peer still sends no longer create a "phantom"
  session, as they do in kcp-go (D30, D31); a new conv from the address (a restarted
  client) begins one at once;
* datagrams that keep failing the checksum from one address (or, without a cipher, that are
  not KCP) are logged to ``kcpgo.listener`` as a WARNING, at most once per 10 s per listener
  (D33); datagrams too short for a KCP header (port scans, keepalives) are not.

Flood protection (nothing here is in kcp-go):

* **Half-open cap**: sessions created but not yet accepted are at most ``backlog`` (default
  128, kcp-go's acceptBacklog); while the backlog is full, datagrams that would create a
  session are dropped. Without a cipher any first PUSH (sn below the window) creates a
  session, so a flood from spoofed addresses fills the backlog, but the session table, its
  memory and its timers stay bounded by ``backlog`` plus what the application accepted. With
  a cipher, datagrams that fail the CRC/AEAD check never create a session.
* **Eviction of failed half-open sessions**: when the backlog is full, waiting sessions that
  have already failed (``idle_timeout`` expired, or the dead-link limit) are closed to make
  room (counted in :attr:`Listener.evicted`). This happens only if the application asked for
  an ``idle_timeout`` (``listen(idle_timeout=...)``): kcp-go never times sessions out.
* **Idle reaping of accepted sessions** is the application's choice: with ``idle_timeout`` a
  session that hears nothing for that long fails its blocked and later calls with
  ``TimeoutError``; the application closes it, which removes it from the table. Flood sessions
  that send one datagram and go silent are therefore reaped after ``idle_timeout``; the live
  session count under a flood is about (accept rate) x ``idle_timeout`` + ``backlog``.

Closing the listener stops accepting; sessions already accepted keep working (the socket stays
open until the last of them is closed), like accepted TCP connections outlive their listening
socket. Sessions still waiting in the backlog are closed.
"""
from __future__ import annotations

import errno
import logging
import socket as _socket
from typing import Any, Callable, Dict, Optional, Tuple

from ..address import format_address
from ..runtime.channel import Channel
from ..runtime.clock import now_ms
from ..runtime.udp import UDPEndpoint
from ..sansio.connection import Connection
from ..sansio.demux import ACCEPT_BACKLOG, Backlog, BadSources, Demux, Route, receive_window
from ..snmp import Snmp
from ._blocking import WOULD_BLOCK, Blocking, Direction, ReadyFD, ebadf, locked, set_dscp
from .socket import KCPSocket

__all__ = ["Listener", "ACCEPT_BACKLOG"]

#: D33: the rate-limited WARNING about peers whose datagrams keep failing the checksum.
log = logging.getLogger("kcpgo.listener")

Address = Tuple[Any, ...]


class Listener(Blocking):
    """Accepts KCP sessions on a UDP socket. Create with :func:`kcpgo.listen` or
    :func:`kcpgo.serve_conn`. Its timeout (``settimeout`` etc.) applies to :meth:`accept`.

    ``new_connection(conv)`` builds the sans-IO connection of each new session (cipher, FEC,
    MTU, window ... from the listen options), before its first datagram is processed;
    ``idle_timeout`` (seconds) and ``rate_limit`` (bytes per second, 0: none) apply to every
    session.
    """

    def __init__(self, sock: _socket.socket, *, crypt: Any, backlog: int, owned: bool,
                 snmp: Snmp, new_connection: Callable[[int], Connection],
                 idle_timeout: Optional[float] = None, rate_limit: int = 0) -> None:
        # D30: a PUSH from a new address begins a conversation if its sn is below the receive
        # window its session will have (the listen options'; a throwaway connection says).
        self._demux = Demux(crypt, snmp, window=receive_window(new_connection(0)))
        #: D33: which addresses keep failing the checksum, for the rate-limited warning.
        self._bad = BadSources()
        self._bad_seen = 0          # bad.total when the last accept() ended
        self._backlog: Backlog[_Entry] = Backlog(backlog)
        self._new_connection = new_connection
        self._idle_timeout = idle_timeout
        self._rate_limit = rate_limit
        self.snmp = snmp
        #: Live sessions by peer address: their channels only, so that an accepted socket the
        #: application drops without close() is collected (and closed) as a socket would be.
        self._sessions: Dict[Address, Channel] = {}
        self._accepting = Direction()
        self._timeout: Optional[float] = None
        self._closed = False
        self._error: Optional[OSError] = None
        self._fd: Optional[ReadyFD] = None
        # pktinfo: on a wildcard address, each session replies from the local address its
        # peer sent to (Channel.local, from the datagrams routed to it; docs/deviations.md D25).
        self._endpoint = UDPEndpoint(sock, self._on_batch, owned=owned, snmp=snmp,
                                     on_error=self._fail, pktinfo=True)
        if self._endpoint.pktinfo:
            self._endpoint.on_batch = self._on_batch_pktinfo
        self._runtime = self._endpoint.runtime
        self._address = sock.getsockname()
        #: What a new session's channel becomes in the backlog (and ``accept()`` returns):
        #: a :class:`KCPSocket`, or whatever a facade built on the listener makes of it at
        #: once (the smux listener runs smux on it from the first datagram).
        self.adopt: Callable[[Channel], Any] = KCPSocket

    @property
    def family(self) -> int:
        """The address family of the listener's UDP socket (``AF_INET`` or ``AF_INET6``), as
        ``socket.socket.family``."""
        return self._endpoint.family

    @property
    def evicted(self) -> int:
        """Waiting sessions closed to make room in a full backlog (see the module docstring)."""
        return self._backlog.evicted

    @property
    def stray(self) -> int:
        """Datagrams from an address without a session that could not begin a conversation
        (late ACKs, probes, mid-stream segments, late datagrams of a conversation this address
        ended less than 30 s ago, bytes that are not KCP or too short for a KCP header),
        dropped instead of creating a phantom session as kcp-go does (docs/deviations.md D30;
        not an SNMP field: kcp-go has no such counter)."""
        return self._demux.stray

    @property
    def mismatched(self) -> int:
        """Datagrams with another conv from an address that has a session, dropped because
        they do not begin a new conversation (no PUSH with sn 0, or a conv whose session at
        this address ended less than 30 s ago: docs/deviations.md D31)."""
        return self._demux.mismatched

    @property
    def bad_datagrams(self) -> int:
        """Datagrams that failed the checksum/authentication (this listener's share of
        InCsumErrors), plus, without a cipher, those from new addresses that are not KCP
        (D33: what the rate-limited WARNING on ``kcpgo.listener`` reports). Datagrams too
        short for a KCP header (port scans, NAT keepalives) are neither."""
        return self._bad.total

    def _bad_datagram(self, addr: Address, chan: Optional[Channel], action: Route,
                      now: int) -> None:
        """Count a datagram that failed the checksum (or is not KCP) from ``addr`` and warn,
        rate-limited, when that address keeps sending them (docs/deviations.md D33)."""
        crypt = self._demux.codec.crypt
        if action is _DROP_NOT_KCP and crypt is not None:
            return              # it passed our crypto check: a broken peer, not a mismatch
        if chan is not None:
            chan.conn.codec.csum_errors += 1            # the session's share, for its errors
        due = self._bad.note(addr, now)
        if due is None or not log.isEnabledFor(logging.WARNING):
            return
        count, suppressed = due
        if action is _DROP_CHECKSUM:
            what = (f"failed the checksum/authentication (InCsumErrors; this listener uses "
                    f"crypt={getattr(crypt, 'name', crypt)!r})")
            hint = "the peer's key/crypt settings probably differ from this listener's"
        else:
            what = "are not KCP datagrams (this listener has no crypt)"
            hint = "the peer probably encrypts (crypt/key set on its side only)"
        more = (f"; {suppressed} more bad datagrams since the last warning were not reported"
                if suppressed else "")
        log.warning("kcpgo listener %s: %d datagrams from %s %s: %s%s",
                    format_address(self._address), count, format_address(addr), what, hint, more)

    # ------------------------------------------------------------------ demultiplexing

    def _on_batch(self, batch: list, now: int) -> None:
        demux = self._demux
        route = demux.route_opened
        sessions = self._sessions
        accepting = not self._closed
        touched: Dict[Channel, None] = {}
        # The whole batch is decrypted at once (one cipher call, PacketCodec.open_many).
        opened = demux.open_many([item[0] for item in batch])
        for (_, addr), opened_payload in zip(batch, opened):
            old = sessions.get(addr)
            action, payload, conv = route(opened_payload, None if old is None else old.conv,
                                          accepting, now, addr)
            if action is _FEED:
                old.receive_payload(payload, now)           # type: ignore[union-attr,arg-type]
                touched[old] = None                         # type: ignore[index]
                continue
            chan = self._not_fed(action, payload, conv, addr, old, accepting, now, touched)
            if chan is not None:
                touched[chan] = None
        self._batch_done(touched, now)

    def _on_batch_pktinfo(self, batch: list, now: int) -> None:
        """:meth:`_on_batch` on a socket that reports local addresses: items are ``(data,
        address, local)``. A session replies from the local address of the latest datagram
        routed to it (FEED, CREATE, REPLACE: it passed the crypto check). A datagram that
        fails it, spoofed with a client's source address to another local address, must not
        choose where that client's replies leave from (docs/deviations.md D25)."""
        demux = self._demux
        route = demux.route_opened
        sessions = self._sessions
        accepting = not self._closed
        touched: Dict[Channel, None] = {}
        opened = demux.open_many([item[0] for item in batch])
        for (_, addr, local), opened_payload in zip(batch, opened):
            old = sessions.get(addr)
            action, payload, conv = route(opened_payload, None if old is None else old.conv,
                                          accepting, now, addr)
            if action is _FEED:
                if local is not None:
                    old.local = local                       # type: ignore[union-attr]
                old.receive_payload(payload, now)           # type: ignore[union-attr,arg-type]
                touched[old] = None                         # type: ignore[index]
                continue
            chan = self._not_fed(action, payload, conv, addr, old, accepting, now, touched)
            if chan is not None:
                chan.local = local
                touched[chan] = None
        self._batch_done(touched, now)

    def _not_fed(self, action: Route, payload: Optional[bytes], conv: int, addr: Address,
                 old: Optional[Channel], accepting: bool, now: int,
                 touched: Dict[Channel, None]) -> Optional[Channel]:
        """A datagram that is not for the address's session: replace it, create one, or drop
        the datagram. Returns the session created (it took the datagram), if any."""
        if action is _REPLACE:
            # The peer restarted with a new conv: like a TCP RST, calls on the old session
            # raise ECONNRESET (after any data already received), and it leaves the table
            # and the backlog at once.
            touched.pop(old, None)                          # type: ignore[arg-type]
            old.fail(ConnectionResetError(                    # type: ignore[union-attr]
                errno.ECONNRESET, "the peer restarted the session with a new conv"))
            old.release()                                   # type: ignore[union-attr]
            if not accepting:
                return None
        elif action is not _CREATE:
            if action is _DROP_CHECKSUM or action is _DROP_NOT_KCP:
                self._bad_datagram(addr, old, action, now)
            return None
        if not self._backlog.make_room(_failed, _discard, now):
            return None                      # backlog full: no session, datagram lost (§5.2)
        chan = self._create(conv, addr)
        chan.receive_payload(payload, now)                  # type: ignore[arg-type]
        return chan

    def _batch_done(self, touched: Dict[Channel, None], now: int) -> None:
        for chan in touched:
            chan.after_batch(now)
        if self._backlog:
            self._accepting.wake()
            if self._fd is not None:
                self._fd.set(True)

    def _create(self, conv: int, addr: Address) -> Channel:
        conn = self._new_connection(conv)
        chan = Channel(conn, self._endpoint, addr, on_release=self._forget, passive=True,
                       idle_timeout=self._idle_timeout, rate_limit=self._rate_limit)
        self._sessions[addr] = chan
        self._backlog.push((chan, self.adopt(chan)), key=chan)
        return chan

    def claim(self, chan: Channel) -> None:
        """Take ``chan``'s session out of the backlog without ``accept()`` (a facade that
        adopted it found it in use: it no longer counts as half-open)."""
        self._backlog.discard(chan)

    def _forget(self, chan: Channel) -> None:
        """A session was released (closed, replaced, evicted): drop it from the table and,
        if it was never accepted, from the backlog."""
        if self._sessions.get(chan.peer) is chan:
            del self._sessions[chan.peer]
            # TIME_WAIT-like: its peer's late datagrams begin no new session (D30, D31).
            self._demux.conversation_closed(chan.peer, chan.conv, now_ms())
        self._backlog.discard(chan)
        if self._closed and not self._sessions:
            self._endpoint.close()

    def _fail(self, err: OSError) -> None:
        self._error = err
        self._accepting.wake_all()
        for chan in list(self._sessions.values()):
            chan.fail(err)
        if self._fd is not None:
            self._fd.set(True)

    # ------------------------------------------------------------------ public API

    def _try_accept(self, _: None) -> object:
        if self._closed:
            raise ebadf()
        backlog = self._backlog
        if backlog:
            _, s = backlog.pop()
            if self._fd is not None:
                self._fd.set(bool(backlog))
            return s, s.getpeername()
        if self._error is not None:
            raise OSError(self._error.errno, self._error.strerror)
        return WOULD_BLOCK

    def accept(self) -> Tuple[KCPSocket, Address]:
        """Wait for the next session; returns ``(session, peer_address)``.

        Honours :meth:`settimeout` (``TimeoutError``; ``BlockingIOError`` when non-blocking).
        Raises ``OSError(EBADF)`` once the listener is closed, also if closed while waiting.
        Any number of greenlets and threads may wait in ``accept`` at once; each session goes
        to one. If datagrams failed the checksum since the previous ``accept`` ended (they may
        arrive, and be counted by the runtime's thread, just before this call), the
        ``TimeoutError`` says how many and from where (docs/deviations.md D33).
        """
        bad = self._bad
        try:
            result = self._blocking_call(self._try_accept, None, self._accepting,
                                         self._deadline(), take_turn=False)
            self._bad_seen = bad.total
            return result  # type: ignore[return-value]
        except TimeoutError:
            failed = bad.total - self._bad_seen
            self._bad_seen = bad.total
            if not failed:
                raise
            # With a cipher only checksum failures are noted, without one only bytes that are
            # not KCP (too short ones never: a port scan or a keepalive is no mismatch).
            if self._demux.codec.crypt is not None:
                what = "failed the checksum/authentication"
            else:
                what = "were not KCP (this listener has no crypt)"
            many = failed != 1
            raise TimeoutError(
                f"timed out; no session, but {failed} datagram{'s' * many} {what} meanwhile, "
                f"the last from {format_address(bad.last)}: check that key/crypt settings "
                f"match the peer's") from None

    def close(self) -> None:
        """Stop accepting (idempotent). Waiting ``accept`` calls raise ``OSError(EBADF)``.

        Sessions waiting in the backlog are closed; accepted sessions keep working, and the UDP
        socket is closed after the last of them (unless it was passed to ``serve_conn``).
        """
        with self._runtime.lock:
            self._close()
        self._endpoint.wait_closed()        # (if it closed now: no accepted session is left)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._accepting.wake_all()
        backlog = self._backlog
        while backlog:
            backlog.pop()[0].release()
        if self._fd is not None:
            self._fd.close()
            self._fd = None
        if not self._sessions:
            self._endpoint.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @locked
    def fileno(self) -> int:
        """A descriptor that ``select``/``poll`` report readable exactly when ``accept`` would
        not block (also once it failed: ``accept`` then raises). -1 once closed, as
        ``socket.fileno``."""
        if self._closed:
            return -1
        if self._fd is None:
            self._fd = ReadyFD(self._runtime)
            self._fd.set(bool(self._backlog) or self._error is not None)
        return self._fd.rfd

    def getsockname(self) -> Address:
        self._check_open()
        return self._address

    def set_dscp(self, dscp: int) -> None:
        """DSCP of every datagram the listener's sessions send (§5.5)."""
        set_dscp(self._endpoint.sock, dscp)

    def set_read_buffer(self, nbytes: int) -> None:
        self._endpoint.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, nbytes)

    def set_write_buffer(self, nbytes: int) -> None:
        self._endpoint.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, nbytes)

    @property
    def session_count(self) -> int:
        """Live sessions (accepted or waiting in the backlog)."""
        return len(self._sessions)

    @property
    def pending_count(self) -> int:
        """Sessions created but not yet accepted (at most ``backlog``)."""
        return len(self._backlog)

    def __repr__(self) -> str:
        return f"<kcpgo.Listener {self._address} sessions={len(self._sessions)}>"


_Entry = Tuple[Channel, Any]
_FEED, _REPLACE, _CREATE = Route.FEED, Route.REPLACE, Route.CREATE
_DROP_CHECKSUM, _DROP_NOT_KCP = Route.DROP_CHECKSUM, Route.DROP_NOT_KCP


def _failed(entry: _Entry) -> bool:
    return entry[0].error is not None


def _discard(entry: _Entry) -> None:
    entry[0].release()          # never accepted: nobody else holds the socket
