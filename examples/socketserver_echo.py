#!/usr/bin/env python3
"""A line-echo service over KCP: socketserver's threading server with an ordinary
StreamRequestHandler, in a gevent.monkey.patch_all() program (threads are greenlets).

    python examples/socketserver_echo.py [--host 127.0.0.1] [--port 9000] [--key secret]

Each line comes back upper-cased; QUIT ends the session. Talk to it with
examples/legacy_client.py. Ctrl-C stops it.
"""
from gevent import monkey

monkey.patch_all()          # first, before anything imports socket or threading

import argparse             # noqa: E402

from kcpgo.server import ThreadingKCPServer   # noqa: E402
from lineproto import LineEcho  # noqa: E402  (examples/ is on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--key", default="it's a secret", help="kcptun-style passphrase (AES)")
    args = ap.parse_args()
    # KCP options: AES with the passphrase, kcptun's fast3 preset; a client that stays silent
    # for 30 s is taken as gone (KCP has no FIN), which ends its handler.
    with ThreadingKCPServer((args.host, args.port), LineEcho, crypt="aes", key=args.key,
                            mode="fast3", idle_timeout=30) as server:
        print(f"line echo on KCP (UDP) {server.server_address[0]}:{server.server_address[1]}",
              flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
