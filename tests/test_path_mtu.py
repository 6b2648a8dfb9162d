"""A path MTU below the session's MTU (a VPN, PPPoE, an ICMP "fragmentation needed" cached
for the route) must slow a session down, not stop it.

The input (a new user's first hour, reproduced in a network namespace): the loopback's MTU
at 1200 while sessions use kcp-go's default MTU of 1400. Before the fix, every flush of more
than one datagram left as one UDP GSO ``sendmsg``, which the kernel refuses with
``EMSGSIZE`` when its segments exceed the path MTU (GSO segments are not fragmented); that
error counted as a drop, so nothing but single datagrams ever left: ``sendall`` of 10 kB
sent nothing (OutPkts 0), the demo timed out, ``bench sink`` stalled, blaming key and port,
while kcp-go's pair ran at 73.7 MB/s (its plain sends are fragmented by the kernel, as
Linux does for a UDP socket by default, ip(7) ``IP_MTU_DISCOVER``). Expected: the run goes
out one datagram at a time and every byte arrives.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent('''
    import hashlib, os, subprocess, sys, threading
    subprocess.run(["ip", "link", "set", "lo", "mtu", "1200", "up"], check=True)
    import kcpgo
    ln = kcpgo.listen(("127.0.0.1", 0), mode="fast3")
    data = os.urandom(300_000)
    c = kcpgo.dial(ln.getsockname(), mode="fast3", timeout=10)
    got = hashlib.sha256()
    n = [0]

    def serve():
        ln.settimeout(10)
        s, _ = ln.accept()
        s.settimeout(10)
        while n[0] < len(data):
            piece = s.recv(65536)
            got.update(piece)
            n[0] += len(piece)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        c.sendall(data)
    except OSError as e:    # before the fix: TimeoutError, the window never reopened
        print("sendall:", e, file=sys.stderr)
    t.join(15)
    ep = c._channel().endpoint
    print(n[0], got.hexdigest() == hashlib.sha256(data).hexdigest(), ep.gso, ep.snmp.OutPkts,
          flush=True)
    os._exit(0)
''')


def _namespaces() -> bool:
    if not sys.platform.startswith("linux") or not shutil.which("unshare") \
            or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "mtu", "1200", "up"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _namespaces(), reason="needs Linux network namespaces (unshare -n, ip)")
def test_a_path_mtu_below_the_sessions_slows_it_down_but_every_byte_arrives():
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", SCRIPT], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    received, intact, gso, out_pkts = proc.stdout.split()
    assert int(received) == 300_000 and intact == "True", proc.stdout
    assert gso == "True"            # GSO stays on for datagrams that fit (single ones, ACKs)
