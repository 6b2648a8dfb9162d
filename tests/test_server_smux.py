"""kcpgo.server over smux streams (``KCPServer(..., smux=...)``), in each concurrency model.

Each stream is a request (docs/kcptun.md §5.4) with TCP's end-of-stream rules
(docs/kcptun.md §4.5): an unmodified ``StreamRequestHandler`` that reads to EOF ends when its
client half-closes or closes the stream, and ``server_close()`` returns once the clients have
closed their streams (a KCP session handler would wait for ``idle_timeout``).

(a) gevent.monkey.patch_all() (threads are greenlets), (b) unpatched, one thread and greenlets,
(c) unpatched, real OS threads: each model runs in its own process (monkey-patching and a clean
main thread), bounded by a timeout. The finer points run in this process, model (b).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import socketserver
import subprocess
import sys
import textwrap

import gevent
import pytest

import kcpgo
from kcpgo.facade.smux import SmuxConfig
from kcpgo.server import KCPServer, ThreadingKCPServer
from kcpgo.testing import Impairment, Relay

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")

#: Every framing kcptun speaks (docs/kcptun.md §5.5: --smuxver 1|2, --nocomp), as
#: (smux_version, compression).
FRAMINGS = [(1, False), (1, True), (2, False), (2, True)]

#: The scenario: one server per framing plus one that auto-detects, an unmodified handler that
#: reads to EOF, one smux client session per framing (and per server) with several concurrent
#: streams that half-close and read the reply (HTTP/1.0 style), one stream closed without
#: reading, then shutdown() and server_close() while the client sessions are still open.
#: argv: model. Prints one JSON line.
SCENARIO = textwrap.dedent('''
    import sys
    MODEL = sys.argv[1]
    if MODEL == "a":
        from gevent import monkey
        monkey.patch_all()
    import hashlib
    import json
    import socket
    import socketserver
    import threading
    import time

    import gevent
    import kcpgo
    from kcpgo.server import ThreadingKCPServer

    FRAMINGS = [(1, False), (1, True), (2, False), (2, True)]
    SIZES = [0, 1, 5000, 300000]          # 300000 > smux v2's initial window (262144)

    class ReadToEOF(socketserver.StreamRequestHandler):   # nothing here knows about smux
        def handle(self):
            body = self.rfile.read()                       # until the client's FIN
            seen.append([self.client_address[1], self.request.sid,
                         self.request.session.framing])
            self.wfile.write(b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode()))

    seen = []
    finished = []
    if MODEL == "b":
        def start(fn, *args):
            return gevent.spawn(fn, *args)
    else:
        def start(fn, *args):
            t = threading.Thread(target=fn, args=args, daemon=True)
            t.start()
            return t

    def request(session, body):
        s = session.open_stream()
        s.sendall(body)
        s.shutdown(socket.SHUT_WR)        # HTTP/1.0 style: half-close, then read the reply
        reply = s.makefile("rb").read()   # until the server's FIN
        s.close()
        return reply.decode()

    def client(addr, version, comp, out):
        # runs in its own thread (a: a greenlet, c: an OS thread) or greenlet (b): the
        # session belongs to it, its streams run concurrently as greenlets of its hub
        session = kcpgo.dial_smux(addr, mode="fast3", smux_version=version,
                                  compression=comp, timeout=10)
        gs = [gevent.spawn(request, session, bytes([65 + i]) * n)
              for i, n in enumerate(SIZES)]
        gevent.joinall(gs, raise_error=True)
        s = session.open_stream()         # a client that closes without reading the reply
        s.sendall(b"bye")
        s.close()
        out.update(replies=[g.value for g in gs], conv=session.conv,
                   port=session.getsockname()[1], streams=session.streams)
        while not finished:               # keep the session (and this hub: ACKs) running
            gevent.sleep(0.02)
        session.close()

    servers = [ThreadingKCPServer(("127.0.0.1", 0), ReadToEOF, mode="fast3",
                                  idle_timeout=30,
                                  smux=dict(smux_version=v, compression=c))
               for v, c in FRAMINGS]
    auto = ThreadingKCPServer(("127.0.0.1", 0), ReadToEOF, mode="fast3", idle_timeout=30,
                              smux=dict(smux_version=None, compression=None))
    loops = [start(srv.serve_forever, 0.05) for srv in servers + [auto]]
    outs = [{} for _ in range(2 * len(FRAMINGS))]
    clients = [start(client, srv.server_address, v, c, outs[i])
               for i, (srv, (v, c)) in enumerate(zip(servers, FRAMINGS))]
    clients += [start(client, auto.server_address, v, c, outs[4 + i])
                for i, (v, c) in enumerate(FRAMINGS)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (all("replies" in o for o in outs)
                                               and len(seen) == 5 * len(outs)):
        gevent.sleep(0.02)                # the "bye" streams' handlers end at their EOF too
    closes = []
    for srv in servers + [auto]:
        t0 = time.monotonic()
        srv.shutdown()
        srv.server_close()                # the client sessions are still open here
        closes.append(time.monotonic() - t0)
    finished.append(True)
    for t in loops + clients:
        t.join(10)
    print(json.dumps({"outs": outs, "seen": seen, "close_s": closes}))
''')


def run_python(code: str, *args: str, timeout: float = 60) -> str:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr    # e.g. a handler's unexpected error
    return proc.stdout


def expected_reply(body: bytes) -> str:
    return f"{len(body)} {hashlib.sha256(body).hexdigest()}"


def kcptun_flags(version: int, compression: bool) -> str:
    """``SmuxSession.framing``: kcptun's flags for the framing (docs/kcptun.md §5.5)."""
    return f"--smuxver {version}" + ("" if compression else " --nocomp")


@pytest.mark.parametrize("model", ["a", "b", "c"])
def test_stream_requests_in_each_concurrency_model(model):
    """SCENARIO above: v1/v2 x snappy on/off, fixed and auto-detected, concurrent streams
    over one session per client, read to EOF both ways, server_close() with sessions open."""
    out = json.loads(run_python(SCENARIO, model))
    sizes = [0, 1, 5000, 300000]
    want = [expected_reply(bytes([65 + i]) * n) for i, n in enumerate(sizes)]
    for i, o in enumerate(out["outs"]):
        # the handler read to EOF (the client's FIN, kcptun.md §4.5) and its reply ended at
        # the server's FIN: what socketserver's shutdown_request gives a TCP client
        assert o["replies"] == want, (i, o)
        assert o["streams"] == 0                      # every client stream was closed
    # Handlers saw every stream (4 half-closed + 1 closed, per session), with the client's
    # stream ids 3, 5, 7, ... (kcptun.md §4.4) and client_address = the session's UDP peer.
    ports = {o["port"]: v for o, v in zip(out["outs"], FRAMINGS * 2)}
    assert len(ports) == 8
    by_port: dict = {}
    for port, sid, framing in out["seen"]:
        by_port.setdefault(port, []).append((sid, framing))
    assert sorted(by_port) == sorted(ports)
    for port, items in by_port.items():
        version, comp = ports[port]
        assert sorted(sid for sid, _ in items) == [3, 5, 7, 9, 11]
        # fixed servers and the auto-detecting one (kcptun.md §3.3) speak the client's framing
        assert {f for _, f in items} == {kcptun_flags(version, comp)}
    # server_close() returned although every client session was still open: all streams were
    # closed, so no handler was left waiting (a KCP session handler would have waited for its
    # idle_timeout, 30 s here; the bound only separates "did not wait" from "waited")
    assert all(t < 10 for t in out["close_s"]), out["close_s"]


#: A reply still in flight when its handler returns and server_close() is called at once: the
#: client's receive buffers (a 64 KiB smux bucket, a 32-segment KCP window: about 107 kB) hold
#: only part of it, the rest waits in the server's session (its KCP window is closed), and the
#: client starts reading only while server_close() runs. argv: model. Prints the bytes the
#: client read, or what ended its read.
BIG_REPLY = textwrap.dedent('''
    import sys
    MODEL = sys.argv[1]
    if MODEL == "a":
        from gevent import monkey
        monkey.patch_all()
    import socket
    import socketserver
    import threading

    import gevent
    import kcpgo
    from kcpgo.server import ThreadingKCPServer

    SIZE = 150000       # < 173 kB: what client and server buffers hold together
    handled = []

    class Big(socketserver.StreamRequestHandler):
        def handle(self):
            self.rfile.read()
            self.wfile.write(b"z" * SIZE)          # returns once smux/KCP queued it all
            handled.append(True)

    server = ThreadingKCPServer(("127.0.0.1", 0), Big, mode="fast3", window=(32, 32),
                                smux=True)
    if MODEL == "b":
        loop = gevent.spawn(server.serve_forever, 0.05)
    else:       # (c): a thread that ends when serve_forever returns (its hub with it)
        loop = threading.Thread(target=server.serve_forever, args=(0.05,))
        loop.start()
    session = kcpgo.dial_smux(server.server_address, mode="fast3", window=(32, 32),
                              max_receive_buffer=65536, timeout=5)
    s = session.open_stream()
    s.sendall(b"go")
    s.shutdown(socket.SHUT_WR)

    def wait_handled():
        for _ in range(5000):
            if handled:
                return
            gevent.sleep(0.001)
        print("the handler never finished")

    def late_reader():
        wait_handled()
        gevent.sleep(0.3)                          # server_close() has begun meanwhile
        got = 0
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    return str(got)
                got += len(data)
        except OSError as e:
            return f"{got} then {type(e).__name__}"
    reader = gevent.spawn(late_reader)
    wait_handled()
    server.shutdown()
    server.server_close()
    print(reader.get(timeout=30))
    loop.join()
    s.close()
    session.close()
''')


@pytest.mark.parametrize("model", ["a", "b", "c"])
def test_server_close_lets_the_last_reply_arrive(model):
    """A TCP server's close does not lose a reply already written (the stack keeps
    delivering it), and neither does server_close(): the client reads the whole reply and
    then EOF (the FIN, docs/kcptun.md §4.5), also when the serving thread ends right after
    (c), taking its hub, and so the closed sessions' background sending, with it."""
    assert run_python(BIG_REPLY, model).split() == ["150000"]


# ---------------------------------------------------------------- model (b), in this process


class ReadToEOF(socketserver.StreamRequestHandler):
    """An unmodified stdlib handler: read everything, answer, done."""

    def handle(self):
        body = self.rfile.read()
        self.server.log.append(("handled", self.client_address, len(body)))
        self.wfile.write(expected_reply(body).encode())


def serve(server):
    server.log = []
    return gevent.spawn(server.serve_forever, 0.05)


def half_close_request(session, body: bytes) -> str:
    s = session.open_stream()
    s.sendall(body)
    s.shutdown(socket.SHUT_WR)
    chunks = []
    while True:
        data = s.recv(65536)
        if not data:                      # EOF: the server's FIN after shutdown_request
            break
        chunks.append(data)
    s.close()
    return b"".join(chunks).decode()


def test_smux_true_means_dial_smux_defaults():
    """``smux=True`` is ``dict(smux_version=1, compression=False)`` (issue 11 item 4; the
    defaults of ``kcpgo.dial_smux``): a default dial_smux client is served."""
    with ThreadingKCPServer(("127.0.0.1", 0), ReadToEOF, smux=True) as server:
        assert (server._kcpgo.options.smux.smux_version,
                server._kcpgo.options.smux.compression) == (1, False)
        loop = serve(server)
        with kcpgo.dial_smux(server.server_address, timeout=10) as session:
            assert half_close_request(session, b"hello") == expected_reply(b"hello")
            assert session.framing == kcptun_flags(1, False)
            # client_address is the session's UDP peer, as for KCP sessions
            assert server.log == [("handled", ("127.0.0.1", session.getsockname()[1]), 5)]
            server.shutdown()
            server.server_close()
        loop.join(5)


def test_server_close_waits_for_an_open_stream_until_the_client_closes_it():
    """``block_on_close`` (socketserver docs: server_close waits for the handler threads):
    a handler blocked on a stream ends at the client's FIN, and server_close returns then;
    smux keepalive and idle_timeout are long (30 s, 60 s), so nothing else ended it."""
    events = []

    class Logged(ReadToEOF):
        def finish(self):
            super().finish()
            events.append("handler finished")

    server = ThreadingKCPServer(("127.0.0.1", 0), Logged, mode="fast3",
                                smux=dict(keepalive=10))
    loop = serve(server)
    session = kcpgo.dial_smux(server.server_address, mode="fast3", timeout=10)
    s = session.open_stream()
    s.sendall(b"still talking")

    def client_closes_later():
        gevent.sleep(0.3)
        events.append("client closed")
        s.close()                        # FIN: the handler's rfile.read() returns
    g = gevent.spawn(client_closes_later)
    gevent.sleep(0.1)
    server.shutdown()
    server.server_close()
    events.append("server_close returned")
    g.join(5)
    loop.join(5)
    assert events == ["client closed", "handler finished", "server_close returned"]
    assert server.log[0][2] == len(b"still talking")
    session.close()


def test_non_threading_server_and_handle_request():
    """KCPServer (no ThreadingMixIn) handles one stream per handle_request(); with nothing to
    accept, handle_request() calls handle_timeout() after ``timeout`` (socketserver docs)."""
    timeouts = []

    class Server(KCPServer):
        timeout = 0.2

        def handle_timeout(self):
            timeouts.append(True)

    with Server(("127.0.0.1", 0), ReadToEOF, mode="fast3", smux=True) as server:
        server.log = []
        session = kcpgo.dial_smux(server.server_address, mode="fast3", timeout=10)
        replies = []
        clients = [gevent.spawn(lambda i=i: replies.append(
            half_close_request(session, b"%d" % i))) for i in range(3)]
        for _ in range(3):
            server.handle_request()
        gevent.joinall(clients, timeout=10)
        assert sorted(replies) == sorted(expected_reply(b"%d" % i) for i in range(3))
        server.handle_request()                 # nothing waits: handle_timeout
        assert timeouts == [True]
        session.close()


def test_dead_client_session_ends_its_request_quietly(caplog, capsys):
    """A client that vanishes sends nothing more (the path is cut, then its session closed:
    the FINs of D61 are lost too); the handler's read fails with ConnectionResetError at the
    keepalive timeout (kcptun.md §4.6), which the server logs at INFO, like an idle timeout,
    instead of printing a traceback."""
    caplog.set_level(logging.INFO, logger="kcpgo.server")
    server = ThreadingKCPServer(("127.0.0.1", 0), ReadToEOF, mode="fast3",
                                smux=dict(keepalive=0.25, keepalive_timeout=1))
    loop = serve(server)
    relay = Relay(server.server_address).start()
    session = kcpgo.dial_smux(relay.address, mode="fast3", keepalive=0.25,
                              keepalive_timeout=1)
    s = session.open_stream()
    s.sendall(b"half a reque")
    gevent.sleep(0.2)
    relay.set_impairment(up=Impairment(loss=1.0), down=Impairment(loss=1.0))
    session.close()                              # vanish: no FIN arrives, no more NOPs
    relay.close()
    server.shutdown()
    server.server_close()                        # waits for the handler: it ends
    loop.join(5)
    assert server.log == []                      # handle() never got its EOF
    assert any("smux session" in r.getMessage() and r.levelno == logging.INFO
               for r in caplog.records if r.name == "kcpgo.server"), caplog.records
    assert "Traceback" not in capsys.readouterr().err


def test_smux_option_is_checked_in_the_constructor():
    """Bad smux settings raise in the constructor (SmuxConfig's TypeError/ValueError)."""
    addr = ("127.0.0.1", 0)
    with pytest.raises(TypeError, match="smux"):
        KCPServer(addr, ReadToEOF, smux="yes")
    with pytest.raises(ValueError, match="smux_version"):
        KCPServer(addr, ReadToEOF, smux=dict(smux_version=3))
    with pytest.raises(TypeError, match="bogus"):
        KCPServer(addr, ReadToEOF, smux=dict(bogus=1))
    with pytest.raises(ValueError, match="stream"):
        KCPServer(addr, ReadToEOF, smux=True, stream=False)
    with KCPServer(addr, ReadToEOF, smux=SmuxConfig(smux_version=2)) as server:
        assert server._kcpgo.options.smux.smux_version == 2
    with KCPServer(addr, ReadToEOF, smux=False) as server:      # a plain KCP server
        assert server._kcpgo.options.smux is None


def test_a_stream_request_is_a_socket_like_stream():
    """``self.request`` is a kcpgo.Stream: getpeername() is the client's UDP address (as for
    KCP sessions) and a wfile write after the client's FIN still reaches it (the client only
    half-closed: the socket docs' shutdown(SHUT_WR))."""
    got = {}

    class Inspect(socketserver.StreamRequestHandler):
        def handle(self):
            got["type"] = type(self.request).__name__
            got["peer"] = self.request.getpeername()
            got["eof"] = self.rfile.read()
            self.wfile.write(b"late reply")

    with ThreadingKCPServer(("127.0.0.1", 0), Inspect, mode="fast3", smux=True) as server:
        loop = gevent.spawn(server.serve_forever, 0.05)
        with kcpgo.dial_smux(server.server_address, mode="fast3", timeout=10) as session:
            assert half_close_request(session, b"q") == "late reply"
            assert got == {"type": "Stream", "eof": b"q",
                           "peer": ("127.0.0.1", session.getsockname()[1])}
            server.shutdown()
        loop.join(5)

