"""Two kcpgo sessions over a simulated lossy link (kcpgo.sansio.memnet: seeded; fake clock;
no sockets).

1 MB streams must arrive intact (sha256) in stream and message mode, with and without FEC and
a cipher, under 0-30% loss plus reordering, duplication, jitter and delay. Then the link model
itself (LinkProfile, LinkModel), which the UDP relay of kcpgo.testing shares.
"""
from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings, strategies as st

from kcpgo import crypt as crypt_mod
from kcpgo.sansio import Connection
from kcpgo.sansio import LinkModel, LinkProfile, Network
from kcpgo.snmp import Snmp

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
    prof = LinkProfile(loss=loss, duplicate=0.02, reorder=0.02, reorder_delay=15, delay=20,
                       jitter=5)
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
    net = Network(a, b, 11, LinkProfile(loss=0.15, duplicate=0.05, reorder=0.05, reorder_delay=15,
                                        delay=25, jitter=10))
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
    net = Network(a, b, seed, LinkProfile(loss=loss, duplicate=dup, reorder=reorder,
                                          reorder_delay=15, delay=delay, jitter=jitter))
    payload = random.Random(seed).randbytes(size)
    got, _ = net.transfer(payload, chunk=7000, limit_ms=3_600_000)
    assert got == payload


# ---------------------------------------------------------------- the link model (memnet)

def test_link_profile_text_form_and_validation():
    prof = LinkProfile.parse("loss=10%,delay=25ms,jitter=0.002s,reorder=1%,dup=0.01,"
                             "corrupt=0.5%,rate=20mbit,queue=1000")
    assert prof == LinkProfile(loss=0.1, delay=25, jitter=2, reorder=0.01, duplicate=0.01,
                               corrupt=0.005, rate=2.5e6, queue=1000)
    assert LinkProfile.parse(prof.spec()) == prof
    assert LinkProfile().spec() == "" and LinkProfile.parse("") == LinkProfile()
    assert LinkProfile().is_clean and not prof.is_clean
    for bad in (dict(loss=1.5), dict(duplicate=-0.1), dict(delay=-1), dict(corrupt_bits=0),
                dict(queue=-1)):
        with pytest.raises(ValueError):
            LinkProfile(**bad)
    with pytest.raises(ValueError, match="names"):
        LinkProfile.parse("latency=5")


def test_link_model_rate_queue_and_release():
    link = LinkModel(LinkProfile(rate=1000, queue=3, delay=5), random.Random(1), whole_ms=True)
    times = [t for _ in range(5) for t, _ in link.admit(b"x" * 100, 0)]
    assert times == [105, 205, 305]                      # 100 B at 1000 B/s: 100 ms each
    assert link.counters.queue_dropped == 2 and link.held == 3
    link.release(b"x" * 100)
    link.release(b"x" * 100, sent=False)
    assert link.held == 1 and link.admit(b"y" * 10, 400)[0][0] == 415
    c = link.counters
    assert (c.received, c.forwarded, c.send_errors, c.bytes_out) == (6, 1, 1, 100)


def test_link_model_corrupt_and_order():
    rng = random.Random(2)
    link = LinkModel(LinkProfile(corrupt=1.0, corrupt_skip=4), rng)   # one bit each
    for i in range(200):
        ((_, d),) = link.admit(i.to_bytes(4, "big") + bytes(20), 0)
        assert d[:4] == i.to_bytes(4, "big") and d[4:] != bytes(20)
    assert link.counters.corrupted == 200
    jitter = LinkProfile(delay=10, jitter=30)
    kept = LinkModel(jitter, random.Random(3))           # the relay's rule: jitter keeps order
    free = LinkModel(jitter, random.Random(3), keep_order=False, whole_ms=True)
    t_kept = [kept.admit(b"d", i)[0][0] for i in range(200)]
    t_free = [free.admit(b"d", i)[0][0] for i in range(200)]
    assert t_kept == sorted(t_kept) and t_free != sorted(t_free)
    assert all(isinstance(t, int) for t in t_free)


def test_in_memory_corruption_caught_by_cipher_crc():
    """The profile's own ``corrupt`` (not a tamper hook): bit flips never reach the
    application when a cipher is set."""
    a, b = pair(cipher="aes", fec=(3, 2))
    net = Network(a, b, 4, LinkProfile(delay=5, corrupt=0.05, corrupt_bits=2))
    payload = random.Random(4).randbytes(300_000)
    got, _ = net.transfer(payload)
    assert got == payload
    assert net.stats[0].corrupted > 0 and b.snmp.InCsumErrors > 0
    assert net.stats[0].forwarded + net.links[0].held == net.stats[0].received
