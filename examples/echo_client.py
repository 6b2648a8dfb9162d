#!/usr/bin/env python3
"""A KCP echo client: sends data to an echo server (examples/echo_server.py or a kcp-go one)
and checks that exactly the same bytes come back.

    python examples/echo_client.py --port 9000 --crypt aes --key secret --fec 10/3 --mb 5

The same demo with kcptun's flags: ``python -m kcpgo echo client`` / ``echo server``.
"""
import argparse
import hashlib
import os
import signal
import time

import gevent

import kcpgo


def send_all(sess, payload):
    """sess.sendall(payload) in a greenlet: returns the error instead of raising it (gevent
    prints the traceback of a greenlet that raises; the reader reports the failure)."""
    try:
        sess.sendall(payload)
    except OSError as e:
        return e
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--crypt", default=None, help="cipher name, e.g. aes, salsa20, none")
    ap.add_argument("--key", default="it's a secrect", help="kcptun passphrase")
    ap.add_argument("--fec", default="0/0", help="data/parity shards, e.g. 10/3")
    ap.add_argument("--mode", default="fast3", choices=["normal", "fast", "fast2", "fast3"])
    ap.add_argument("--stream", action="store_true", help="stream mode (kcptun)")
    ap.add_argument("--mb", type=float, default=1.0, help="megabytes to echo")
    ap.add_argument("--timeout", type=float, default=10.0, help="socket timeout, seconds")
    args = ap.parse_args()
    ds, ps = (int(x) for x in args.fec.split("/"))
    crypt = dict(crypt=args.crypt, key=args.key) if args.crypt else {}
    payload = os.urandom(int(args.mb * 1_000_000))
    # Ctrl-C: KeyboardInterrupt in this greenlet, not inside gevent's hub (which prints it).
    gevent.signal_handler(signal.SIGINT, gevent.kill, gevent.getcurrent(), KeyboardInterrupt)
    with kcpgo.dial((args.host, args.port), data_shards=ds, parity_shards=ps, mode=args.mode,
                    stream=args.stream, timeout=args.timeout, **crypt) as sess:
        t0 = time.perf_counter()
        writer = gevent.spawn(send_all, sess, payload)   # write and read at the same time
        echoed = bytearray()
        try:
            while len(echoed) < len(payload):
                echoed += sess.recv(1 << 20)
            error = writer.get()
            if error is not None:
                raise error
        except TimeoutError:
            raise SystemExit(f"no echo within {args.timeout} s: is the echo server running at "
                             f"{args.host}:{args.port} with the same --crypt, --key and --fec?")
        finally:
            writer.kill()
        took = time.perf_counter() - t0
        ok = hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
        print(f"echoed {len(echoed):,} bytes in {took:.2f} s "
              f"({2 * len(payload) / took / 1e6:.1f} MB/s both ways), intact: {ok}; "
              f"srtt {sess.srtt} ms, rto {sess.rto} ms, retransmitted "
              f"{sess.snmp.RetransSegs} segments")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit(130)
