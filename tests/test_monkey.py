"""kcpgo.monkey: unmodified stdlib servers and clients switched onto KCP.

Everything that patches runs in a subprocess (patching this process would change the other
tests), with a timeout so that a hang fails instead of stalling the suite.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

import kcpgo.monkey
from tests.support.children import reap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        return u.getsockname()[1]


def run(args, timeout=40, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout, cwd=kw.pop("cwd", ROOT), **kw)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


# ---------------------------------------------------------------- patch / unpatch, with gevent

PATCHING = textwrap.dedent('''
    import sys
    ORDER, PORT, HTTP_PORT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if ORDER == "gevent-first":
        from gevent import monkey
        monkey.patch_all()
    import http.client
    import http.server
    import json
    import os
    import socket
    import socketserver
    import tempfile
    import threading

    import kcpgo.monkey

    NAMES = ("__init__", "server_bind", "server_activate", "server_close", "fileno",
             "get_request", "shutdown_request", "close_request", "serve_forever", "shutdown",
             "handle_request", "handle_error")
    def snapshot():
        snap = {n: socketserver.TCPServer.__dict__.get(n) for n in NAMES}
        snap["process_request"] = socketserver.ThreadingMixIn.__dict__["process_request"]
        snap["create_connection"] = socket.create_connection
        return snap

    kcpgo.monkey.patch(servers={PORT: dict(mode="fast3", idle_timeout=0.5),
                                ("127.0.0.1", HTTP_PORT): dict(mode="fast3", idle_timeout=0.5)},
                       clients={("127.0.0.1", PORT): dict(mode="fast3"),
                                HTTP_PORT: dict(mode="fast3")})
    if ORDER == "gevent-after":
        from gevent import monkey
        monkey.patch_all()
    # What "unpatched" means here: the originals, or gevent's where gevent patched.
    kcpgo.monkey.unpatch()
    before = snapshot()
    kcpgo.monkey.patch(servers={PORT: dict(mode="fast3", idle_timeout=0.5),
                                ("127.0.0.1", HTTP_PORT): dict(mode="fast3", idle_timeout=0.5)},
                       clients={("127.0.0.1", PORT): dict(mode="fast3"),
                                HTTP_PORT: dict(mode="fast3")})

    # ---- unmodified stdlib code from here on
    class Echo(socketserver.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                self.wfile.write(line.upper())

    def client(address, lines):
        with socket.create_connection(address, timeout=10) as s:
            f = s.makefile("rwb")
            out = []
            for line in lines:
                f.write(line); f.flush()
                out.append(f.readline().decode())
            return type(s).__name__, out

    res = {}
    with socketserver.ThreadingTCPServer(("127.0.0.1", PORT), Echo) as kcp_server, \\
            socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo) as tcp_server:
        for srv in (kcp_server, tcp_server):
            threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        res["kcp"] = client(("127.0.0.1", PORT), [b"a\\n", b"b\\n"])
        res["tcp"] = client(tcp_server.server_address, [b"c\\n"])
        res["kcp_server_socket"] = kcp_server.socket.type == socket.SOCK_DGRAM
        res["tcp_server_socket"] = tcp_server.socket.type == socket.SOCK_STREAM
        kcp_server.shutdown()
        tcp_server.shutdown()

    # http.server and http.client, unmodified, over KCP
    root = tempfile.mkdtemp()
    with open(os.path.join(root, "hello.txt"), "wb") as fh:
        fh.write(b"hello over kcp\\n" * 1000)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=root, **kw)
        def log_message(self, *a):
            pass
    with http.server.ThreadingHTTPServer(("127.0.0.1", HTTP_PORT), Quiet) as httpd:
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        conn = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=10)
        conn.request("GET", "/hello.txt")
        sock_type = type(conn.sock).__name__
        resp = conn.getresponse()                  # HTTP/1.0: closes the connection ...
        body = resp.read()                         # ... and reads the body through makefile
        res["http"] = [resp.status, len(body), body[:15].decode(), sock_type]
        conn.close()
        httpd.shutdown()

    try:
        class Forking(socketserver.ForkingMixIn, socketserver.TCPServer):
            pass
        Forking(("127.0.0.1", PORT), Echo)
        res["forking"] = "accepted"
    except TypeError as e:
        res["forking"] = "refused" if "ThreadingMixIn" in str(e) else str(e)

    res["patched"] = kcpgo.monkey.is_patched()
    kcpgo.monkey.unpatch()
    after = snapshot()
    res["restored"] = [n for n in before if before[n] is not after[n]]
    res["unpatched"] = not kcpgo.monkey.is_patched()
    res["create_connection"] = socket.create_connection.__module__
    print(json.dumps(res))
''')


@pytest.mark.parametrize("order", ["no-gevent", "gevent-first", "gevent-after"])
def test_patch_switches_only_listed_addresses_and_unpatch_restores(order):
    port, http_port = free_udp_port(), free_udp_port()
    out = json.loads(run(["-c", PATCHING, order, str(port), str(http_port)]).stdout)
    assert out["kcp"] == ["KCPSocket", ["A\n", "B\n"]]
    assert out["tcp"] == ["socket", ["C\n"]]           # unlisted: still TCP
    assert out["kcp_server_socket"] and out["tcp_server_socket"]
    assert out["http"] == [200, 15000, "hello over kcp\n", "KCPSocket"]
    assert out["forking"] == "refused"
    assert out["patched"] and out["unpatched"]
    assert out["restored"] == []                       # every attribute is the original again
    expected = "socket" if order == "no-gevent" else "gevent.socket"
    assert out["create_connection"] == expected


def test_options_are_checked_before_anything_is_patched():
    with pytest.raises(TypeError, match="bogus"):
        kcpgo.monkey.patch(clients={9000: {"bogus": 1}})
    with pytest.raises(ValueError, match="mode"):
        kcpgo.monkey.patch(servers={9000: {"mode": "warp"}})
    with pytest.raises(ValueError, match="port"):
        kcpgo.monkey.patch(servers={"9000": {}})
    assert not kcpgo.monkey.is_patched()
    assert socket.create_connection.__module__ == "socket"


# ---------------------------------------------------------------- two stdlib programs

SERVER_PROGRAM = textwrap.dedent('''
    # A plain stdlib server: no kcpgo in here.
    import socketserver
    import sys

    class Reverse(socketserver.StreamRequestHandler):
        def handle(self):
            print("request is a", type(self.request).__name__, flush=True)
            for line in self.rfile:
                line = line.rstrip(b"\\n")
                print("got", line.decode(), flush=True)
                if line == b"STOP":
                    self.wfile.write(b"STOPPING\\n")
                    self.server.shutdown()
                    return
                self.wfile.write(line[::-1] + b"\\n")

    with socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), Reverse) as server:
        print("ready", flush=True)
        server.serve_forever()
    print("server done", flush=True)
''')

CLIENT_PROGRAM = textwrap.dedent('''
    # A plain stdlib client: no kcpgo in here.
    import socket
    import sys

    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as sock:
        f = sock.makefile("rwb")
        for word in [b"stressed", b"drawer", b"live", b"STOP"]:
            f.write(word + b"\\n")
            f.flush()
            sys.stdout.buffer.write(f.readline())
''')


@pytest.mark.parametrize("server_gevent", [False, True], ids=["plain", "gevent"])
def test_two_stdlib_programs_talk_kcp_via_monkey(tmp_path, server_gevent):
    (tmp_path / "server.py").write_text(SERVER_PROGRAM)
    (tmp_path / "client.py").write_text(CLIENT_PROGRAM)
    port = free_udp_port()
    kcp = ["--crypt", "aes", "--key", "shared secret", "--mode", "fast3", "--fec", "10/3"]
    server_cmd = [sys.executable, "-m", "kcpgo.monkey", *(["--gevent"] if server_gevent else []),
                  "--server", f"127.0.0.1:{port}", "--idle-timeout", "5", *kcp,
                  "server.py", str(port)]
    server = subprocess.Popen(server_cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "ready\n"
        client = run(["-m", "kcpgo.monkey", "--client", f"127.0.0.1:{port}", *kcp,
                      "client.py", str(port)], cwd=tmp_path)
        assert client.stdout == "desserts\nreward\nevil\nSTOPPING\n"
        out, err = server.communicate(timeout=20)
    finally:
        reap(server, kill=True)
    assert server.returncode == 0, err
    assert out.splitlines() == ["request is a KCPSocket", "got stressed", "got drawer",
                                "got live", "got STOP", "server done"]


@pytest.mark.parametrize("flags, stream", [([], True), (["--stream"], True),
                                           (["--no-stream"], False)])
def test_monkey_command_line_stream_flags(tmp_path, flags, stream):
    """``python -m kcpgo.monkey [--stream|--no-stream] --client HOST:PORT script.py``: the
    script's ``socket.create_connection`` gets a KCP session in stream mode by default and
    with ``--stream``, in message mode with ``--no-stream``. Source: the module docstring
    (sessions are byte streams like the TCP they replace; new-user report: ``--stream`` did
    nothing and message mode could not be chosen from the command line)."""
    port = free_udp_port()
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(f'''
        import socket
        s = socket.create_connection(("127.0.0.1", {port}))
        print(type(s).__name__, s._conn.stream)
        s.close()
    '''))
    proc = run(["-m", "kcpgo.monkey", *flags, "--client", f"127.0.0.1:{port}", str(script)])
    assert proc.stdout.split() == ["KCPSocket", str(stream)]


def test_monkey_command_line_needs_a_script():
    proc = subprocess.run([sys.executable, "-m", "kcpgo.monkey"], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2 and "script" in proc.stderr


# ---------------------------------------------------------------- the examples, as they are


def test_socketserver_echo_and_legacy_client_examples():
    port = str(free_udp_port())
    server = subprocess.Popen([sys.executable, "examples/socketserver_echo.py", "--port", port],
                              cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout.readline().startswith("line echo on KCP")
        client = run(["examples/legacy_client.py", "--port", port, "hello", "legacy code"])
        assert client.stdout == "HELLO\nLEGACY CODE\nBYE\n"
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=20)
    finally:
        reap(server, kill=True)
    assert server.returncode == 130 and "Traceback" not in err, err     # Ctrl-C: quietly


def test_concurrent_first_sessions_of_every_cipher_under_monkey_patching():
    """Under ``gevent.monkey.patch_all()``, 6 greenlets dialling at once with salsa20: 4
    failed with "already inside a kcpgo call" (a new user's script). pycryptodome's first
    Salsa20 call resolved cffi types under a cffi lock that gevent patched, which switched
    greenlets while kcpgo's stack lock was held. Every cipher, first use in the process: 6
    concurrent sessions each echo their message."""
    from tests.support.children import run_child
    out = run_child(textwrap.dedent('''
        from gevent import monkey; monkey.patch_all()
        import json, gevent, kcpgo
        from kcpgo.codec.crypt import CIPHER_NAMES
        def serve(ln):
            while True:
                s, _ = ln.accept()
                gevent.spawn(echo, s)
        def echo(s):
            with s:
                while True:
                    data = s.recv(4096)
                    if not data:
                        return
                    s.sendall(data)
        def client(addr, name):
            with kcpgo.dial(addr, crypt=name, key="pw", timeout=10) as s:
                s.sendall(b"x" * 3000)
                got = b""
                while len(got) < 3000:
                    got += s.recv(65536)
            return got == b"x" * 3000
        failed = {}
        for name in CIPHER_NAMES:
            ln = kcpgo.listen(("127.0.0.1", 0), crypt=name, key="pw")
            server = gevent.spawn(serve, ln)
            jobs = [gevent.spawn(client, ln.getsockname(), name) for _ in range(6)]
            gevent.joinall(jobs, timeout=30)
            bad = [repr(j.exception) if j.exception else j.value
                   for j in jobs if j.value is not True]
            if bad:
                failed[name] = bad
            server.kill()
            ln.close()
        print(json.dumps({"failed": failed}))
    '''), timeout=120)
    assert out == {"failed": {}}
