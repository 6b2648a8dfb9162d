#!/usr/bin/env python3
"""A line-echo service over KCP: socketserver's threading server with an ordinary
StreamRequestHandler, in a gevent.monkey.patch_all() program (threads are greenlets).

    python examples/socketserver_echo.py [--host 127.0.0.1] [--port 9000] [--key secret]

Each line comes back upper-cased; QUIT ends the session. Talk to it with
examples/legacy_client.py. Ctrl-C stops it quietly (exit status 130), after ending the
sessions still open.
"""
from gevent import monkey

monkey.patch_all()          # first, before anything imports socket or threading

import argparse             # noqa: E402
import signal               # noqa: E402

import gevent               # noqa: E402

from kcpgo.server import ThreadingKCPServer   # noqa: E402
from lineproto import EndSessionsMixIn, LineEcho  # noqa: E402  (examples/ is on sys.path)


class LineEchoServer(EndSessionsMixIn, ThreadingKCPServer):
    """ThreadingKCPServer whose open sessions Ctrl-C can end (KCP has no FIN: see
    lineproto.EndSessionsMixIn)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--key", default="it's a secret", help="kcptun-style passphrase (AES)")
    args = ap.parse_args()
    # Ctrl-C: KeyboardInterrupt in this (main) greenlet, raised from gevent's signal watcher.
    # Left to Python's handler, it lands in gevent's hub, which prints it, and when it races a
    # timer (serve_forever polls every 0.5 s) the timer's Timeout reaches the main greenlet
    # later, at interpreter exit: "gevent.timeout.Timeout: 0.5 seconds" from threading._shutdown.
    gevent.signal_handler(signal.SIGINT, gevent.kill, gevent.getcurrent(), KeyboardInterrupt)
    # KCP options: AES with the passphrase, kcptun's fast3 preset; a client that stays silent
    # for 30 s is taken as gone (KCP has no FIN), which ends its handler.
    try:
        server = LineEchoServer((args.host, args.port), LineEcho, crypt="aes", key=args.key,
                                mode="fast3", idle_timeout=30)
    except OSError as e:                # the port is busy (EADDRINUSE), the address not ours
        raise SystemExit(f"socketserver_echo.py: cannot listen on {args.host}:{args.port}: "
                         f"{e.strerror or e}")
    with server:
        print(f"line echo on KCP (UDP) {server.server_address[0]}:{server.server_address[1]}",
              flush=True)
        try:
            server.serve_forever()
        finally:                        # Ctrl-C; then server_close() waits for the handlers
            server.end_sessions()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit(130)
