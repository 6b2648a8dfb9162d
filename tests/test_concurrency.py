"""The same unmodified stdlib handler and client over KCP in each concurrency model.

(a) gevent.monkey.patch_all(): threads are greenlets;  (b) an unpatched single-threaded program
(greenlets only); (c) an unpatched program with real OS threads. (a) runs kcpgo in "hub" mode,
(b) and (c) on the I/O thread ("thread" mode, kcpgo.runtime.modes); "b-hub" and "c-hub" force
"hub" mode on (b) and (c) (KCPGO_RUNTIME=hub), the behaviour before the I/O thread. Each model
runs in its own process (monkey-patching, and a clean main thread), and every run is bounded by
a timeout: a hang fails the test instead of stalling the suite.

The scenario: concurrent clients, one client that vanishes mid-request (half a line, then
close: KCP sends no FIN), and one client still connected while the server shuts down.
"""
from __future__ import annotations

import json
import os
import socket
import socketserver
import subprocess
import sys
import textwrap
import threading

import pytest

import kcpgo
from kcpgo.server import ThreadingKCPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: An ordinary line service and its client: nothing here knows about KCP.
APP = textwrap.dedent('''
    import socket
    import socketserver


    class LineEcho(socketserver.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                if line.strip() == b"QUIT":
                    self.wfile.write(b"BYE\\n")
                    return
                self.wfile.write(line.upper())


    def line_client(address, lines):
        with socket.create_connection(address, timeout=10) as sock:
            f = sock.makefile("rwb")
            replies = []
            for line in lines + [b"QUIT"]:
                f.write(line + b"\\n")
                f.flush()
                replies.append(f.readline().rstrip(b"\\n"))
            return replies


    def vanishing_client(address):
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"half a li")
''')

#: Runs APP over KCP. argv: model, udp port. The client side is switched by kcpgo.monkey; the
#: server is kcpgo.server.ThreadingKCPServer. Prints one JSON line.
SCENARIO = textwrap.dedent('''
    import sys
    MODEL, PORT = sys.argv[1][0], int(sys.argv[2])
    if MODEL == "a":
        from gevent import monkey
        monkey.patch_all()
    import json
    import socket
    import threading
    import time

    import gevent
    import kcpgo.monkey
    from gevent.monkey import get_original
    from kcpgo.server import ThreadingKCPServer
    from app import LineEcho, line_client, vanishing_client

    kcpgo.monkey.patch(clients={PORT: dict(mode="fast3")})
    ADDR = ("127.0.0.1", PORT)
    threads_used = set()
    os_thread_id = get_original("threading", "get_ident")

    if MODEL == "b":
        def start(fn, *args):          # single OS thread: greenlets, no monkey-patching
            return gevent.spawn(fn, *args)
    else:
        def start(fn, *args):          # (a) greenlets in disguise, (c) real OS threads
            t = threading.Thread(target=fn, args=args, daemon=True)
            t.start()
            return t

    server = ThreadingKCPServer(ADDR, LineEcho, mode="fast3", idle_timeout=1.0)
    loop = start(server.serve_forever, 0.05)
    results = {}

    def many(i):
        threads_used.add(os_thread_id())
        results[i] = line_client(ADDR, [b"hello %d" % i, b"again %d" % i])

    clients = [start(many, i) for i in range(6)]
    start(vanishing_client, ADDR)
    for c in clients:
        c.join(20)

    # A client that is still connected while the server shuts down.
    sock = socket.create_connection(ADDR, timeout=10)
    f = sock.makefile("rwb")
    f.write(b"before\\n"); f.flush()
    before = f.readline()
    t0 = time.monotonic()
    server.shutdown()
    shutdown_s = time.monotonic() - t0
    f.write(b"after\\n"); f.flush()                # its handler keeps running, as with TCP
    after = f.readline()
    f.write(b"QUIT\\n"); f.flush()
    bye = f.readline()
    f.close()
    sock.close()
    t0 = time.monotonic()
    server.server_close()           # waits for handlers: the vanished one ends by idle_timeout
    close_s = time.monotonic() - t0
    loop.join(10)
    print(json.dumps({
        "results": {str(k): [r.decode() for r in v] for k, v in results.items()},
        "before": before.decode(), "after": after.decode(), "bye": bye.decode(),
        "shutdown_s": shutdown_s, "close_s": close_s,
        "os_threads": len(threads_used), "client_type": type(sock).__name__,
        "runtime": kcpgo.get_runtime(),
    }))
''')


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        return u.getsockname()[1]


def run_python(code: str, *args: str, cwd: str, timeout: float = 40,
               runtime: str = "") -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([cwd, ROOT]), KCPGO_RUNTIME=runtime)
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr     # e.g. a handler's unexpected error
    return proc.stdout


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    return str(tmp_path)


def test_app_is_ordinary_stdlib_code_over_tcp():
    ns: dict = {}
    exec(APP, ns)
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), ns["LineEcho"]) as server:
        t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        t.start()
        assert ns["line_client"](server.server_address, [b"tcp"]) == [b"TCP", b"BYE"]
        server.shutdown()


@pytest.mark.parametrize("model", ["a", "b", "c", pytest.param("b-hub", marks=pytest.mark.slow),
                                   "c-hub"])
def test_unmodified_app_over_kcp(app_dir, model):
    forced = "hub" if model.endswith("-hub") else ""
    out = json.loads(run_python(SCENARIO, model, str(free_udp_port()), cwd=app_dir,
                                runtime=forced))
    assert out["runtime"] == ("hub" if model == "a" or forced else "thread")
    model = model[0]
    assert out["client_type"] == "KCPSocket"
    assert out["results"] == {str(i): [f"HELLO {i}", f"AGAIN {i}", "BYE"] for i in range(6)}
    assert (out["before"], out["after"], out["bye"]) == ("BEFORE\n", "AFTER\n", "BYE\n")
    assert out["shutdown_s"] < 5                # returns once it stops accepting
    assert out["close_s"] < 15                  # waited for the vanished client's idle_timeout
    # (c) really used OS threads; (a) and (b) ran every client in the one OS thread
    assert (out["os_threads"] > 1) == (model == "c")


@pytest.mark.parametrize("example,clients", [("model_gevent", 5), ("model_single_thread", 3),
                                             ("model_os_thread", 4)])
def test_model_examples_run_as_they_are(example, clients):
    """Each example's default client count (its argparse default / thread list) prints one
    whole reply line ending in BYE per client, and then "done"."""
    proc = subprocess.run([sys.executable, f"examples/{example}.py"], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                          text=True, timeout=40)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "done"
    assert sum(line.endswith("'BYE']") for line in lines) == clients, lines
    if example == "model_os_thread":
        assert "shared session: WRITTEN BY MAIN, READ BY ANOTHER THREAD" in lines


# ---------------------------------------------------------------- (c) in this process


def _in_thread(fn, *args):
    box = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            box["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "thread hung"
    return box


def test_each_os_thread_runs_its_own_sessions():
    """A second thread creates and uses its own listener and sessions: its own hub."""
    def serve_and_talk():
        with kcpgo.listen(("127.0.0.1", 0), mode="fast3") as ln:
            c = kcpgo.dial(ln.getsockname(), mode="fast3", timeout=5)
            c.sendall(b"ping")
            ln.settimeout(5)
            s, _ = ln.accept()
            s.sendall(s.recv(10).upper())
            reply = c.recv(10)
            c.close()
            s.close()
            return reply
    results = [_in_thread(serve_and_talk) for _ in range(2)]
    assert [r.get("value") for r in results] == [b"PING", b"PING"]


def test_a_session_is_used_from_any_thread():
    """On the I/O thread (this unpatched test process) a session created here works from
    another OS thread, as a socket does; close() there takes effect at once (socket.close)."""
    assert kcpgo.get_runtime() == "thread"
    with kcpgo.listen(("127.0.0.1", 0), mode="fast3") as ln:
        c = kcpgo.dial(ln.getsockname(), mode="fast3", timeout=5)
        assert _in_thread(c.sendall, b"ping") == {"value": None}
        ln.settimeout(5)
        s, _ = ln.accept()
        s.sendall(s.recv(10).upper())
        assert _in_thread(c.recv, 10) == {"value": b"PING"}
        assert _in_thread(c.drain, 1) == {"value": None}
        _in_thread(c.close)
        assert c.closed                        # no hand-off to wait for
        s.close()
        assert ln.session_count == 0


HUB_MODE_OWNER = textwrap.dedent('''
    import threading, kcpgo
    kcpgo.set_runtime("hub")
    ln = kcpgo.listen(("127.0.0.1", 0))
    c = kcpgo.dial(ln.getsockname(), timeout=5)
    box = {}
    def use():
        try:
            c.recv(10)
        except RuntimeError as e:
            box["error"] = str(e)
    t = threading.Thread(target=use)
    t.start(); t.join(10)
    print(box.get("error"))
''')


def test_hub_mode_session_from_another_thread_says_what_to_do():
    """kcpgo.set_runtime("hub") keeps the rule of that mode: a session runs only while its
    thread's hub runs, so a blocking call from another thread raises a RuntimeError naming
    the alternatives instead of hanging."""
    err = run_python(HUB_MODE_OWNER, cwd=ROOT)
    assert "thread that created it" in err and "set_runtime('thread')" in err, err


def test_server_thread_owns_sessions_while_main_thread_blocks_outside_kcpgo():
    """Constructed in main, served by a thread: the listener lives in the serving thread, so
    the server keeps working while main blocks in a plain (non-gevent) wait."""
    ns: dict = {}
    exec(APP, ns)
    server = ThreadingKCPServer(("127.0.0.1", 0), ns["LineEcho"], mode="fast3",
                                idle_timeout=1.0)
    addr = server.server_address
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()

    def talk():
        c = kcpgo.dial(addr, mode="fast3", stream=True, timeout=10)
        f = c.makefile("rwb")
        f.write(b"from a thread\nQUIT\n")
        f.flush()
        got = f.readline() + f.readline()
        f.close()
        c.close()
        return got
    done = threading.Event()
    box = {}
    threading.Thread(target=lambda: (box.update(_in_thread(talk)), done.set()),
                     daemon=True).start()
    assert done.wait(20)                       # main blocks its OS thread: no hub here
    assert box.get("value") == b"FROM A THREAD\nBYE\n", box
    # With the I/O thread any thread may serve: a third one's handle_request times out
    # like a socketserver's (handle_timeout), it does not raise.
    server.timeout = 0.2
    assert _in_thread(server.handle_request) == {"value": None}
    server.shutdown()
    server.server_close()
    t.join(10)
    assert not t.is_alive()

