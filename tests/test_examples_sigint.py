"""Ctrl-C ends every long-running example quietly: exit status 130, no traceback, promptly
even while a client is still connected (issue 14; first-hour log, problem 8: a 20-line
traceback from echo_server.py, a ``gevent.timeout.Timeout`` traceback from
socketserver_echo.py in 4 runs of 10, and, found since, 30 s of waiting for a connected client's
idle_timeout). The signal goes to each example's process group, as a terminal's Ctrl-C does.
Every example starts at once and is signalled once all are busy, so the file stays fast.
The short model examples are checked by hand (see the report of issue 14)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Dict, List

import kcpgo
from tests.support.children import ROOT, child_env
from tests.support.children import reap
from tests.test_cli_sigint import START, first_line, noisy_exits


def start(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, f"examples/{script}", *args], cwd=ROOT,
                            env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def silent_peer() -> socket.socket:
    """A UDP port that never answers: a client of it stays waiting for its reply."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(START)
    return sock


def connected_client(line: str, **options: object) -> kcpgo.KCPSocket:
    """A session to the server that printed ``line`` ("... 127.0.0.1:PORT" or "... PORT)"),
    which has answered once and stays open (KCP has no FIN: its handler would read on)."""
    port = int(line.rstrip().rstrip(")").replace(":", " ").split()[-1])
    sess = kcpgo.dial(("127.0.0.1", port), mode="fast3", stream=True, timeout=START,
                      **options)
    sess.sendall(b"hello\n")
    assert sess.recv(100).lower() == b"hello\n"
    return sess


def test_sigint_ends_every_long_running_example_quietly() -> None:
    peers = {name: silent_peer() for name in ("echo_client.py", "legacy_client.py")}
    children: Dict[str, subprocess.Popen] = {}
    sessions: List[kcpgo.KCPSocket] = []
    try:
        children["echo_server.py"] = start("echo_server.py", "--port", "0")
        children["socketserver_echo.py"] = start("socketserver_echo.py", "--port", "0")
        children["lossy_link_demo.py"] = start("lossy_link_demo.py", "--mb", "200")
        for name, peer in peers.items():
            children[name] = start(name, "--port", str(peer.getsockname()[1]))
        line = first_line(children["echo_server.py"], "listening on", "echo_server.py")
        sessions.append(connected_client(line))
        line = first_line(children["socketserver_echo.py"], "line echo on KCP",
                          "socketserver_echo.py")
        sessions.append(connected_client(line, crypt="aes", key="it's a secret"))
        first_line(children["lossy_link_demo.py"], "sending", "lossy_link_demo.py")
        for peer in peers.values():
            peer.recvfrom(2048)                 # the client is waiting for its reply
        for proc in children.values():
            os.killpg(proc.pid, signal.SIGINT)
        failures = noisy_exits(children)       # within 20 s: idle_timeout is 30 s or 60 s
        assert not failures, "\n".join(failures)
    finally:
        for proc in children.values():
            reap(proc, kill=True)
        for sess in sessions:
            sess.close()
        for peer in peers.values():
            peer.close()
