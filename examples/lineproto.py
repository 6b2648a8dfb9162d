"""The "existing blocking code" the examples move onto KCP: a line-echo protocol written
against plain sockets and socketserver, with no knowledge of kcpgo.

The server upper-cases every line and answers ``QUIT`` with ``BYE``; the client sends lines
and reads one reply per line. :class:`EndSessionsMixIn` lets a server stop promptly (Ctrl-C)
while clients are still connected.
"""
import socket
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


class EndSessionsMixIn:
    """A socketserver mix-in that remembers the connections its handlers serve, so that a
    program that stops (Ctrl-C) can end them with :meth:`end_sessions` before
    ``server_close()``, which waits for the handlers.

    Over KCP this matters: there is no FIN, so the handler of a client that is still connected
    (or has vanished) reads on until the server's ``idle_timeout``. Each connection is shut
    down for reading, as one would a TCP socket: the handler's read returns EOF, the handler
    returns, and socketserver closes the connection.
    """

    def finish_request(self, request, client_address):
        sessions = self.__dict__.setdefault("open_sessions", set())
        sessions.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            sessions.discard(request)

    def end_sessions(self):
        for request in list(self.__dict__.get("open_sessions", ())):
            try:
                request.shutdown(socket.SHUT_RD)
            except OSError:             # closed meanwhile
                pass
