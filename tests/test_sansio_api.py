"""kcpgo.sansio is a public API (issue 9): its names exist, need no gevent, and its documented
example runs."""
from __future__ import annotations

import re
import subprocess
import sys

import kcpgo.sansio as sansio

PROMISED = ["KCP", "Connection", "Segment", "encode_segment", "decode_segments",
            "CMD_PUSH", "CMD_ACK", "CMD_WASK", "CMD_WINS", "FECEncoder", "FECDecoder",
            "PacketCodec", "ReedSolomon", "BlockCrypt", "new_crypt", "Snmp", "Network",
            "LinkProfile", "Demux", "Backlog"]


def test_promised_names_are_exported():
    assert set(PROMISED) <= set(sansio.__all__)
    for name in sansio.__all__:
        assert getattr(sansio, name) is not None, name
    k = sansio.KCP(1)
    for attr in ("send", "recv", "input", "flush", "update", "check", "set_nodelay",
                 "set_wndsize", "set_mtu", "stream", "rcv_wnd", "snd_wnd", "waitsnd"):
        assert hasattr(k, attr), attr


def test_importing_the_core_loads_no_io_module():
    # kcpgo's own imports are checked module by module in test_layers.py; this checks that
    # no gevent is loaded (cryptography's cffi imports subprocess, hence selectors, itself)
    code = ("import sys\nbefore = set(sys.modules)\nimport kcpgo.sansio, kcpgo\n"
            "new = set(sys.modules) - before\n"
            "print(sorted(m for m in new if m.split('.')[0] in ('gevent', 'greenlet') "
            "or m.startswith(('kcpgo.runtime', 'kcpgo.facade'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_the_documented_example_runs():
    example = re.search(r"A minimal driver::\n\n(.*?)\n    # then", sansio.__doc__, re.S).group(1)
    exec(compile("\n".join(line[4:] for line in example.splitlines()), "sansio-doc", "exec"), {})


def test_kcp_waitsnd_counts_queued_segments():
    k = sansio.KCP(7, mtu=124)            # mss 100
    k.send(b"x" * 250)                    # 3 fragments
    assert k.waitsnd == k.wait_snd() == 3
