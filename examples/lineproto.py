"""The "existing blocking code" the examples move onto KCP: a line-echo protocol written
against plain sockets and socketserver, with no knowledge of kcpgo.

The server upper-cases every line and answers ``QUIT`` with ``BYE``; the client sends lines
and reads one reply per line.
"""
import socketserver


class LineEcho(socketserver.StreamRequestHandler):
    """An ordinary socketserver handler (unchanged from its TCP days)."""

    def handle(self):
        for line in self.rfile:
            if line.strip() == b"QUIT":
                self.wfile.write(b"BYE\n")
                return
            self.wfile.write(line.upper())


def line_client(sock, lines):
    """Blocking client code: works on any connected socket object."""
    f = sock.makefile("rwb")
    replies = []
    for line in lines + [b"QUIT"]:
        f.write(line + b"\n")
        f.flush()
        replies.append(f.readline().rstrip(b"\n").decode())
    return replies
