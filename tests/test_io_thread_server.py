"""Issue 12, Deliver 4: socketserver in unpatched programs.

An unpatched ``ThreadingKCPServer`` (and a stdlib ``socketserver.ThreadingTCPServer``
subclass switched to KCP by ``kcpgo.monkey``'s ``servers=``) runs each handler in a real
thread, so a handler that blocks its thread (``time.sleep``, a blocking ``subprocess.run``)
does not stall the other clients; ``serve_forever`` in a thread, ``shutdown()`` and
``server_close()`` keep socketserver's documented behaviour.

Each scenario runs in a fresh, unpatched interpreter (the runtime is chosen per process)
importing the same kcpgo as this test, killed after a timeout so that a hang fails instead of
stalling the suite. The clients are threads of the same child: each is its own session, and
the server's handlers are what is measured. Selection and session tests are in
tests/test_io_thread.py.
"""
from __future__ import annotations

import textwrap

import pytest

from tests.support.children import run_child


#: ``argv[1]``: how the handler blocks (``sleep``: ``time.sleep(1)``; ``subprocess``:
#: ``subprocess.run(["sleep", "1"])``); ``argv[2]``: the server (``kcpserver``: a
#: ``ThreadingKCPServer``, clients ``kcpgo.dial``; ``monkey``: a ``ThreadingTCPServer``
#: subclass and ``socket.create_connection`` clients, both switched by ``kcpgo.monkey``).
#: Four client threads send one line each at the same moment (a barrier) and read the reply.
BLOCKING_HANDLERS = textwrap.dedent('''
    import json
    import socket
    import socketserver
    import subprocess
    import sys
    import threading
    import time

    import kcpgo

    BLOCK, FLAVOUR = sys.argv[1], sys.argv[2]
    CLIENTS = 4
    handler_threads = set()


    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            handler_threads.add(threading.get_ident())
            line = self.rfile.readline()
            if BLOCK == "sleep":
                time.sleep(1)
            else:
                subprocess.run(["sleep", "1"], check=True)
            self.wfile.write(line.upper())


    if FLAVOUR == "kcpserver":
        from kcpgo.server import ThreadingKCPServer
        server = ThreadingKCPServer(("127.0.0.1", 0), Handler, mode="fast3")

        def connect(addr):
            return kcpgo.dial(addr, mode="fast3", stream=True, timeout=10)
    else:
        import kcpgo.monkey
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
        kcpgo.monkey.patch(servers={port: dict(mode="fast3")},
                           clients={("127.0.0.1", port): dict(mode="fast3")})

        class Server(socketserver.ThreadingTCPServer):
            pass

        server = Server(("127.0.0.1", port), Handler)

        def connect(addr):
            return socket.create_connection(addr, timeout=10)

    addr = server.server_address[:2]
    loop = threading.Thread(target=server.serve_forever, name="serve_forever")
    loop.start()
    barrier = threading.Barrier(CLIENTS)
    sent, replies, types, errors = {}, {}, set(), {}


    def client(i):
        try:
            with connect(addr) as s:
                types.add(type(s).__name__)
                barrier.wait(10)
                sent[i] = time.monotonic()
                s.sendall(b"hello %d\\n" % i)
                with s.makefile("rb") as f:
                    replies[i] = (f.readline().decode(), time.monotonic())
        except BaseException as e:
            errors[i] = f"{type(e).__name__}: {e}"


    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    served_in = (max(r[1] for r in replies.values()) - min(sent.values())
                 if len(replies) == CLIENTS else None)
    t0 = time.monotonic()
    server.shutdown()
    shutdown_s = time.monotonic() - t0
    t0 = time.monotonic()
    server.server_close()
    close_s = time.monotonic() - t0
    loop.join(5)
    if FLAVOUR == "monkey":
        kcpgo.monkey.unpatch()
    print(json.dumps({
        "replies": {str(i): r[0] for i, r in sorted(replies.items())}, "errors": errors,
        "served_in": served_in, "shutdown_s": shutdown_s, "close_s": close_s,
        "loop_alive": loop.is_alive(), "handler_threads": len(handler_threads),
        "client_types": sorted(types)}))
''')


_SLOW = pytest.mark.slow    # controls and repeats, kept out of the 6-minute default suite


@pytest.mark.parametrize("mode,block,flavour", [
    ("unpatched", "sleep", "kcpserver"), ("unpatched", "subprocess", "kcpserver"),
    ("unpatched", "sleep", "monkey"),
    pytest.param("unpatched", "subprocess", "monkey", marks=_SLOW),
    pytest.param("patched", "sleep", "kcpserver", marks=_SLOW),
    ("patched", "sleep", "monkey")])
def test_blocking_handlers_do_not_stall_other_clients(mode, block, flavour):
    """Four clients connect at once to an unpatched threading server whose handler blocks
    its thread for 1 s (``time.sleep(1)`` or ``subprocess.run(["sleep", "1"])``) before
    echoing the line upper-cased: every client gets its reply, and the last one comes less
    than 2 s after the first request (the handlers overlap: any two run one after the other
    would take >= 2 s, all four 4 s), from 4 distinct OS threads (``ThreadingMixIn`` runs a
    thread per request: socketserver docs; issue 12, Deliver 4 "uses real threads for
    handlers, so a handler may block anywhere"). Then ``shutdown()`` returns within 1 s
    (socketserver: the loop checks every ``poll_interval``, 0.5 s), ``server_close()``
    within 1 s (the handlers have finished) and the ``serve_forever`` thread has ended.
    ``monkey``: the stdlib ``ThreadingTCPServer`` subclass pattern, served over KCP by
    ``kcpgo.monkey.patch(servers=...)`` (README "Opt-in monkey-patching"), with
    ``socket.create_connection`` clients. Unpatched today the handlers are greenlets of the
    serving thread: each blocking call stops them all, so the four are served one after
    another. ``patched`` (``gevent.monkey.patch_all()`` first: threads and ``time.sleep`` are
    gevent's, model (a), unchanged by issue 12) passes today and shows the bounds are met
    when handlers overlap."""
    code = BLOCKING_HANDLERS
    if mode == "patched":
        code = "from gevent import monkey\nmonkey.patch_all()\n" + code
    out = run_child(code, block, flavour)
    assert out["errors"] == {}, out
    assert out["replies"] == {str(i): f"HELLO {i}\n" for i in range(4)}, out
    if flavour == "monkey":
        assert out["client_types"] == ["KCPSocket"], out
    assert out["served_in"] < 2.0, f"handlers did not overlap: {out}"
    assert out["handler_threads"] == 4, out
    assert out["shutdown_s"] < 1.0, out
    assert out["close_s"] < 1.0, out
    assert not out["loop_alive"], out
