#!/usr/bin/env python3
"""An unmodified socketserver handler that reads to EOF, served over smux streams.

    python examples/smux_socketserver.py [--streams 4] [--smuxver 1|2] [--compress]

Over bare KCP a handler that reads until EOF would never finish (KCP has no FIN); over smux
streams it does (docs/kcptun.md §4.5). The server is a ThreadingKCPServer with ``smux=...``,
served by its own OS thread; the client opens one KCP session (kcpgo.dial_smux) and several
streams on it at once, as a kcptun client does: each sends a body, half-closes
(shutdown(SHUT_WR)) and reads the reply until the server's FIN. Prints one line per stream:
``stream SID SIZE SHA256[:16] CONV`` (every stream has the session's conv), then ``done``.
Ctrl-C stops it quietly (exit status 130).
"""
import argparse
import hashlib
import signal
import socket
import socketserver
import threading

import gevent

import kcpgo
from kcpgo.server import ThreadingKCPServer


class Digest(socketserver.StreamRequestHandler):
    """An ordinary handler (unchanged from its TCP days): read everything, answer, done."""

    def handle(self):
        body = self.rfile.read()                    # returns at the client's FIN
        self.wfile.write(b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode()))


def request(session, body):
    with session.open_stream() as stream:           # a TCP-like connection, no handshake
        stream.sendall(body)
        stream.shutdown(socket.SHUT_WR)             # "that was all": the server reads EOF
        size, digest = stream.makefile("rb").read().split()     # until the server's FIN
        return stream.sid, int(size), digest.decode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--smuxver", type=int, choices=(1, 2), default=1)
    ap.add_argument("--compress", action="store_true", help="snappy framing (kcptun's default)")
    args = ap.parse_args()
    smux = dict(smux_version=args.smuxver, compression=args.compress)
    server = ThreadingKCPServer(("127.0.0.1", 0), Digest, mode="fast3", smux=smux)
    serving = threading.Thread(target=server.serve_forever, name="kcp-server")
    serving.start()
    # Ctrl-C: KeyboardInterrupt in this (main) greenlet, from gevent's signal watcher (left to
    # Python's handler it would land in gevent's hub, which prints it).
    gevent.signal_handler(signal.SIGINT, gevent.kill, gevent.getcurrent(), KeyboardInterrupt)
    try:
        # This (main) thread dials, so the session is this thread's; its streams are greenlets.
        with kcpgo.dial_smux(server.server_address, mode="fast3", timeout=10, **smux) as session:
            jobs = [gevent.spawn(request, session, b"x" * (1000 * i))
                    for i in range(args.streams)]
            try:
                gevent.joinall(jobs, raise_error=True)
            finally:
                gevent.killall(jobs)    # Ctrl-C: each closes its stream (the server sees FIN)
            for job in sorted(jobs, key=lambda j: j.value[0]):
                sid, size, digest = job.value
                print(f"stream {sid} {size} {digest[:16]} {session.conv:#010x}", flush=True)
    finally:
        server.shutdown()
        server.server_close()    # every stream was closed: no handler is left to wait for
        serving.join()
    print("done")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:       # Ctrl-C: quietly, with status 130 as a shell expects
        raise SystemExit(130)
