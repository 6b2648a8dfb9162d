"""A small program written against kcpgo's public API, for ``mypy --strict`` (``.ci/run``
checks it; issue 14: the annotations kcpgo ships in ``py.typed`` must type-check a user's
code). It also runs: ``python3 tests/typing/user_program.py`` echoes over one session and
one smux stream on loopback and prints what it got."""
from __future__ import annotations

import socketserver
import threading
from typing import List, Optional, Tuple

import kcpgo
from kcpgo.server import KCPServer
from kcpgo.snmp import Snmp


def echo_once(listener: kcpgo.Listener) -> None:
    sock, peer = listener.accept()
    with sock:
        data: bytes = sock.recv(65536)
        sock.sendall(data)


def kcp_round_trip(snmp: Snmp) -> bytes:
    options = kcpgo.Options(mode="fast3", crypt="aes", key="secret", data_shards=10,
                            parity_shards=3)
    with kcpgo.listen(("127.0.0.1", 0), options) as listener:
        port: int = listener.getsockname()[1]
        server = threading.Thread(target=echo_once, args=(listener,))
        server.start()
        with kcpgo.dial(("127.0.0.1", port), options, timeout=5.0, snmp=snmp) as sock:
            sock.sendall(b"hello")
            reply = b""
            while len(reply) < 5:
                chunk = sock.recv(100)
                if not chunk:
                    break
                reply += chunk
        server.join(5)
    return reply


def smux_round_trip() -> Tuple[bytes, bytes]:
    with kcpgo.listen_smux(("127.0.0.1", 0), mode="fast3") as listener:
        address = listener.getsockname()
        with kcpgo.dial_smux(address, timeout=5.0, mode="fast3") as session:
            client: kcpgo.Stream = session.open_stream()
            client.sendall(b"ping")
            client.shutdown(1)                       # SHUT_WR: FIN, like TCP
            server, _ = listener.accept()
            got: List[bytes] = []
            while True:
                chunk = server.recv(100)
                if not chunk:                        # b"" after the peer's FIN
                    break
                got.append(chunk)
            server.sendall(b"pong")
            server.close()
            reply = client.recv(100)
            client.close()
    return b"".join(got), reply


class Upper(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(self.request.recv(100).upper())


def make_server(port: int = 0) -> KCPServer:
    return KCPServer(("127.0.0.1", port), Upper, mode="fast3")


def main(argv: Optional[List[str]] = None) -> int:
    snmp = Snmp()
    print(kcpgo.get_runtime(), kcp_round_trip(snmp), snmp.OutPkts > 0, smux_round_trip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
