"""Soak through the lossy-link emulator (kcpgo.testing.RelayProcess, a child process): 50 ms RTT, 10 % loss
each way, 1 % reordering, 1 % duplication. An echo each way, checked by sha256 on both sides,
for kcpgo<->kcpgo, kcpgo -> kcp-go and kcp-go -> kcpgo, with no cipher, aes and salsa20, and
FEC off, 10/3 and 3/2 (27 cells).

Normal suite: 1 MiB each way per cell. ``KCPGO_SLOW=1``: 20 MiB each way per cell, and the
long variant, 50 MiB each way at 30 % loss. The same runs from the command line (with a
report per cell): ``python tools/soak.py --mb 20`` and ``python tools/soak.py --mb 50 --loss
30%``.

Corruption: with a cipher, bit flips on the link never reach the application (the CRC32
check drops the datagram, InCsumErrors counts it, KCP retransmits). Without a cipher nothing
checks the bytes end to end: a flipped payload bit is delivered as is (see the last test).
On a real network the UDP checksum catches most single-bit errors, but it is optional in
IPv4, only 16 bits, and recomputed by middleboxes: use a cipher when integrity matters.
"""
from __future__ import annotations

import socket

import pytest

import kcpgo
from kcpgo.sansio import CMD_PUSH, Segment, encode_segment
from kcpgo.snmp import Snmp
from kcpgo.testing import Impairment, Relay
from tests.support.gopeer import go_available
from tools.soak import CRYPTS, FECS, PAIRINGS, run_cell, soak_link, summary_line

GO_OK, GO_REASON = go_available()
MiB = 1024 * 1024

CELLS = [(p, c, f) for p in PAIRINGS for c in CRYPTS for f in FECS]


def cell_id(cell):
    p, c, (ds, ps) = cell
    return f"{p}-{c or 'nocrypt'}-{'fec%d_%d' % (ds, ps) if ds else 'nofec'}"


def _soak(pairing, crypt, fec, nbytes, link, timeout):
    if "go" in pairing and not GO_OK:
        pytest.skip(GO_REASON)
    r = run_cell(pairing, crypt, fec[0], fec[1], nbytes, link, seed=11, timeout=timeout)
    print(summary_line(r))
    assert r["ok"], r
    assert r["sent"] == r["echoed"] == nbytes and r["received_by_server"] == nbytes, r
    link_counts = r["link"]
    assert link_counts["up"]["dropped"] > 0 and link_counts["down"]["dropped"] > 0
    return r


@pytest.mark.parametrize("cell", CELLS, ids=[cell_id(c) for c in CELLS])
def test_soak_short(cell):
    _soak(*cell, nbytes=1 * MiB, link=soak_link(0.10), timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS, ids=[cell_id(c) for c in CELLS])
def test_soak_20mib(cell):
    _soak(*cell, nbytes=20 * MiB, link=soak_link(0.10), timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS, ids=[cell_id(c) for c in CELLS])
def test_soak_long_50mib_30pct_loss(cell):
    _soak(*cell, nbytes=50 * MiB, link=soak_link(0.30), timeout=1800)


@pytest.mark.parametrize("pairing", ["py-py", "py-go", "go-py"])
@pytest.mark.parametrize("crypt", ["aes", "salsa20"])
def test_corruption_with_cipher_never_delivered(pairing, crypt):
    """2 % of datagrams get 1-3 flipped bits each way (on top of the soak link): the echo is
    still exact on both sides and the flips were caught by the CRC check."""
    link = soak_link(0.10, corrupt=0.02)
    link.corrupt_bits = 3
    r = _soak(pairing, crypt, (10, 3), 1 * MiB, link, timeout=120)
    assert r["link"]["up"]["corrupted"] > 0 and r["link"]["down"]["corrupted"] > 0
    if pairing != "py-go":                 # kcpgo receives both directions' flips
        assert r["snmp"]["InCsumErrors"] > 0
    assert r["snmp"]["KCPInErrors"] == 0


def test_corruption_without_cipher_is_delivered():
    """The documented risk: with no cipher (and no FEC) a flipped payload bit reaches the
    application. The relay flips one bit after the 24-byte KCP header of every datagram."""
    snmp = Snmp()
    with kcpgo.listen(("127.0.0.1", 0), snmp=snmp) as ln:
        with Relay(ln.getsockname(), up=Impairment(corrupt=1.0, corrupt_skip=24),
                   seed=5) as relay:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind(("127.0.0.1", 0))
            payload = bytes(range(100))
            u.sendto(encode_segment(Segment(4242, CMD_PUSH, 0, 32, 0, 0, 0, payload)),
                     relay.address)
            ln.settimeout(3)
            s, _ = ln.accept()
            s.settimeout(3)
            got = s.recv(1000)
            u.close()
            s.close()
        assert relay.counters()["up"]["corrupted"] == 1
    assert len(got) == len(payload) and got != payload
    assert bin(int.from_bytes(got, "big") ^ int.from_bytes(payload, "big")).count("1") == 1
    assert snmp.InCsumErrors == 0 and snmp.KCPInErrors == 0     # nothing noticed


def test_soak_prints_the_link_once_and_one_line_per_cell():
    """``tools/soak.py``: the link once, then one line per cell; the relay children's
    ``netem: seed ...`` banner (about 300 characters) no longer repeats before every cell
    (first-hour log, problem 13)."""
    import subprocess
    import sys
    from tests.support.children import ROOT, child_env
    proc = subprocess.run([sys.executable, "tools/soak.py", "--mb", "0.05", "--pairing", "py-py",
                           "--crypt", "nocrypt", "--fec", "off", "--fec", "10/3"], cwd=ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "netem: seed" not in proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("soak: 52,428 bytes each way; link each way: loss=0.1,"), lines
    assert [line.split()[:5] for line in lines[1:3]] == [
        ["py-py", "nocrypt", "fec", "off", "OK"], ["py-py", "nocrypt", "fec", "10/3", "OK"]]
    assert lines[3] == "2/2 cells OK", lines
