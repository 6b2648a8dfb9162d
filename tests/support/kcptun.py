"""Helpers to run Debian's kcptun and our own tunnel as child processes, plus TCP targets.

They moved into the package, :mod:`kcpgo.testing.tunnel` (``python -m kcpgo bench tunnel``
uses them from an installed kcpgo too); this module re-exports them for the tests
(tests/interop/test_kcptun.py, tests/test_tunnel_cli.py, tests/test_break_tunnel.py).
"""
from __future__ import annotations

from kcpgo.testing.tunnel import (DEFAULT_KEY, INSTALL_HINT, KCPTUN_CLIENT,  # noqa: F401
                                  KCPTUN_SERVER, ROOT, Address, EchoServer, SinkServer,
                                  TunnelProcess, _real_connect, _TCPServer, _udp_bound,
                                  echo_exchange, free_port, hostport, kcptun_available,
                                  parse_hostport, payload, tunnel_cli_available)
