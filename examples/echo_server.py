#!/usr/bin/env python3
"""A KCP echo server: every byte a client sends comes back.

Speaks kcp-go's wire format, so kcp-go clients (and examples/echo_client.py) can use it.
Each session is served by a greenlet; the library itself uses one reader greenlet for the
listening socket and one scheduler greenlet, however many sessions there are.

    python examples/echo_server.py --port 9000 --crypt aes --key secret --fec 10/3 --mode fast3

The same demo with kcptun's flags: ``python -m kcpgo echo server`` / ``echo client``.
Ctrl-C stops it quietly (exit status 130).
"""
import argparse
import logging
import signal

import gevent
import gevent.pool

import kcpgo


def serve(sess: "kcpgo.KCPSocket", addr) -> None:
    logging.info("session %#010x from %s", sess.conv, addr)
    try:
        while True:
            data = sess.recv(65536)
            if not data:
                break
            sess.sendall(data)
    except (TimeoutError, ConnectionError, OSError) as e:
        logging.info("session %#010x ended: %s", sess.conv, e)
    finally:
        sess.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--crypt", default=None, help="cipher name, e.g. aes, salsa20, none")
    ap.add_argument("--key", default="it's a secrect", help="kcptun passphrase")
    ap.add_argument("--fec", default="0/0", help="data/parity shards, e.g. 10/3")
    ap.add_argument("--mode", default="fast3", choices=["normal", "fast", "fast2", "fast3"])
    ap.add_argument("--stream", action="store_true", help="stream mode (kcptun)")
    ap.add_argument("--idle-timeout", type=float, default=None,
                    help="drop a session after this many silent seconds (KCP has no FIN; "
                         "default 60, or 2 with --once)")
    ap.add_argument("--once", action="store_true",
                    help="exit after the first session ends (its client silent for "
                         "--idle-timeout seconds)")
    args = ap.parse_args()
    if args.idle_timeout is None:
        args.idle_timeout = 2.0 if args.once else 60.0
    # Ctrl-C: raise KeyboardInterrupt in this (main) greenlet from gevent's signal watcher,
    # not inside gevent's hub (which would print it).
    gevent.signal_handler(signal.SIGINT, gevent.kill, gevent.getcurrent(), KeyboardInterrupt)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ds, ps = (int(x) for x in args.fec.split("/"))
    crypt = dict(crypt=args.crypt, key=args.key) if args.crypt else {}
    sessions = gevent.pool.Group()      # one greenlet per session, each closes its own
    try:
        ln = kcpgo.listen((args.host, args.port), data_shards=ds, parity_shards=ps,
                          mode=args.mode, stream=args.stream, idle_timeout=args.idle_timeout,
                          **crypt)
    except OSError as e:                # the port is busy (EADDRINUSE), the address not ours
        raise SystemExit(f"echo_server.py: cannot listen on {args.host}:{args.port}: "
                         f"{e.strerror or e}")
    with ln:
        print(f"listening on {ln.getsockname()}", flush=True)
        try:
            while True:
                sess, addr = ln.accept()
                g = sessions.spawn(serve, sess, addr)
                if args.once:
                    g.join()
                    break
        finally:
            sessions.kill()             # Ctrl-C: each serve() closes its session on the way out


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit(130)
