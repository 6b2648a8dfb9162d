"""Helpers shared by the stream tests: connect a client stream to its server end, read to
EOF, read an exact count, and an echo that hashes what it receives (the interop matrices)."""
from __future__ import annotations

import hashlib


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


class HashingEcho:
    """Sends back everything ``sock`` receives (a session or stream), counting it in
    :attr:`total` (bytes) and hashing it into :attr:`received` (sha256). :meth:`run` loops
    until the socket fails: run it in a greenlet and kill that."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self.received = hashlib.sha256()
        self.total = 0

    def run(self) -> None:
        recv, sendall = self.sock.recv, self.sock.sendall
        while True:
            d = recv(1 << 20)
            self.received.update(d)
            self.total += len(d)
            sendall(d)
