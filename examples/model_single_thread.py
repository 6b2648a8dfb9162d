#!/usr/bin/env python3
"""Concurrency model (b): an unpatched, single-threaded program that blocks only in kcpgo calls.

    python examples/model_single_thread.py [--clients 3]

The server is served from the main thread with plain ``handle_request()`` calls; no gevent
import, no monkey-patching. kcpgo's I/O thread keeps every session going whatever the main
thread does, and ThreadingKCPServer runs each request in a thread of its own (the stdlib
``ThreadingMixIn``), so requests overlap. The clients are separate single-threaded processes
(this file with ``client PORT``). Ctrl-C stops it quietly (exit status 130).
"""
import argparse
import subprocess
import sys

import kcpgo
from kcpgo.server import ThreadingKCPServer
from lineproto import EndSessionsMixIn, LineEcho, line_client  # noqa: E402  (on sys.path)


class Server(EndSessionsMixIn, ThreadingKCPServer):
    """Ctrl-C ends the sessions still open (KCP has no FIN: lineproto.EndSessionsMixIn)."""


def client(port: int) -> None:
    with kcpgo.dial(("127.0.0.1", port), mode="fast3", stream=True, timeout=10) as sock:
        replies = line_client(sock, [b"hello", b"single thread"])
    print(f"client: {replies}", flush=True)     # one write per process: lines never interleave


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=3)
    args = ap.parse_args()
    with Server(("127.0.0.1", 0), LineEcho, mode="fast3", idle_timeout=10) as server:
        port = server.server_address[1]
        procs = [subprocess.Popen([sys.executable, __file__, "client", str(port)])
                 for _ in range(args.clients)]
        server.timeout = 20
        try:
            for _ in procs:
                server.handle_request()  # waits in kcpgo; handlers run in threads meanwhile
        except KeyboardInterrupt:        # Ctrl-C: stop the clients, end their sessions
            for p in procs:
                p.terminate()
                p.wait()
            server.end_sessions()
            raise
    # Leaving the with block, server_close() waited for the running handlers, as socketserver
    # does.
    for p in procs:
        p.wait()
    print("done")


if __name__ == "__main__":
    try:
        if sys.argv[1:2] == ["client"]:
            client(int(sys.argv[2]))
        else:
            main()
    except KeyboardInterrupt:       # Ctrl-C: quietly, with status 130 as a shell expects
        raise SystemExit(130)
