#!/usr/bin/env python3
"""A KCP echo server: every byte a client sends comes back.

Speaks kcp-go's wire format, so kcp-go clients (and examples/echo_client.py) can use it.
Each session is served by a greenlet; the library itself uses one reader greenlet for the
listening socket and one scheduler greenlet, however many sessions there are.

    python examples/echo_server.py --port 9000 --crypt aes --key secret --fec 10/3 --mode fast3
"""
import argparse
import logging

import gevent

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
    ap.add_argument("--idle-timeout", type=float, default=60.0,
                    help="drop a session after this many silent seconds (KCP has no FIN)")
    ap.add_argument("--once", action="store_true", help="exit after the first session ends")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ds, ps = (int(x) for x in args.fec.split("/"))
    crypt = dict(crypt=args.crypt, key=args.key) if args.crypt else {}
    with kcpgo.listen((args.host, args.port), data_shards=ds, parity_shards=ps, mode=args.mode,
                      stream=args.stream, idle_timeout=args.idle_timeout, **crypt) as ln:
        print(f"listening on {ln.getsockname()}", flush=True)
        while True:
            sess, addr = ln.accept()
            g = gevent.spawn(serve, sess, addr)
            if args.once:
                g.join()
                break


if __name__ == "__main__":
    main()
