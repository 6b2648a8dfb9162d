#!/usr/bin/env python3
"""Concurrency model (a), the primary one: a gevent.monkey.patch_all() program whose threads
are greenlets. A ThreadingKCPServer runs in a thread, clients run in threads; all of it is
ordinary threading/socketserver code.

    python examples/model_gevent.py [--clients 5]
"""
from gevent import monkey

monkey.patch_all()          # first: threads become greenlets, socketserver waits cooperatively

import argparse             # noqa: E402
import threading            # noqa: E402

import kcpgo                # noqa: E402
from kcpgo.server import ThreadingKCPServer   # noqa: E402
from lineproto import LineEcho, line_client  # noqa: E402  (examples/ is on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=5)
    args = ap.parse_args()
    server = ThreadingKCPServer(("127.0.0.1", 0), LineEcho, mode="fast3", idle_timeout=10)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def one(i):
        with kcpgo.dial(server.server_address, mode="fast3", stream=True, timeout=10) as sock:
            replies = line_client(sock, [b"hello", b"from thread %d" % i])
        print(f"client {i}: {replies}")     # one string: one whole line per client
    clients = [threading.Thread(target=one, args=(i,)) for i in range(args.clients)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    server.shutdown()
    server.server_close()
    print("done")


if __name__ == "__main__":
    main()
