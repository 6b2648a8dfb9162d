"""Rate limiting (issue 13 item 3): kcp-go latest's ``SetRateLimit`` as ``Options.rate_limit``,
``KCPSocket.set_rate_limit`` and ``SmuxSession.set_rate_limit``.

The reference is kcp-go v5.6.72 ``sess.go``: ``rate.NewLimiter(bytesPerSecond, 64 * 1500)``
(golang.org/x/time/rate: a token bucket that starts full), ``WaitN(len(batch))`` before each
transmit batch, wire bytes counted, 0 = off (docs/protocol.md §5.9).

* The bucket (``kcpgo.sansio.ratelimit``) is tested with a fake clock: its expected values are
  the token-bucket arithmetic (tokens = min(burst, held + rate x elapsed)).
* The channel is tested on the loopback. "Within 5 %": the achieved rate of a 3-4 MB transfer
  at 1 and 4 MB/s, leaving out one burst at each end (the bucket starts full, and a flush may
  borrow up to one burst at the end). Measured on a 2-core machine with
  ``tools/bench_ratelimit.py``: payload 0.99-1.006 x the limit, wire 1.00-1.012 x, no
  retransmission (fast3, window 1024; fast, fast2, normal, kcp-go's defaults with window 32
  alike; the same with two CPU-bound processes running, and under gevent's monkey-patching).
  The test retries once when the rate comes out low: a loaded machine can only send less, and
  less is not what the limit is about; never more.
* ACK-only flushes skip the wait (``ACKS_UNPACED``): measured with ``bench_ratelimit.py
  --bidir`` (both ends sending 3 MB at 1 MB/s each): with ACKs waiting with the data as kcp-go
  does, srtt rose from 1 ms to 70-80 ms and 64 segments were retransmitted with window 1024;
  with ACKs unpaced, srtt 1 ms and none. The rate holds either way (ACKs are charged).
* Why a flush goes out at once and the next waits (instead of queueing datagrams after KCP
  stamped them, as kcp-go): the first design queued; ``bench_ratelimit.py`` then measured
  payload at 0.83 x the limit at 1 MB/s and 0.42 x at 4 MB/s (window 1024, fast3), the rest
  spurious RTO retransmissions of segments still waiting in the queue (their wait counted in
  RTT samples: srtt 300-800 ms).
"""
from __future__ import annotations

import faulthandler
import hashlib
import threading
import time

import pytest

import kcpgo
from kcpgo.runtime import channel as channel_mod
from kcpgo.runtime import pacing as pacing_mod
from kcpgo.runtime.clock import now_ms
from kcpgo.sansio.ratelimit import DEFAULT_BURST, TokenBucket
from kcpgo.snmp import Snmp
from tools.bench_ratelimit import measure

LOCAL = ("127.0.0.1", 0)


@pytest.fixture(autouse=True)
def _guard():
    """No test may hang the suite (the blocking calls run on real locks in threads)."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# ---------------------------------------------------------------------- the bucket (sans-IO)


def test_burst_is_kcp_gos():
    """kcp-go sess.go ``SetRateLimit``: ``rate.NewLimiter(..., maxBatchSize*mtuLimit)`` with
    maxBatchSize 64 and mtuLimit 1500."""
    assert DEFAULT_BURST == 96000
    assert TokenBucket(1000).burst == 96000


def test_bucket_starts_full_and_refills_at_the_rate():
    """x/time/rate: a new limiter holds ``burst`` tokens; tokens = min(burst, held + rate x
    elapsed)."""
    b = TokenBucket(1000, burst=5000, now=100)
    assert b.available(100) == 5000
    assert b.try_take(5000, 100)
    assert b.available(100) == 0
    assert not b.try_take(1, 100)
    assert b.available(101) == 1               # 1000 B/s = 1 byte per ms
    assert b.available(1600) == 1500
    assert b.available(60_000) == 5000         # never above the burst


def test_delay_is_exact_including_rounding():
    """ceil(missing bytes / rate) ms: at 3 B/s one byte takes 333.3 ms, so 334 ms."""
    b = TokenBucket(3, burst=10, now=0)
    assert b.try_take(10, 0)
    assert b.delay(1, 0) == 334
    assert not b.try_take(1, 333)
    assert b.try_take(1, 334)
    b = TokenBucket(1_000_000, burst=96000, now=0)
    b.take(96000, 0)
    assert b.delay(1400, 0) == 2                # 1.4 ms -> 2
    assert not b.try_take(1400, 1) and b.try_take(1400, 2)
    assert b.delay(0, 2) == 0


def test_borrow_goes_into_debt_down_to_the_allowance():
    """``borrow``: the take may leave the bucket at most that deep in debt; ``delay(0)`` is
    the time to repay it at the rate."""
    b = TokenBucket(1000, burst=1000, now=0)
    assert b.try_take(1000, 0)
    assert b.try_take(500, 0, borrow=1000)      # -500
    assert b.available(0) == -500
    assert not b.try_take(600, 0, borrow=1000)  # would reach -1100
    assert b.available(0) == -500               # a refused take changes nothing
    assert b.delay(0, 0) == 500
    assert b.delay(600, 0, borrow=1000) == 100
    assert b.try_take(600, 100, borrow=1000)


def test_request_above_the_burst_needs_a_full_bucket():
    """x/time/rate refuses n > burst; kcpgo counts such a request as ``burst`` (a datagram is
    never that large, but the bucket must not deadlock on one)."""
    b = TokenBucket(100, burst=1000, now=0)
    assert b.try_take(2500, 0)
    assert b.available(0) == -1500
    assert b.delay(2500, 0) == 25_000           # back to a full 1000 bytes: 2500 B at 100 B/s


def test_take_always_succeeds_and_charges():
    b = TokenBucket(1000, burst=1000, now=0)
    b.take(3000, 0)
    assert b.available(0) == -2000
    assert b.delay(0, 0) == 2000


def test_set_rate_keeps_the_tokens_and_refills_at_the_old_rate_until_now():
    b = TokenBucket(1000, burst=10_000, now=0)
    b.take(10_000, 0)
    b.set_rate(2000, 1000)                      # 1 s at 1000 B/s: 1000 held
    assert b.available(1000) == 1000
    assert b.available(2000) == 3000            # then 2000 B/s
    assert b.rate == 2000


@pytest.mark.parametrize("rate,burst", [(0, 10), (-1, 10), (True, 10), (1.5, 10), ("9", 10),
                                        (10, 0), (10, 2.0)])
def test_bucket_rejects_bad_values(rate, burst):
    with pytest.raises(ValueError, match="must be an int >= 1"):
        TokenBucket(rate, burst)


@pytest.mark.parametrize("borrow", [0, 96000])
def test_long_run_rate_with_a_fake_clock(borrow):
    """A sender that sends a 1400-byte datagram whenever ``try_take`` allows, checking every
    ms for 20 s at 1 MB/s: the total is the rate x time plus at most one burst (plus the
    allowed debt), and at least rate x time minus one datagram (the definition of a token
    bucket)."""
    rate, t_end = 1_000_000, 20_000
    b = TokenBucket(rate, now=0)
    sent = 0
    for now in range(t_end + 1):
        while b.try_take(1400, now, borrow):
            sent += 1400
    assert rate * t_end // 1000 - 1400 <= sent <= DEFAULT_BURST + borrow + rate * t_end // 1000


# ---------------------------------------------------------------------- sessions


def _pair(client_snmp=None, **opts):
    ln = kcpgo.listen(LOCAL, **opts)
    ln.settimeout(10)
    c = kcpgo.dial(ln.getsockname(), timeout=10, snmp=client_snmp, **opts)
    c.sendall(b"?")
    s, _ = ln.accept()
    s.settimeout(10)
    assert s.recv(1) == b"?"
    return ln, c, s


@pytest.mark.parametrize("rate,nbytes", [(1_000_000, 3_000_000), (4_000_000, 4_000_000)])
def test_achieved_rate_within_5_percent(rate, nbytes):
    """Issue 13: "measured to hold the rate within 5 % on loopback". Payload bytes per second
    at the receiver between the first and the last burst (module docstring); with no cipher
    and no FEC a 1400-byte datagram carries 1376 of them, so the payload rate sits about
    1.7 % under the wire rate the bucket counts. The upper bound is never retried."""
    for attempt in range(2):
        res = measure(rate, nbytes, mode="fast3", window=(1024, 1024))[0]
        assert res["payload_ratio"] <= 1.05, res
        assert res["wire_ratio"] <= 1.05, res
        if res["payload_ratio"] >= 0.95:
            break
    assert res["payload_ratio"] >= 0.95, res


def test_what_exceeds_the_queue_is_dropped_and_retransmitted(monkeypatch):
    """With a burst of 3000 bytes a 64-segment flush cannot go out at once: the rest waits in
    the paced queue, whose bound (``pace_queue_limit``: the burst or 250 ms of the rate) drops
    the excess like a lost datagram (``pace_drops``, ``send_drops``); KCP retransmits it, and
    every byte arrives, in order (sha256), while the wire rate stays within the limit."""
    monkeypatch.setattr(pacing_mod, "DEFAULT_BURST", 3000)
    snmp = Snmp()
    rate = 200_000
    data = bytes(range(256)) * 1200                  # 307200 bytes
    ln, c, s = _pair(snmp, mode="fast3", window=(1024, 1024))
    with ln, c, s:
        c.set_rate_limit(rate)
        assert c._chan.rate_limit == rate
        assert channel_mod.pace_queue_limit(rate) == 50_000
        out0 = snmp.OutBytes
        t0 = time.monotonic()
        sender = threading.Thread(target=c.sendall, args=(data,), daemon=True)
        sender.start()
        got = bytearray()
        while len(got) < len(data):
            got += s.recv(65536)
        elapsed = time.monotonic() - t0
        sender.join(10)
        wire = snmp.OutBytes - out0
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        assert c._chan.pace_drops > 0
        assert c._chan.endpoint.send_drops >= c._chan.pace_drops
        # the bucket: at most its burst, plus one burst of debt, plus rate x time (the
        # receiver saw the last byte after the sender sent it: time is on the long side)
        assert wire <= 2 * 3000 + rate * elapsed, (wire, elapsed)
        assert elapsed >= (len(data) - 2 * 3000) / rate


def test_acks_are_not_held_back_by_a_bucket_in_debt():
    """ACKS_UNPACED (module docstring): a session whose bucket is ~90 KB in debt at 1000 B/s
    (its data flushes wait about 90 s) still ACKs what it receives at once, so its peer's
    transfer finishes in seconds. With ACKs waiting for the bucket (kcp-go's way) this test
    fails: measured with ACKS_UNPACED set to False, the peer sent a segment 20 times unheard
    and its session failed (``ConnectionResetError``, dead link)."""
    ln, c, s = _pair(mode="fast3", window=(1024, 1024))
    with ln, c, s:
        s.set_rate_limit(1000)
        s.send(b"z" * 300_000)                        # two 64-segment flushes: into debt
        deadline = time.monotonic() + 5
        while s._chan._bucket.available(now_ms()) >= 0:
            assert time.monotonic() < deadline, "the bucket never went into debt"
            time.sleep(0.01)
        payload = b"a" * 100_000
        t0 = time.monotonic()
        c.sendall(payload)
        got = bytearray()
        while len(got) < len(payload):
            got += s.recv(65536)
        c.drain(10)                                   # every segment acknowledged
        assert time.monotonic() - t0 < 8
        assert got == payload


def test_setter_validates_and_zero_turns_it_off():
    """``set_rate_limit``: an int >= 0 (``ValueError`` otherwise, as ``Options``); 0 = off
    (kcp-go ``SetRateLimit(0)``); what waited is sent at once."""
    ln, c, s = _pair()
    with ln, c, s:
        for bad in (-1, 1.5, True, "1000", None):
            with pytest.raises(ValueError, match="int >= 0"):
                c.set_rate_limit(bad)
        assert c._chan.rate_limit == 0
        c.set_rate_limit(50_000)
        assert c._chan.rate_limit == 50_000
        c.set_rate_limit(80_000)                      # a new rate keeps the bucket
        assert c._chan.rate_limit == 80_000
        c.set_rate_limit(0)
        assert c._chan.rate_limit == 0 and c._chan.paced_bytes == 0
        c.sendall(b"after")
        assert s.recv(10) == b"after"


def test_smux_session_setter():
    """``SmuxSession.set_rate_limit`` paces the KCP session under all its streams."""
    with kcpgo.listen_smux(LOCAL, timeout=10) as ln:
        with kcpgo.dial_smux(ln.getsockname(), timeout=10) as sess:
            with pytest.raises(ValueError):
                sess.set_rate_limit(-5)
            sess.set_rate_limit(100_000)
            assert sess._chan.rate_limit == 100_000
            st = sess.open_stream()
            st.sendall(b"ping")
            srv, _ = ln.accept()
            with st, srv:
                assert srv.recv(4) == b"ping"


def test_options_field_validated():
    """README "Session options": ``rate_limit`` is an int >= 0 in bytes per second, default
    0 (kcp-go: off by default)."""
    assert kcpgo.Options().rate_limit == 0
    assert kcpgo.Options(rate_limit=1_000_000).rate_limit == 1_000_000
    for bad in (-1, 1.5, True, "1000", None):
        with pytest.raises(ValueError, match="rate_limit"):
            kcpgo.Options(rate_limit=bad)


def test_options_rate_limit_reaches_every_session():
    """``dial(rate_limit=...)`` and ``listen(rate_limit=...)`` apply the limit to the client's
    and to every accepted session, before the first datagram."""
    ln, c, s = _pair(rate_limit=300_000)
    with ln, c, s:
        assert c._chan.rate_limit == 300_000
        assert s._chan.rate_limit == 300_000
