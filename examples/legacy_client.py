#!/usr/bin/env python3
"""A blocking line-protocol client, unchanged, moved onto KCP with kcpgo.monkey.

    python examples/legacy_client.py [--host 127.0.0.1] [--port 9000] [--key secret] [LINE...]

``talk()`` is ordinary socket code (``socket.create_connection`` + ``makefile``); the only
KCP-specific line is the ``kcpgo.monkey.patch`` call in ``main()``. Talks to
examples/socketserver_echo.py.
"""
import argparse
import socket


def talk(host, port, lines):
    """Legacy code: send each line, print the reply, then QUIT."""
    with socket.create_connection((host, port), timeout=10) as sock:
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
    ap.add_argument("lines", nargs="*", default=["hello", "kcp"])
    args = ap.parse_args()

    import kcpgo.monkey
    kcpgo.monkey.patch(clients={(args.host, args.port): dict(crypt="aes", key=args.key,
                                                             mode="fast3")})
    talk(args.host, args.port, args.lines)


if __name__ == "__main__":
    main()
