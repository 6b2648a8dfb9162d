#!/usr/bin/env python3
"""A blocking line-protocol client, unchanged, moved onto KCP with kcpgo.monkey.

    python examples/legacy_client.py [--host 127.0.0.1] [--port 9000] [--key secret]
                                     [--connect] [LINE...]

``talk()`` is ordinary socket code (``socket.create_connection`` + ``makefile``, or with
``--connect`` the older spelling ``socket.socket()`` + ``settimeout`` + ``connect``); the only
KCP-specific line is the ``kcpgo.monkey.patch`` call in ``main()``. Talks to
examples/socketserver_echo.py.
"""
import argparse
import socket


def connect(host, port):
    """Legacy code of the older kind: a socket made by hand, then connect()."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect((host, port))
    return sock


def talk(host, port, lines, by_hand=False):
    """Legacy code: send each line, print the reply, then QUIT."""
    sock = connect(host, port) if by_hand else socket.create_connection((host, port), timeout=10)
    with sock:
        f = sock.makefile("rwb")
        for line in lines + ["QUIT"]:
            f.write(line.encode() + b"\n")
            f.flush()
            print(f.readline().decode().rstrip("\n"), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--key", default="it's a secret", help="kcptun-style passphrase (AES)")
    ap.add_argument("--connect", action="store_true",
                    help="socket.socket() + connect() instead of socket.create_connection()")
    ap.add_argument("lines", nargs="*", default=["hello", "kcp"])
    args = ap.parse_args()

    import kcpgo.monkey
    kcpgo.monkey.patch(clients={(args.host, args.port): dict(crypt="aes", key=args.key,
                                                             mode="fast3")})
    talk(args.host, args.port, args.lines, by_hand=args.connect)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:       # Ctrl-C: quietly, as a shell expects (its session closed)
        raise SystemExit(130)
