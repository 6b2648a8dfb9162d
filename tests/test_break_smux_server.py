"""Breaking the smux server side: ``listen_smux`` and ``ThreadingKCPServer(smux=...)`` under many
concurrent streams and sessions, and ``kcpgo.monkey`` smux clients whose server goes away.

Reference behaviour: kcp-go's smux (docs/kcptun.md §4) never refuses a stream the peer opened;
when its accept backlog (1024) is full its receive loop stops reading (back-pressure), so every
SYN is eventually accepted. A TCP listener likewise queues SYNs (or lets the client retry), it
does not answer an accepted-looking connection with an immediate FIN.
"""
from __future__ import annotations

import hashlib
import os
import socket
import socketserver
import subprocess
import sys
import tempfile
import textwrap
import time

import gevent

import kcpgo
from kcpgo.server import ThreadingKCPServer
from tests.support.children import reap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")


class _Digest(socketserver.StreamRequestHandler):
    """Reads to the client's FIN, answers with the sha256 of what came."""

    def handle(self) -> None:
        body = self.rfile.read()
        self.wfile.write(hashlib.sha256(body).digest())


def _serve(**smux: object) -> ThreadingKCPServer:
    srv = ThreadingKCPServer(("127.0.0.1", 0), _Digest, mode="fast3",
                             smux=dict(smux_version=None, compression=None, **smux))
    gevent.spawn(srv.serve_forever)
    return srv


def _exchange_on(session: kcpgo.SmuxSession, streams: int, tag: int) -> list:
    """``streams`` concurrent requests on ``session``: each sends, half-closes and reads the
    digest; returns per stream True (right digest), False (EOF/wrong) or the exception."""
    results: list = [None] * streams

    def one(j: int) -> None:
        data = b"%d-%d;" % (tag, j) * 50
        try:
            with session.open_stream() as s:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                results[j] = s.makefile("rb").read() == hashlib.sha256(data).digest()
        except Exception as e:  # noqa: BLE001 - reported by the assertion
            results[j] = e
    gevent.joinall([gevent.spawn(one, j) for j in range(streams)], timeout=25)
    return results


def test_many_sessions_many_streams_all_answered() -> None:
    """40 KCP sessions x 10 concurrent streams each, one server: every request answered with
    the right digest, and shutdown + server_close return promptly afterwards."""
    srv = _serve()
    try:
        results: list = []

        def client(i: int) -> None:
            with kcpgo.dial_smux(srv.server_address, mode="fast3", timeout=15) as sess:
                results.extend(_exchange_on(sess, 10, i))
        gevent.joinall([gevent.spawn(client, i) for i in range(40)], timeout=25)
        assert results.count(True) == 400, [r for r in results if r is not True][:5]
    finally:
        t0 = time.monotonic()
        srv.shutdown()
        srv.server_close()
        assert time.monotonic() - t0 < 5


def test_socketserver_burst_of_streams_on_one_session_is_not_refused() -> None:
    """1500 concurrent streams on one session (a kcptun client under a burst of TCP
    connections): kcp-go's smux serves them all; kcpgo refuses about a third."""
    srv = _serve()
    try:
        with kcpgo.dial_smux(srv.server_address, mode="fast3", timeout=15) as sess:
            results = _exchange_on(sess, 1500, 0)
        assert results.count(True) == 1500, (results.count(True), results.count(False))
    finally:
        srv.shutdown()
        srv.server_close()


def test_listen_smux_accepts_a_burst_of_streams() -> None:
    ln = kcpgo.listen_smux(("127.0.0.1", 0), mode="fast3")
    accepted: list = []

    def acceptor() -> None:
        while True:
            stream, _ = ln.accept()
            accepted.append(stream)
    g = gevent.spawn(acceptor)
    try:
        with kcpgo.dial_smux(ln.getsockname(), mode="fast3", timeout=10) as sess:
            for _ in range(1500):
                sess.open_stream().sendall(b"x")
            deadline = time.monotonic() + 10
            while len(accepted) < 1500 and time.monotonic() < deadline:
                if accepted and accepted[0].session.refused:
                    break
                gevent.sleep(0.05)
            refused = accepted[0].session.refused if accepted else None
            assert (len(accepted), refused) == (1500, 0)
    finally:
        g.kill()
        for s in accepted:
            s.close()
        ln.close()


_MONKEY_SERVER = textwrap.dedent('''
    import socketserver, sys
    from kcpgo.server import ThreadingKCPServer
    class H(socketserver.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline().upper())
    s = ThreadingKCPServer(("127.0.0.1", int(sys.argv[1])), H, smux=True, mode="fast3")
    print("READY", flush=True)
    s.serve_forever()
''')


def test_monkey_smux_client_recovers_after_server_restart() -> None:
    """kcpgo.monkey smux client: the server process dies and comes back on the same port;
    create_connection works again within seconds (dead link -> a new KCP session), as
    kcptun's client re-dials (docs/kcptun.md §11 item 8)."""
    import kcpgo.monkey
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    def start() -> subprocess.Popen:
        # The port is free only by luck once its server died: any process's ephemeral UDP
        # bind may take it meanwhile (a clean-clone CI run: EADDRINUSE). Such a socket is
        # usually short-lived: try again for a few seconds.
        for _ in range(10):
            with tempfile.TemporaryFile() as log:   # (a pipe nobody reads could fill up)
                p = subprocess.Popen([sys.executable, "-c", _MONKEY_SERVER, str(port)],
                                     env=ENV, stdout=subprocess.PIPE, stderr=log)
                assert p.stdout is not None
                if p.stdout.readline().strip() == b"READY":
                    return p
                reap(p, kill=True)
                p.stdout.close()
                log.seek(0)
                err = log.read()
            assert b"Address already in use" in err, err[-2000:]
            time.sleep(0.5)
        raise AssertionError(f"port {port} stayed in use")

    def ask() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"hi\n")
            with s.makefile("rb") as f:
                return f.readline()

    kcpgo.monkey.patch(clients={("127.0.0.1", port): dict(smux=True, mode="fast3")})
    p = start()
    try:
        assert ask() == b"HI\n"
        reap(p, kill=True)
        t0 = time.monotonic()
        p = start()
        while True:
            try:
                if ask() == b"HI\n":
                    break
            except OSError:
                pass
            assert time.monotonic() - t0 < 20, "the smux client never recovered"
    finally:
        kcpgo.monkey.unpatch()
        reap(p, kill=True)
