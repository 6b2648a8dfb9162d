#!/usr/bin/env python3
"""Concurrency model (b): an unpatched, single-threaded program that blocks only in kcpgo calls.

    python examples/model_single_thread.py [--clients 3]

The server is served from the main thread with plain ``handle_request()`` calls; no gevent
import, no monkey-patching. While the main thread waits inside kcpgo, kcpgo keeps every session
going, and ThreadingKCPServer runs each request in a greenlet of this thread, so requests
overlap. The clients are separate single-threaded processes (this file with ``client PORT``).
"""
import argparse
import subprocess
import sys

import kcpgo
from kcpgo.server import ThreadingKCPServer
from lineproto import LineEcho, line_client  # noqa: E402  (examples/ is on sys.path)


def client(port: int) -> None:
    with kcpgo.dial(("127.0.0.1", port), mode="fast3", stream=True, timeout=10) as sock:
        replies = line_client(sock, [b"hello", b"single thread"])
    print(f"client: {replies}", flush=True)     # one write per process: lines never interleave


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=3)
    args = ap.parse_args()
    with ThreadingKCPServer(("127.0.0.1", 0), LineEcho, mode="fast3", idle_timeout=10) as server:
        port = server.server_address[1]
        procs = [subprocess.Popen([sys.executable, __file__, "client", str(port)])
                 for _ in range(args.clients)]
        server.timeout = 20
        for _ in procs:
            server.handle_request()      # waits in kcpgo; handlers run as greenlets meanwhile
    # Leaving the with block, server_close() waited (in kcpgo) for the running handlers, as
    # socketserver does. Only now may this thread block elsewhere: p.wait() below would have
    # stalled the handlers had it come first.
    for p in procs:
        p.wait()
    print("done")


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        client(int(sys.argv[2]))
    else:
        main()
