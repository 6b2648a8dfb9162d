#!/usr/bin/env python3
"""Concurrency model (a), the primary one: a gevent.monkey.patch_all() program whose threads
are greenlets. A ThreadingKCPServer runs in a thread, clients run in threads; all of it is
ordinary threading/socketserver code.

    python examples/model_gevent.py [--clients 5]
"""
from gevent import monkey

monkey.patch_all()          # first: threads become greenlets, socketserver waits cooperatively

import argparse             # noqa: E402
import signal               # noqa: E402
import threading            # noqa: E402

import gevent               # noqa: E402

import kcpgo                # noqa: E402
from kcpgo.server import ThreadingKCPServer   # noqa: E402
from lineproto import EndSessionsMixIn, LineEcho, line_client  # noqa: E402  (on sys.path)


class Server(EndSessionsMixIn, ThreadingKCPServer):
    """Ctrl-C ends the sessions still open (KCP has no FIN: lineproto.EndSessionsMixIn)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=5)
    args = ap.parse_args()
    # Ctrl-C: KeyboardInterrupt in this (main) greenlet, from gevent's signal watcher (left to
    # Python's handler it would land in gevent's hub, which prints it).
    gevent.signal_handler(signal.SIGINT, gevent.kill, gevent.getcurrent(), KeyboardInterrupt)
    server = Server(("127.0.0.1", 0), LineEcho, mode="fast3", idle_timeout=10)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run_clients(server, args.clients)
    finally:                        # also on Ctrl-C
        server.shutdown()
        server.end_sessions()
        server.server_close()
    print("done")


def run_clients(server, count):
    def one(i):
        with kcpgo.dial(server.server_address, mode="fast3", stream=True, timeout=10) as sock:
            replies = line_client(sock, [b"hello", b"from thread %d" % i])
        print(f"client {i}: {replies}")     # one string: one whole line per client
    # daemon: after Ctrl-C the program exits without waiting for the clients still talking
    clients = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:       # Ctrl-C: quietly, with status 130 as a shell expects
        raise SystemExit(130)
