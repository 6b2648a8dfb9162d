"""``Stream.set_receiver`` and the tunnel's direct stream -> TCP writes (kcpgo/cli/pipe.py).

In ``"hub"`` mode the tunnel's :class:`~kcpgo.cli.pipe.Pipe` lets kcpgo's reader write a
stream's bytes to the TCP socket itself (no greenlet hand-over per reply). What must hold, as
with the copier greenlet alone: every byte arrives once and in order, also when the TCP side
reads slowly (the direct write then takes part of a frame or nothing, and the greenlet writes
the rest first), EOF follows the data, and a receiver is refused in ``"thread"`` mode (the
reader runs in another thread there). Hub mode is fixed per process: those checks run in a
child process.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import kcpgo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = textwrap.dedent("""
    import hashlib, os, socket, sys
    import gevent
    from gevent import socket as gsocket
    import kcpgo
    from kcpgo.cli.pipe import Pipe

    kcpgo.set_runtime("hub")
    version, compression = int(sys.argv[1]), sys.argv[2] == "1"
    lst = kcpgo.listen_smux(("127.0.0.1", 0), smux_version=version, compression=compression)
    sess = kcpgo.dial_smux(lst.getsockname(), smux_version=version, compression=compression)
    far = sess.open_stream()                    # the tunnel server's end (the "target" side)
    far.sendall(b"hi")
    near, _ = lst.accept()                      # the end the pipe copies
    assert near.recv(2) == b"hi"
    app, tcp = gsocket.socketpair()             # app <-> pipe's TCP end
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    app.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    pipe = Pipe(tcp, near)
    g = gevent.spawn(pipe.run)
    gevent.sleep(0.05)
    assert pipe._send_now is not None, "direct writes are off in hub mode"

    # request/response: each reply written by the reader
    for i in range(200):
        msg = os.urandom(1 + i * 7 % 300)
        app.sendall(msg)
        got = b""
        while len(got) < len(msg):
            got += far.recv(65536)
        assert got == msg
        far.sendall(got[::-1])
        back = b""
        while len(back) < len(msg):
            back += app.recv(65536)
        assert back == msg[::-1], i

    # bulk download to a slow reader: partial and refused direct writes, greenlet fallback
    data = os.urandom(3_000_000)
    sender = gevent.spawn(far.sendall, data)
    h, n = hashlib.sha256(), 0
    while n < len(data):
        piece = app.recv(1000 if n < 200_000 else 65536)
        if n < 200_000:
            gevent.sleep(0.0005)
        h.update(piece)
        n += len(piece)
    sender.get(timeout=30)
    assert n == len(data) and h.digest() == hashlib.sha256(data).digest()

    # EOF after the data: the far side's FIN ends the pipe (closewait 0)
    far.sendall(b"last")
    far.close()
    tail = b""
    while True:
        d = app.recv(65536)
        if not d:
            break
        tail += d
    assert tail == b"last", tail
    g.join(timeout=10)
    assert g.dead and g.value == (None, None), g.value
    sess.close(); lst.close()
    print("OK")
""")


def _child(version: int, compression: bool) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("KCPGO_RUNTIME", None)
    out = subprocess.run([sys.executable, "-c", _CHILD, str(version), str(int(compression))],
                         capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stdout + out.stderr


def test_direct_writes_keep_every_byte_in_order_v1_snappy() -> None:
    _child(1, True)


def test_direct_writes_keep_every_byte_in_order_v2() -> None:
    _child(2, False)


def test_receiver_refused_in_thread_mode() -> None:
    """This process runs kcpgo in "thread" mode (no gevent.monkey): the reader runs in the I/O
    thread, so a receiver is not installed and recv works as before."""
    if kcpgo.get_runtime() != "thread":       # pragma: no cover - another suite's choice
        return
    lst = kcpgo.listen_smux(("127.0.0.1", 0))
    sess = kcpgo.dial_smux(lst.getsockname())
    try:
        c = sess.open_stream()
        c.sendall(b"x")
        lst.settimeout(10)
        s, _ = lst.accept()
        s.settimeout(10)
        assert s.set_receiver(lambda data: len(data)) is False
        assert s.recv(1) == b"x"
        assert s.set_receiver(None) is False
    finally:
        sess.close()
        lst.close()
