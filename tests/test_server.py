"""kcpgo.server: socketserver semantics over KCP, in this (unpatched) process.

Handlers and clients here are plain socketserver / socket-style code; the server runs in a
greenlet of the test's thread unless a test is about threads.
"""
from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading

import gevent
import pytest
from gevent.event import Event

import kcpgo
from kcpgo.server import KCPServer, ThreadingKCPServer

LOCAL = ("127.0.0.1", 0)
FAST = dict(mode="fast3")


class LineEcho(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            if line.strip() == b"QUIT":
                self.wfile.write(b"BYE\n")
                return
            self.wfile.write(line.upper())


class Reverse(socketserver.BaseRequestHandler):
    def handle(self):
        data = self.request.recv(1024)
        self.request.sendall(data[::-1])


def connect(server, **opts):
    return kcpgo.dial(server.server_address, stream=True, timeout=10, **FAST, **opts)


def talk(sock, *lines):
    f = sock.makefile("rwb")
    out = []
    for line in lines:
        f.write(line + b"\n")
        f.flush()
        out.append(f.readline().rstrip(b"\n"))
    f.close()
    return out


@pytest.fixture
def serving():
    """Start ``cls(LOCAL, handler, **opts).serve_forever`` in a greenlet; stop it afterwards."""
    started = []

    def start(cls, handler, **opts):
        server = cls(LOCAL, handler, **FAST, **opts)
        g = gevent.spawn(server.serve_forever, 0.05)
        started.append((server, g))
        return server
    yield start
    for server, g in started:
        server.shutdown()
        server.server_close()
        g.join(10)
        assert g.dead


# ---------------------------------------------------------------- handlers and requests


def test_stream_request_handler_line_echo(serving):
    server = serving(KCPServer, LineEcho, idle_timeout=5)
    c = connect(server)
    assert talk(c, b"hello", b"kcp", b"QUIT") == [b"HELLO", b"KCP", b"BYE"]
    c.close()
    assert server.server_address[1] != 0 and isinstance(server.fileno(), int)


def test_base_request_handler_with_handle_request():
    with KCPServer(LOCAL, Reverse, **FAST) as server:
        c = connect(server)
        c.sendall(b"abcdef")
        server.handle_request()               # one request, handled in this greenlet
        assert c.recv(100) == b"fedcba"
        c.close()


def test_handle_request_timeout_calls_handle_timeout():
    calls = []

    class Server(KCPServer):
        timeout = 0.1

        def handle_timeout(self):
            calls.append(True)
    with Server(LOCAL, Reverse, **FAST) as server:
        server.handle_request()
        assert calls == [True]


def test_final_reply_is_delivered_before_close(serving):
    """shutdown_request drains: what the handler wrote arrives, as after a TCP close."""
    payload = os.urandom(300_000)

    class Blob(socketserver.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            self.wfile.write(payload)
    server = serving(KCPServer, Blob, window=(32, 32))
    c = connect(server, window=(32, 32))
    c.sendall(b"send\n")
    got = bytearray()
    while len(got) < len(payload):
        got += c.recv(65536)
    assert bytes(got) == payload
    c.close()


def test_tcp_only_socket_options_accepted(serving):
    class NoDelay(LineEcho):
        disable_nagle_algorithm = True          # setsockopt(IPPROTO_TCP, TCP_NODELAY, True)
    server = serving(KCPServer, NoDelay)
    c = connect(server)
    assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert talk(c, b"x", b"QUIT") == [b"X", b"BYE"]
    with pytest.raises(OSError):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 1)
    c.close()


# ---------------------------------------------------------------- concurrency, disconnects


def test_threading_server_serves_clients_concurrently(serving):
    server = serving(ThreadingKCPServer, LineEcho)
    idle = connect(server)
    assert talk(idle, b"first") == [b"FIRST"]       # its handler now waits in readline
    other = connect(server)
    assert talk(other, b"second", b"QUIT") == [b"SECOND", b"BYE"]
    assert talk(idle, b"still", b"QUIT") == [b"STILL", b"BYE"]
    idle.close()
    other.close()


def test_plain_server_handles_one_request_at_a_time(serving):
    server = serving(KCPServer, LineEcho)
    first = connect(server)
    assert talk(first, b"one") == [b"ONE"]
    second = connect(server)
    second.settimeout(0.3)
    with pytest.raises(TimeoutError):
        talk(second, b"two")                        # waits until the first request ends
    assert talk(first, b"QUIT") == [b"BYE"]
    second.settimeout(10)
    f = second.makefile("rb")
    assert f.readline() == b"TWO\n"
    assert talk(second, b"QUIT") == [b"BYE"]
    f.close()
    first.close()
    second.close()


def test_client_vanishing_mid_request_ends_quietly(serving, capsys, caplog):
    ended = Event()

    class Tracked(LineEcho):
        def finish(self):
            super().finish()
            ended.set()
    server = serving(ThreadingKCPServer, Tracked, idle_timeout=0.5)
    c = connect(server)
    c.sendall(b"half a li")                          # no newline, then gone: no FIN in KCP
    c.close()
    with caplog.at_level(logging.INFO, logger="kcpgo.server"):
        assert ended.wait(5)
        gevent.sleep(0.01)
    assert "idle_timeout" in caplog.text
    assert "Traceback" not in capsys.readouterr().err
    other = connect(server)                          # the server carries on
    assert talk(other, b"ok", b"QUIT") == [b"OK", b"BYE"]
    other.close()


def test_other_handler_errors_still_print(serving, capsys):
    class Broken(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.recv(10)
            raise ValueError("handler bug")
    server = serving(KCPServer, Broken)
    c = connect(server)
    c.sendall(b"x")
    for _ in range(100):
        if "handler bug" in capsys.readouterr().err:
            break
        gevent.sleep(0.02)
    else:
        pytest.fail("handle_error did not print the traceback")
    c.close()


# ---------------------------------------------------------------- shutdown and close


def test_shutdown_while_client_connected_then_close_waits_for_handler():
    server = ThreadingKCPServer(LOCAL, LineEcho, idle_timeout=0.5, **FAST)
    loop = gevent.spawn(server.serve_forever, 0.05)
    c = connect(server)
    assert talk(c, b"before") == [b"BEFORE"]
    server.shutdown()                                # stops accepting ...
    assert talk(c, b"after") == [b"AFTER"]           # ... the running handler goes on
    late = connect(server)
    late.settimeout(0.3)
    with pytest.raises(TimeoutError):
        talk(late, b"nobody accepts me")
    c.close()                                        # vanishes: ends by idle_timeout
    with gevent.Timeout(10):
        server.server_close()                        # block_on_close: waits for it
        loop.join()
    assert loop.dead and not server._kcpgo.handlers
    server.server_close()                            # idempotent
    late.close()


def test_shutdown_from_handler_does_not_deadlock():
    class Stopper(socketserver.BaseRequestHandler):
        def handle(self):
            self.server.shutdown()                   # socketserver would deadlock here
            self.request.sendall(b"stopping")
    with KCPServer(LOCAL, Stopper, **FAST) as server:
        loop = gevent.spawn(server.serve_forever, 0.05)
        c = connect(server)
        c.sendall(b"x")
        assert c.recv(100) == b"stopping"
        loop.join(10)
        assert loop.dead and loop.successful()
        c.close()


def test_serve_again_after_shutdown(serving):
    server = serving(KCPServer, LineEcho)
    c = connect(server)
    assert talk(c, b"one", b"QUIT") == [b"ONE", b"BYE"]
    server.shutdown()
    g = gevent.spawn(server.serve_forever, 0.05)     # a new listener on the same UDP port
    c2 = connect(server)
    assert talk(c2, b"two", b"QUIT") == [b"TWO", b"BYE"]
    server.shutdown()
    g.join(5)
    c.close()
    c2.close()


def test_server_close_releases_the_port():
    server = KCPServer(LOCAL, LineEcho, **FAST)
    waiting = gevent.spawn(server.handle_request)    # waits in another greenlet
    gevent.sleep(0.05)
    addr = server.server_address
    server.server_close()
    waiting.join(5)
    assert isinstance(waiting.exception, OSError)    # woken, not left on closed descriptors
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(addr)                                 # the port is free again


# ---------------------------------------------------------------- threads (model c)


def test_any_thread_may_serve_on_the_io_thread():
    """On the I/O thread (kcpgo.runtime.modes "thread": this unpatched test process) a server
    is a plain socketserver: its listener starts in the constructor and any thread may serve,
    one after another (in hub mode only the thread whose hub runs the listener may)."""
    server = KCPServer(LOCAL, Reverse, **FAST)
    assert server._kcpgo.listener is not None          # fileno() is its readiness at once

    def other():
        server.timeout = 0.01
        server.handle_request()                    # times out: handle_timeout, no error
    t = threading.Thread(target=other, daemon=True)
    t.start()
    t.join(10)
    c = connect(server)
    c.sendall(b"abc")
    server.timeout = None
    server.handle_request()                        # the main thread serves the same listener
    assert c.recv(10) == b"cba"
    c.close()
    server.server_close()


# ---------------------------------------------------------------- construction


def test_options_are_checked_at_construction():
    with pytest.raises(TypeError, match="bogus"):
        KCPServer(LOCAL, LineEcho, bogus=1)
    with pytest.raises(ValueError, match="mode"):
        KCPServer(LOCAL, LineEcho, mode="warp")
    with pytest.raises(ValueError, match="needs a key"):
        KCPServer(LOCAL, LineEcho, crypt="aes")
    with pytest.raises(ValueError, match="idle_timeout"):
        KCPServer(LOCAL, LineEcho, idle_timeout=0)
    with KCPServer(LOCAL, LineEcho) as a:
        with pytest.raises(OSError):
            KCPServer(a.server_address, LineEcho)          # port in use, raised here


def test_forking_mixin_is_refused():
    with pytest.raises(TypeError, match="ThreadingKCPServer"):
        class Forking(socketserver.ForkingMixIn, KCPServer):
            pass


def test_hand_made_threading_mixin_gets_greenlet_handlers(serving):
    class Mine(socketserver.ThreadingMixIn, KCPServer):
        pass
    server = serving(Mine, LineEcho)
    a, b = connect(server), connect(server)
    assert talk(a, b"a") == [b"A"]
    assert talk(b, b"b", b"QUIT") == [b"B", b"BYE"]      # concurrent with a's handler
    assert talk(a, b"QUIT") == [b"BYE"]
    a.close()
    b.close()


def test_encrypted_fec_server_with_passphrase(serving):
    opts = dict(crypt="aes", key="secret", data_shards=10, parity_shards=3)
    server = serving(ThreadingKCPServer, LineEcho, **opts)
    c = connect(server, **opts)
    assert talk(c, b"sealed", b"QUIT") == [b"SEALED", b"BYE"]
    c.close()


# ---------------------------------------------------------------- the same, under patch_all()

PATCHED = '''
from gevent import monkey
monkey.patch_all()
import json, socketserver, threading, time
import kcpgo
from kcpgo.server import KCPServer, ThreadingKCPServer

class Reverse(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(self.request.recv(100)[::-1])

class Stopper(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.shutdown()
        self.request.sendall(b"stopping")

res = {}
timeouts = []
class Timed(KCPServer):
    timeout = 0.1
    def handle_timeout(self):
        timeouts.append(1)
with Timed(("127.0.0.1", 0), Reverse, mode="fast3") as server:
    server.handle_request()                       # nobody: handle_timeout
    c = kcpgo.dial(server.server_address, mode="fast3", timeout=5)
    c.sendall(b"abc")
    server.handle_request()
    res["handle_request"] = [len(timeouts), c.recv(10).decode()]
    c.close()
for cls in (KCPServer, ThreadingKCPServer):
    with cls(("127.0.0.1", 0), Stopper, mode="fast3") as server:
        t = threading.Thread(target=server.serve_forever, args=(0.05,))
        t.start()
        c = kcpgo.dial(server.server_address, mode="fast3", timeout=5)
        c.sendall(b"x")
        reply = c.recv(100).decode()
        t.join(5)
        res[cls.__name__] = [reply, not t.is_alive()]
        c.close()
print(json.dumps(res))
'''


def test_server_semantics_under_gevent_patch_all():
    import json
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", PATCHED], capture_output=True, text=True,
                          timeout=40, env=dict(os.environ, PYTHONPATH=root))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert json.loads(proc.stdout) == {"handle_request": [1, "cba"],
                                       "KCPServer": ["stopping", True],
                                       "ThreadingKCPServer": ["stopping", True]}


def test_an_empty_host_binds_ipv4_as_tcpserver_does():
    """socketserver.TCPServer(("", port)) has address_family AF_INET: server_address is
    ("0.0.0.0", port) and every client_address a (host, port) pair (measured with the stdlib
    here). KCPServer bound "" dual-stack, and legacy ``host, port = self.client_address``
    raised "too many values to unpack" (a new user's port under kcpgo.monkey servers=)."""
    import socketserver as ss
    with ss.TCPServer(("", 0), Reverse) as tcp:
        assert tcp.server_address[0] == "0.0.0.0" and len(tcp.server_address) == 2
    seen = []

    class Peer(ss.BaseRequestHandler):
        def handle(self):
            host, port = self.client_address
            seen.append((host, port))
    with KCPServer(("", 0), Peer, **FAST) as server:
        assert server.server_address[0] == "0.0.0.0" and len(server.server_address) == 2
        c = kcpgo.dial(("127.0.0.1", server.server_address[1]), **FAST)
        c.sendall(b"x")
        server.timeout = 5
        server.handle_request()
        c.close()
    assert seen and seen[0][0] == "127.0.0.1"


def test_a_client_dead_mid_reply_ends_its_request_quietly(caplog, capsys):
    """A KCP client that exits while the handler's reply is unacknowledged sends no FIN:
    the handler's next call fails with ConnectionResetError at the dead-link limit. Like an
    idle timeout, that is how a KCP client's exit shows, so the server logs it at INFO
    instead of printing socketserver's traceback (which a 1,000-session load test's
    handlers spilled into later tests' output)."""
    import time

    class EchoForever(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.set_dead_link(3)
            while True:
                self.request.sendall(self.request.recv(65536) * 100)
    caplog.set_level(logging.INFO, logger="kcpgo.server")
    with KCPServer(LOCAL, EchoForever, mode="fast3", idle_timeout=30) as server:
        c = kcpgo.dial(server.server_address, mode="fast3")
        c.sendall(b"x" * 1000)
        threading.Thread(target=lambda: (time.sleep(0.2), c.close())).start()
        server.timeout = 5
        server.handle_request()         # ends when the dead link fires
    assert any("stopped acknowledging" in r.getMessage() for r in caplog.records)
    assert "Traceback" not in capsys.readouterr().err
