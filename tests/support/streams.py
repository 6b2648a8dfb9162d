"""Helpers shared by the smux stream tests: connect a client stream to its server end, read
to EOF, read an exact count."""
from __future__ import annotations


def connect(lst, sess, timeout=10.0):
    """A client stream and the server's end of it (both with a safety timeout)."""
    c = sess.open_stream()
    lst.settimeout(timeout)
    s, _ = lst.accept()
    c.settimeout(timeout)
    s.settimeout(timeout)
    return c, s


def read_all(stream) -> bytes:
    """Everything up to EOF."""
    out = bytearray()
    while True:
        data = stream.recv(1 << 20)
        if not data:
            return bytes(out)
        out += data


def read_exactly(stream, n: int) -> bytes:
    """Exactly ``n`` bytes; fails on an early EOF."""
    out = bytearray()
    while len(out) < n:
        data = stream.recv(n - len(out))
        assert data, "EOF before the expected bytes"
        out += data
    return bytes(out)
