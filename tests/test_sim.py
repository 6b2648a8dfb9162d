"""Two kcpgo sessions over a simulated lossy link (seeded; fake clock; no sockets).

1 MB streams must arrive intact (sha256) in stream and message mode, with and without FEC and
a cipher, under 0-30% loss plus reordering, duplication, jitter and delay.
"""
from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings, strategies as st

from kcpgo import crypt as crypt_mod
from kcpgo.sansio import Connection
from kcpgo.snmp import Snmp

from kcpgo.sansio import LinkProfile, Network

KEY = crypt_mod.derive_key("kcpgo-sim")
MB = 1_000_000


def pair(*, cipher=None, fec=(0, 0), stream=True, mode="fast3", window=256, mtu=1400, seed=0):
    ends = []
    for _ in range(2):
        crypt = crypt_mod.new(cipher, KEY) if cipher else None
        c = Connection(0xC0FFEE, crypt=crypt, data_shards=fec[0], parity_shards=fec[1],
                       mtu=mtu, mode=mode, snmp=Snmp())
        c.kcp.stream = stream
        c.kcp.set_wndsize(window, window)
        ends.append(c)
    return ends


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.mark.parametrize("loss", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("fec", [(0, 0), (10, 3), (3, 2)], ids=["nofec", "fec10_3", "fec3_2"])
@pytest.mark.parametrize("cipher", [None, "aes", "salsa20"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "message"])
def test_megabyte_survives_lossy_link(loss, fec, cipher, stream):
    seed = hash((loss, fec, cipher, stream)) & 0xFFFF
    a, b = pair(cipher=cipher, fec=fec, stream=stream)
    prof = LinkProfile(loss=loss, dup=0.02, reorder=0.02, delay=20, jitter=5)
    net = Network(a, b, seed, prof)
    payload = random.Random(seed).randbytes(MB)
    got, _ = net.transfer(payload)
    assert sha(got) == sha(payload), f"stalled at {len(got)} bytes, t={net.now} ms"
    if loss and fec != (0, 0):
        assert b.snmp.FECRecovered > 0
    if loss:
        assert a.snmp.RetransSegs > 0
    assert b.snmp.InCsumErrors == 0 and b.snmp.KCPInErrors == 0


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "message"])
def test_both_directions_at_once_with_cipher_and_fec(stream):
    a, b = pair(cipher="aes-128", fec=(10, 3), stream=stream)
    net = Network(a, b, 11, LinkProfile(loss=0.15, dup=0.05, reorder=0.05, delay=25, jitter=10))
    payload = random.Random(5).randbytes(MB)
    got_b, got_a = net.transfer(payload, both_ways=True)
    assert sha(got_b) == sha(payload) and sha(got_a) == sha(payload)


def test_fec_on_one_side_only_autotunes():
    """The FEC-less receiver decodes the sender's 10/3 framing and recovers with it."""
    a, _ = pair(fec=(10, 3))
    _, b = pair()
    net = Network(a, b, 3, LinkProfile(loss=0.1, delay=10))
    payload = random.Random(3).randbytes(MB)
    got, _ = net.transfer(payload)
    assert got == payload
    assert b.codec.fec_decoder is not None
    assert (b.codec.fec_decoder.data_shards, b.codec.fec_decoder.parity_shards) == (10, 3)
    assert b.snmp.FECRecovered > 0


def test_kcptun_like_settings():
    a, b = pair(cipher="aes", fec=(10, 3), mode="fast3", mtu=1350)
    a.kcp.set_wndsize(128, 512)
    b.kcp.set_wndsize(1024, 1024)
    net = Network(a, b, 9, LinkProfile(loss=0.05, delay=15, jitter=5))
    payload = random.Random(9).randbytes(MB)
    got, _ = net.transfer(payload)
    assert got == payload
    assert a.kcp.mss == 1350 - 24 - 20 - 8


def test_corruption_rejected_by_cipher_crc():
    """Random bit flips on the wire never reach the application when a cipher is set."""
    def flip(rng, d):
        if rng.random() < 0.05:
            d = bytearray(d)
            d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
            return bytes(d)
        return d
    a, b = pair(cipher="aes", fec=(3, 2))
    net = Network(a, b, 4, LinkProfile(delay=5), tamper=flip)
    payload = random.Random(4).randbytes(300_000)
    got, _ = net.transfer(payload)
    assert got == payload
    assert b.snmp.InCsumErrors > 0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), loss=st.floats(0, 0.4), dup=st.floats(0, 0.3),
       reorder=st.floats(0, 0.3), delay=st.integers(0, 60), jitter=st.integers(0, 40),
       stream=st.booleans(), fec=st.sampled_from([(0, 0), (2, 1), (4, 2)]),
       nodelay=st.sampled_from(["normal", "fast3"]), window=st.sampled_from([4, 32, 128]),
       size=st.integers(1, 60_000))
def test_any_link_delivers_exactly(seed, loss, dup, reorder, delay, jitter, stream, fec, nodelay,
                                   window, size):
    a, b = pair(fec=fec, stream=stream, mode=nodelay, window=window)
    net = Network(a, b, seed, LinkProfile(loss=loss, dup=dup, reorder=reorder, delay=delay,
                                          jitter=jitter))
    payload = random.Random(seed).randbytes(size)
    got, _ = net.transfer(payload, chunk=7000, limit_ms=3_600_000)
    assert got == payload
