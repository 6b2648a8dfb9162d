"""``python -m kcpgo tunnel client|server``: a kcptun-compatible TCP tunnel (docs/kcptun.md §5).

* **client** (kcptun.md §5.3): accepts TCP connections on ``--localaddr``; connection number
  ``rr`` goes to KCP session ``rr % --conn``, dialled lazily with kcptun's settings and
  replaced when it died, was closed or (``--autoexpire``) expired; an expired session is
  force-closed ``--scavengettl`` seconds after expiry. Each connection opens one smux stream
  and the bytes are copied both ways (:class:`~kcpgo.cli.pipe.Pipe`).
* **server** (kcptun.md §5.4): smux over KCP on UDP ``--listen``; each stream dials
  ``--target`` (TCP ``host:port`` or a unix socket path); a failed dial closes the stream at
  once (the client sees EOF); otherwise the same two-way copy.

Flags, defaults and the JSON config are kcptun's (:mod:`kcpgo.cli.kcptun_config`;
kcptun.md §5.5, §6). Everything runs on gevent greenlets in one thread: gevent sockets for
TCP, kcpgo's blocking API for KCP; nothing is monkey-patched.

What is logged (``--log`` file or stderr; kcptun's startup lines first): each KCP session
(dialled, heard nothing from the server after :data:`UNHEARD_WARN` seconds with the reason
kcpgo suspects, died and why), each stream open/close and copy error (not with ``--quiet``,
as kcptun), a failed target dial, and kcpgo's own WARNINGs (``kcpgo.smux``: a framing
mismatch naming both sides' kcptun flags, keepalive timeouts; ``kcpgo.listener``: datagrams
failing the checksum, i.e. a wrong key or cipher). The first stdout line is
``LISTENING <address>`` once the listening socket is bound (for scripts and tests).

``server --workers N`` (beyond kcptun; Linux): the process binds ``--listen`` with
``SO_REUSEPORT`` and forks N - 1 workers before it starts anything else; each process then
serves on a socket of its own (:mod:`kcpgo.server_workers`: the kernel keeps each client on
one worker; nothing is shared), and the first one stops and reaps the others when it stops.
Their log lines after the start-up ones begin with ``worker N:`` (0 for the first process);
the SNMP log (``--snmplog``, SIGUSR1) has the first process's counters only.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import socket as _stdsocket
import sys
from time import monotonic
from typing import Any, Dict, List, Optional, Sequence, Tuple

import gevent
import gevent.event
from gevent import socket as gsocket

from .. import MODES, dial_smux, listen_smux, set_runtime
from ..address import bind_plan, format_address
from ..runtime.iothread import LINGER_AT_EXIT
from ..runtime.modes import ENV_VAR
from ..server_workers import WorkerPool, ready
from ..snmp import DEFAULT_SNMP
from .kcptun_config import (ROLES, ConfigError, TunnelConfig, nodelay_params, parse,
                            session_options, smux_arguments, startup_lines)
from .pipe import Pipe
from .snmplog import write_record
from .tunnel_log import setup_logging, tag_log_lines

__all__ = ["main", "TunnelClient", "TunnelServer", "UNHEARD_WARN", "run", "run_process"]

log = logging.getLogger("kcpgo.tunnel")

#: Seconds after a client session's creation without any valid datagram from the server
#: before the client warns (with kcpgo's guess: key/crypt/FEC, address, a dead server).
UNHEARD_WARN = 3.0
#: kcptun 20210922: a failed KCP dial is retried every second (kcptun.md §5.3 item 2); the
#: scavenger checks expired sessions every second (item 4).
RETRY_DIAL = 1.0
SCAVENGE_PERIOD = 1.0
#: Server: how often sessions are checked for death (to log it with its cause).
SESSION_CHECK = 1.0
#: TCP listen backlog (Go uses the system's somaxconn).
TCP_BACKLOG = 1024


# ---------------------------------------------------------------------- addresses


def split_host_port(text: str) -> Optional[Tuple[str, str]]:
    """Go's ``net.SplitHostPort``: ``(host, port)`` of ``host:port`` / ``[v6]:port``, or
    ``None`` when ``text`` is not of that form (kcptun then takes it for a unix socket)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":" or "]" in text[end + 1:]:
            return None
        return text[1:end], text[end + 2:]
    host, sep, port = text.rpartition(":")
    if not sep or ":" in host or "[" in host or "]" in host:
        return None
    return host, port


def tcp_listen(address: str) -> Tuple[Any, str]:
    """A listening gevent socket on ``address`` (``host:port``; ``:port`` is every address
    of both families where the system allows, as Go) or a unix socket path; returns it and
    its bound address as text. Raises ``OSError``/``ValueError`` if it cannot listen."""
    if split_host_port(address) is None:
        sock = gsocket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
        try:
            sock.bind(address)
            sock.listen(TCP_BACKLOG)
        except BaseException:
            sock.close()
            raise
        return sock, address
    family, sockaddr, dualstack = bind_plan(address, "--localaddr")
    sock = gsocket.socket(family, _stdsocket.SOCK_STREAM)
    try:
        sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
        if family == _stdsocket.AF_INET6:
            sock.setsockopt(_stdsocket.IPPROTO_IPV6, _stdsocket.IPV6_V6ONLY, 0 if dualstack
                            else 1)
        sock.bind(sockaddr)
        sock.listen(TCP_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock, format_address(sock.getsockname())


def dial_target(target: str) -> Any:
    """A connected gevent socket to ``target`` (``host:port``, TCP with ``TCP_NODELAY`` as Go
    sets it; anything else: a unix socket path). Blocks the calling greenlet; ``OSError`` if
    the connection fails."""
    hp = split_host_port(target)
    if hp is None:
        sock = gsocket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
        try:
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
        return sock
    host, port = hp
    sock = gsocket.create_connection((host or "localhost", int(port) if port.isdigit()
                                      else port))
    _nodelay(sock)
    return sock


def _resolve(address: str) -> Any:
    """``host:port`` with the host resolved through gevent's resolver (other greenlets keep
    running meanwhile), as the ``(ip, port, ...)`` tuple kcpgo dials; anything else is
    returned as given for kcpgo to refuse. ``OSError`` if the name cannot be resolved."""
    hp = split_host_port(address)
    if hp is None or not hp[1].isdigit():
        return address
    host, port = hp
    infos = gsocket.getaddrinfo(host, int(port), 0, _stdsocket.SOCK_DGRAM)
    return infos[0][4]


def _nodelay(sock: Any) -> None:
    try:
        sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
    except OSError:
        pass                                # a unix socket


def _peer_text(sock: Any) -> str:
    try:
        name = sock.getpeername()
    except OSError:
        return "?"
    return format_address(name) if isinstance(name, tuple) else (name or "unix")


def _tune(cfg: TunnelConfig, what: str, dscp: Any, rcvbuf: Any, sndbuf: Any) -> None:
    """kcptun's per-socket settings (kcptun.md §5.2) through the setters given: DSCP and
    ``--sockbuf`` for both buffers; failures are logged, not fatal, as kcptun does."""
    steps = [("SetDSCP", dscp, cfg.dscp)] if cfg.dscp else []
    steps += [("SetReadBuffer", rcvbuf, cfg.sockbuf), ("SetWriteBuffer", sndbuf, cfg.sockbuf)]
    for name, setter, value in steps:
        try:
            setter(value)
        except (OSError, ValueError) as e:
            log.warning("%s (%s): %s", name, what, e)


def _copy_streams(tcp: Any, stream: Any, cfg: TunnelConfig, inbound: str,
                  outbound: str) -> None:
    """One tunnelled connection: log, pipe, log (kcptun's ``handleClient``)."""
    quiet = cfg.quiet
    if not quiet:
        log.info("stream opened in: %s out: %s", inbound, outbound)
    errs = Pipe(tcp, stream, cfg.closewait).run()
    if not quiet:
        for err in errs:
            if err is not None:
                log.warning("pipe: %s in: %s out: %s", err, inbound, outbound)
        log.info("stream closed in: %s out: %s", inbound, outbound)


def _log_death(what: str, err: BaseException) -> None:
    """Log a session's death with its cause: a WARNING, or INFO when kcpgo already logged
    the cause as a WARNING itself (an smux session error: framing mismatch, protocol error,
    keepalive timeout, on ``kcpgo.smux``)."""
    text = getattr(err, "strerror", None) or str(err)
    level = logging.INFO if text.startswith("smux session with") else logging.WARNING
    log.log(level, "%s: %s", what, text)


# ---------------------------------------------------------------------- client


class _Slot:
    __slots__ = ("session", "expires")

    def __init__(self, session: Any, expires: Optional[float]) -> None:
        self.session = session
        self.expires = expires


class TunnelClient:
    """kcptun's client loop (kcptun.md §5.3) for ``cfg`` (role ``client``)."""

    def __init__(self, cfg: TunnelConfig) -> None:
        self.cfg = cfg
        self.options = session_options(cfg)
        self.smux = smux_arguments(cfg)
        self.manual = None if cfg.mode in MODES else nodelay_params(cfg)
        self.slots: List[Optional[_Slot]] = [None] * cfg.conn
        self.rr = 0
        # (session, force-close time, its local address as kcptun logs it: named while
        # open, as a closed session's getsockname() raises EBADF)
        self.expiring: List[Tuple[Any, float, str]] = []
        self.listener: Any = None
        self.address = ""

    def start(self) -> str:
        """Bind ``--localaddr``; returns the bound address."""
        self.listener, self.address = tcp_listen(self.cfg.localaddr)
        return self.address

    def serve(self) -> None:
        """Accept connections forever (kcptun's main loop)."""
        if self.cfg.autoexpire > 0:
            gevent.spawn(self._scavenger)
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError as e:
                if e.errno == errno.EBADF:
                    return                          # closed by stop
                log.warning("accept: %s", e)        # EMFILE and the like: back off
                gevent.sleep(0.1)
                continue
            _nodelay(conn)
            session = self._session()
            gevent.spawn(self._handle, conn, session)
            self.rr = (self.rr + 1) & 0xFFFF        # kcptun: a u16 counter

    def _session(self) -> Any:
        """The session of slot ``rr % conn``, dialled first if missing, dead or expired."""
        idx = self.rr % self.cfg.conn
        slot = self.slots[idx]
        now = monotonic()
        if slot is None or slot.session.closed or (slot.expires is not None and
                                                   now >= slot.expires):
            session = self._dial()
            expires = None
            if self.cfg.autoexpire > 0:
                expires = now + self.cfg.autoexpire
                self.expiring.append((session, expires + self.cfg.scavengettl,
                                      format_address(session.getsockname())))
            slot = self.slots[idx] = _Slot(session, expires)
        return slot.session

    def _dial(self) -> Any:
        """A new smux session (new conv, own UDP socket); retried every second on failure
        (name resolution, sockets), forever, as kcptun's ``waitConn``."""
        cfg = self.cfg
        while True:
            try:
                session = dial_smux(_resolve(cfg.remoteaddr), self.options, **self.smux)
                break
            except (OSError, ValueError) as e:
                log.warning("re-connecting to %s: %s", cfg.remoteaddr, e)
                gevent.sleep(RETRY_DIAL)
        if self.manual is not None:
            session.set_nodelay(*self.manual)
        _tune(cfg, "client session", session.set_dscp, session.set_read_buffer,
              session.set_write_buffer)
        log.info("smux version: %s on connection: %s -> %s (conv %#010x)", cfg.smuxver,
                 format_address(session.getsockname()), format_address(session.getpeername()),
                 session.conv)
        gevent.spawn(self._watch, session)
        return session

    def _watch(self, session: Any) -> None:
        """Log the session's fate: nothing heard from the server after
        :data:`UNHEARD_WARN` s (with the reason kcpgo suspects), and its death with the cause.
        Waits in ``accept_stream`` (a kcptun server never opens streams; any stream a server
        opens is closed)."""
        peer = format_address(session.getpeername())
        session.settimeout(UNHEARD_WARN)
        while True:
            try:
                session.accept_stream().close()
                continue
            except TimeoutError:
                if not session.heard:
                    log.warning("session to %s (conv %#010x): %s", peer, session.conv,
                                session.diagnosis())
                try:
                    session.settimeout(None)
                except OSError:
                    pass                    # closed meanwhile: accept_stream says how
                continue
            except OSError as e:
                err = session.error
                if err is None and e.errno == errno.EBADF:
                    log.info("session to %s (conv %#010x) closed", peer, session.conv)
                else:
                    _log_death(f"session to {peer} (conv {session.conv:#010x}) died", err or e)
                return

    def _handle(self, conn: Any, session: Any) -> None:
        inbound = _peer_text(conn)
        try:
            stream = session.open_stream()
        except OSError as e:
            log.warning("open stream for %s: %s", inbound, e)
            conn.close()
            return
        outbound = f"{format_address(session.getpeername())}({stream.sid})"
        _copy_streams(conn, stream, self.cfg, inbound, outbound)

    def _scavenger(self) -> None:
        """Force-close expired sessions ``--scavengettl`` s after expiry (kcptun.md §5.3)."""
        while True:
            gevent.sleep(SCAVENGE_PERIOD)
            now = monotonic()
            keep = []
            for session, deadline, name in self.expiring:
                if session.closed:
                    log.info("scavenger: session normally closed: %s", name)
                elif now >= deadline:
                    session.close(0.0)      # (the scavenger must not wait for a dead peer)
                    log.info("scavenger: session closed due to ttl: %s", name)
                else:
                    keep.append((session, deadline, name))
            self.expiring = keep

    def sessions_closed(self) -> List[Any]:
        """The sessions :meth:`close` closed."""
        return ([slot.session for slot in self.slots if slot is not None]
                + [session for session, _, _ in self.expiring])

    def close(self) -> None:
        """Stop accepting and close every session (KCP's final flush, with a FIN for each
        open stream, D61), without waiting for ACKs (``run_process`` then waits at most
        ``LINGER_AT_EXIT``, 1 s, for them); a unix-socket ``--localaddr`` is removed, as Go's
        listener does."""
        if self.listener is not None:
            self.listener.close()
            path = self.cfg.localaddr
            if split_host_port(path) is None:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        for slot in self.slots:
            if slot is not None:
                slot.session.close(0.0)
        for session, _, _ in self.expiring:
            session.close(0.0)


# ---------------------------------------------------------------------- server


class TunnelServer:
    """kcptun's server loop (kcptun.md §5.4) for ``cfg`` (role ``server``); ``listen``: the
    UDP address instead of ``cfg.listen``, ``reuse_port``: bound with ``SO_REUSEPORT``
    (``--workers``)."""

    def __init__(self, cfg: TunnelConfig, listen: Any = None, reuse_port: bool = False) -> None:
        self.cfg = cfg
        self.listen = cfg.listen if listen is None else listen
        self.reuse_port = reuse_port
        self.options = session_options(cfg)
        self.smux = smux_arguments(cfg)
        self.manual = None if cfg.mode in MODES else nodelay_params(cfg)
        self.listener: Any = None
        self.sessions: Dict[Any, str] = {}          # adopted session -> peer text
        self.address = ""

    def start(self) -> str:
        """Bind ``--listen`` (UDP); returns the bound address."""
        cfg = self.cfg
        ln = self.listener = listen_smux(self.listen, self.options, reuse_port=self.reuse_port,
                                         **self.smux)
        kl = ln.listener
        _tune(cfg, "listener", kl.set_dscp, kl.set_read_buffer, kl.set_write_buffer)
        adopt = kl.adopt

        def adopt_session(chan: Any) -> Any:
            # a new KCP session, before its first datagram is processed (kcptun logs
            # "remote address" at AcceptKCP and applies the settings there)
            if self.manual is not None:
                chan.conn.set_nodelay(*self.manual)
            session = adopt(chan)
            peer = format_address(chan.peer)
            self.sessions[session] = peer
            log.info("remote address: %s (conv %#010x)", peer, chan.conv)
            return session

        kl.adopt = adopt_session
        self.address = format_address(ln.getsockname())
        return self.address

    def serve(self) -> None:
        """Accept streams forever; each dials the target in its own greenlet."""
        gevent.spawn(self._check_sessions)
        while True:
            try:
                stream, _ = self.listener.accept()
            except OSError as e:
                if e.errno == errno.EBADF:
                    return
                raise
            gevent.spawn(self._handle, stream)

    def _handle(self, stream: Any) -> None:
        cfg = self.cfg
        inbound = f"{stream.session.peer_text}({stream.sid})"
        try:
            target = dial_target(cfg.target)
        except (OSError, ValueError) as e:
            log.warning("dial target %s for stream %s: %s (stream closed)", cfg.target,
                        inbound, e)
            stream.close()
            return
        _copy_streams(target, stream, cfg, inbound, _peer_text(target) or cfg.target)

    def _check_sessions(self) -> None:
        """Log each session's end with its cause (keepalive timeout, protocol error, dead
        link), once."""
        while True:
            gevent.sleep(SESSION_CHECK)
            for session, peer in list(self.sessions.items()):
                if session.closed:
                    del self.sessions[session]
                    err = session.error
                    if err is not None:
                        _log_death(f"session from {peer} (conv {session.conv:#010x}) ended",
                                   err)
                    else:
                        log.info("session from %s (conv %#010x) closed", peer, session.conv)

    def sessions_closed(self) -> List[Any]:
        """The sessions :meth:`close` closed."""
        return list(self.sessions)

    def close(self) -> None:
        """Stop accepting and close every session: their open streams get a FIN (D61) after
        what they wrote, without waiting for ACKs (as the client's close)."""
        if self.listener is not None:
            self.listener.close()
        for session in list(self.sessions):
            session.close(0.0)


# ---------------------------------------------------------------------- process


def _linger(tunnel: Any) -> None:
    """Up to :data:`LINGER_AT_EXIT` for the closed sessions to deliver what they still hold
    (their streams' FINs come after it, D61), as an unpatched program's exit waits (D48); a
    session with more unsent than that leaves its peer to the keepalive timeout."""
    deadline = monotonic() + LINGER_AT_EXIT
    while monotonic() < deadline and any(s.lingering for s in tunnel.sessions_closed()):
        gevent.sleep(0.01)


def _snmp_logger(cfg: TunnelConfig) -> None:
    while True:
        gevent.sleep(cfg.snmpperiod)
        try:
            write_record(cfg.snmplog)
        except OSError as e:
            log.warning("snmp logger: %s", e)


def run(cfg: TunnelConfig) -> int:
    """Run the tunnel of ``cfg`` until SIGTERM (exit status 0), SIGINT (130, as every
    ``python -m kcpgo`` command after Ctrl-C) or a fatal error (1); each closes the sessions
    first. SIGUSR1 logs the SNMP counters, as kcptun does. A server with ``--workers N``
    forks its workers first (module docstring) and stops them before it returns; the SNMP
    log (``--snmplog``) has this first process's counters only."""
    for warning in cfg.warnings:
        log.warning("%s", warning)
    if not os.environ.get(ENV_VAR):
        # A gevent program (a greenlet per connection): its sessions run on its own hub,
        # with no thread to cross (kcpgo.runtime.modes).
        set_runtime("hub")
    if cfg.role == "server" and cfg.workers > 1:
        from .tunnel_workers import run_workers
        return run_workers(cfg)
    return run_process(cfg, TunnelClient(cfg) if cfg.role == "client" else TunnelServer(cfg))


def run_process(cfg: TunnelConfig, tunnel: Any, reserve: Any = None, worker: int = 0,
         pool: Optional[WorkerPool] = None) -> int:
    """One tunnel process (:func:`run`): ``worker`` > 0 is a ``--workers`` process, which
    neither announces itself nor writes the SNMP log; ``pool``: the workers to stop at the
    end."""
    try:
        address = tunnel.start()
    except (OSError, ValueError) as e:
        where = cfg.localaddr if cfg.role == "client" else cfg.listen
        log.error("cannot listen on %s: %s", where, e)
        if pool is not None:
            pool.stop()
        return 1
    finally:
        if reserve is not None:
            reserve.close()
    ready()                                 # (a --workers process: tell the first one)
    if not worker:
        for line in startup_lines(cfg, address):
            log.info("%s", line)
        print(f"LISTENING {address}", flush=True)
    if cfg.role == "server" and cfg.workers > 1:
        tag_log_lines(f"worker {worker}: ")      # which process served a client
    stop = gevent.event.Event()
    interrupted: List[bool] = []

    def on_sigint() -> None:
        interrupted.append(True)
        stop.set()
    handlers = [gevent.signal_handler(signal.SIGTERM, stop.set)]
    if worker:
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # the first process stops the workers
    else:
        handlers.append(gevent.signal_handler(signal.SIGINT, on_sigint))
    if hasattr(signal, "SIGUSR1"):
        handlers.append(gevent.signal_handler(
            signal.SIGUSR1, lambda: log.info("snmp: %s", DEFAULT_SNMP.snapshot())))
    if cfg.snmplog and cfg.snmpperiod > 0 and not worker:
        gevent.spawn(_snmp_logger, cfg)
    if pool is not None:
        gevent.spawn(pool.watch, gevent.sleep, SESSION_CHECK)
    server = gevent.spawn(tunnel.serve)
    server.link(lambda _: stop.set())
    try:
        stop.wait()
    finally:
        for h in handlers:
            h.cancel()
        tunnel.close()
        _linger(tunnel)
        if pool is not None:
            pool.stop(gevent.sleep)
    if server.dead and server.exception is not None:
        log.error("%s stopped: %r", cfg.role, server.exception)
        return 1
    log.info("%s stopped", f"{cfg.role} worker {worker}" if worker else cfg.role)
    return 130 if interrupted else 0


def main(argv: Sequence[str]) -> int:
    """``tunnel client|server [flags]``; returns the exit status (2 for a usage or config
    error, 1 if it cannot listen or fails, 0 after SIGTERM, 130 after SIGINT)."""
    if not argv or argv[0] not in ROLES:
        usage = ("usage: python -m kcpgo tunnel {client,server} [flags]  (--help for each)\n\n"
                 "A kcptun-compatible TCP tunnel with kcptun's flags, defaults and -c JSON:\n"
                 "  client  accepts TCP on --localaddr, carries each connection as an smux\n"
                 "          stream over KCP to --remoteaddr (a kcptun or kcpgo server)\n"
                 "  server  listens on UDP --listen, connects each stream to TCP --target\n"
                 "e.g. python -m kcpgo tunnel server -l :4000 -t 127.0.0.1:8000 --key secret")
        if argv and argv[0] in ("-h", "--help", "help"):
            print(usage)
            return 0
        print(usage, file=sys.stderr)
        return 2
    prog = f"python -m kcpgo tunnel {argv[0]}"
    try:
        cfg = parse(argv[0], list(argv[1:]), prog=prog)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:               # -c: unreadable file, bad JSON
        print(f"{prog}: -c: {e}", file=sys.stderr)
        return 2
    try:
        setup_logging(cfg)
    except OSError as e:
        print(f"{prog}: --log {cfg.log}: {e}", file=sys.stderr)
        return 2
    return run(cfg)
