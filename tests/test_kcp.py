"""Unit tests of the KCP state machine against kcp-go 5.6.1's rules (docs/protocol.md §1)."""
from __future__ import annotations

import pytest

from kcpgo.sansio import (CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS, FLUSH_ACK_ONLY, FLUSH_FULL,
                          FLUSH_NONE, KCP,
                          Segment, decode_segments, encode_segment)
from kcpgo.sansio.kcpdefs import PROBE_INIT, PROBE_INIT_LATEST
from kcpgo.snmp import Snmp

from tests.support.vectors import h, load

CONV = 0x11223344
M32 = 0xFFFFFFFF


def make(**kw) -> KCP:
    """A KCP with kcp-go defaults except congestion control off (as every kcptun mode)."""
    k = KCP(CONV, snmp=Snmp(), **kw)
    k.set_nodelay(-1, -1, -1, 1)
    return k


def segs(datagrams):
    return [s for d in datagrams for s in decode_segments(d)]


def seg(cmd, sn=0, una=0, ts=0, wnd=32, frg=0, data=b"", conv=CONV):
    return encode_segment(Segment(conv, cmd, frg, wnd, ts, sn, una, data))


def ack(sn, ts, una, wnd=32):
    return seg(CMD_ACK, sn=sn, una=una, ts=ts, wnd=wnd)


# ---------------------------------------------------------------- wire format


def test_first_push_is_byte_identical_to_kcp_go():
    """kcp-go 5.6.1's first datagram of the nocrypt capture, rebuilt from the same call."""
    cap = load("packets.json")["captures"][0]
    assert cap["name"] == "nocrypt_nofec"
    k = KCP(cap["conv"], snmp=Snmp())
    k.set_nodelay(0, 20, 2, 1)
    first = cap["datagrams"][0]
    k.write(h(cap["messages"][0]["data"][0]))
    assert k.flush(first["segments"][0]["ts"]) == [h(first["wire"])]


def test_segmentation_message_mode_frg_counts_down():
    k = make()
    k.send(b"x" * 3000)                       # mss 1376 -> 3 fragments
    out = segs(k.flush(0))
    assert [(s.frg, len(s.data), s.sn) for s in out] == [(2, 1376, 0), (1, 1376, 1), (0, 248, 2)]


def test_write_never_fragments_and_has_no_255_limit():
    k = make()
    k.set_wndsize(1024, 1024)
    k.write(b"y" * (1376 * 300 + 5))
    out = segs(k.flush(0))
    assert len(out) == 32                     # window 32 admitted
    assert all(s.frg == 0 for s in out)
    assert k.wait_snd() == 301


def test_send_rejects_empty_and_too_many_fragments():
    k = make()
    with pytest.raises(ValueError):
        k.send(b"")
    with pytest.raises(ValueError):
        k.send(b"z" * (1376 * 32 + 1))        # D20: default max_fragments = kcp-go's rcv_wnd
    k.send(b"z" * (1376 * 32))
    k.max_fragments = 255                     # the u8 frg field's (and kcp-go's) limit
    with pytest.raises(ValueError):
        k.send(b"z" * (1376 * 255 + 1))
    k.send(b"z" * (1376 * 255))


def test_stream_mode_tops_up_tail_segment():
    k = make()
    k.stream = True
    k.write(b"a" * 100)
    k.write(b"b" * 3000)
    k.send(b"c" * 10)
    assert [len(r[0]) for r in k.snd_queue] == [1376, 1376, 358]
    assert b"".join(r[0] for r in k.snd_queue) == b"a" * 100 + b"b" * 3000 + b"c" * 10


def test_input_errors_keep_earlier_segments():
    a = make()
    good = seg(CMD_PUSH, sn=0, data=b"hi")
    assert a.input(b"\x00" * 23, 0) == -1
    assert a.input(good + seg(CMD_PUSH, sn=1, data=b"x", conv=CONV + 1), 0) == -1
    assert a.recv() == b"hi"
    bad_len = bytearray(seg(CMD_PUSH, sn=1, data=b"abc"))
    bad_len[20] = 200
    assert a.input(bytes(bad_len), 0) == -2
    assert a.input(seg(99, sn=1), 0) == -3
    assert a.snmp.InSegs == 0                 # only counted when Input runs to completion
    assert a.input(seg(CMD_PUSH, sn=1, data=b"ok"), 0) == 0
    assert a.snmp.InSegs == 1


def test_trailing_fragment_shorter_than_header_is_ignored():
    a = make()
    assert a.input(seg(CMD_PUSH, sn=0, data=b"hi") + b"\x01" * 10, 0) == 0
    assert a.recv() == b"hi"


# ---------------------------------------------------------------- ACKs


def test_ack_filter_sends_only_acks_not_covered_by_una_plus_last():
    r = make()
    for sn in (0, 1, 2, 5):
        r.input(seg(CMD_PUSH, sn=sn, ts=100 + sn, data=b"d"), 0)
    out = segs(r.flush(0, ack_only=True))
    assert [(s.cmd, s.sn, s.ts, s.una) for s in out] == [(CMD_ACK, 5, 105, 3)]
    r2 = make()
    r2.input(seg(CMD_PUSH, sn=5, ts=1, data=b"d"), 0)
    r2.input(seg(CMD_PUSH, sn=0, ts=2, data=b"d"), 0)
    out = segs(r2.flush(0, ack_only=True))
    assert [(s.sn, s.ts) for s in out] == [(5, 1), (0, 2)]   # 5 >= rcv_nxt; 0 is the last


def test_duplicates_acked_beyond_window_not():
    r = make()
    r.input(seg(CMD_PUSH, sn=0, data=b"a"), 0)
    r.input(seg(CMD_PUSH, sn=0, data=b"a"), 0)          # duplicate: acked, counted
    r.input(seg(CMD_PUSH, sn=1 + 32, data=b"b"), 0)     # beyond rcv_nxt + rcv_wnd: not acked
    assert r.snmp.RepeatSegs == 2
    assert r._acks[::2] == [0, 0]


def test_window_field_is_free_receive_queue():
    r = make()
    r.set_wndsize(32, 4)
    for sn in range(3):
        r.input(seg(CMD_PUSH, sn=sn, data=b"q"), 0)
    assert segs(r.flush(0, ack_only=True))[0].wnd == 1


def test_ack_nodelay_requests_ack_only_flush_and_slide_requests_full():
    s = make()
    s.ack_nodelay = True
    s.input(seg(CMD_PUSH, sn=0, data=b"a"), 0)
    assert s.flush_requested == FLUSH_ACK_ONLY
    s.flush(0)
    s.write(b"x")
    s.flush(0)
    s.write(b"y")               # queued: the window slid by one, room for it
    s.snd_wnd = 1
    s.input(ack(0, 0, una=1), 5)
    assert s.flush_requested == FLUSH_FULL


def test_slide_with_nothing_queued_leaves_acks_for_the_reply():
    """A slide admits nothing when nothing is queued: no full flush is requested, so this
    input's ACKs wait for the batch's deferred ACK flush, or ride on the reply the application
    writes meanwhile (docs/deviations.md D1). Before, every request/response over smux sent
    the ACK for the reply in a datagram of its own (2 datagrams per round trip)."""
    s = make()
    s.write(b"x")
    s.flush(0)
    s.input(ack(0, 0, una=1) + seg(CMD_PUSH, sn=0, una=1, data=b"reply"), 5)
    assert s.flush_requested == FLUSH_NONE and s.pending_acks == 1
    assert s.update(5) == [] and s.pending_acks == 1       # nothing sent before the reply


# ---------------------------------------------------------------- RTT and RTO


def test_rtt_estimator_kcp_go_formula():
    k = make()
    k.set_nodelay(0, 10, 0, 1)
    k.write(b"a")
    k.flush(1000)                                            # ts 1000
    k.input(ack(0, 1000, una=1), 1080)                       # rtt 80: init
    assert (k.rx_srtt, k.rx_rttvar, k.rx_rto) == (80, 40, 80 + 160)
    for sn, rtt in ((1, 40), (2, 200)):
        k.write(b"a")
        k.flush(2000)
        k.input(ack(sn, 2000, una=sn + 1), 2000 + rtt)
    # rtt 40: delta -40 -> srtt 75; 40 < 75 - 40 is False -> rttvar += (40 - 40) >> 2 = 40
    # rtt 200: delta 125 -> srtt 75 + 15 = 90; rttvar += (125 - 40) >> 2 = 61
    assert (k.rx_srtt, k.rx_rttvar) == (90, 61)
    assert k.rx_rto == 90 + 61 * 4


def test_rtt_low_sample_has_one_32nd_weight():
    k = make()
    k.rx_srtt, k.rx_rttvar = 100, 10
    k._update_rtt(60)       # srtt = 100 + (-40 >> 3) = 95; 60 < 95 - 10 -> 1/32 branch
    assert k.rx_srtt == 95
    assert k.rx_rttvar == 10 + ((40 - 10) >> 5)


def test_rto_clamped_to_minrto_and_60s():
    k = make()
    k._update_rtt(0)
    assert k.rx_rto == 100                 # max(rx_minrto, srtt + max(interval, 0))
    k.set_nodelay(1, 10, 0, 1)
    k._update_rtt(0)
    assert k.rx_rto == 30
    k.rx_srtt = 0
    k._update_rtt(100000)
    assert k.rx_rto == 60000


@pytest.mark.parametrize("nodelay,expected", [(0, [200, 400, 600, 800]), (1, [200, 300, 400, 500])])
def test_rto_backoff_is_linear(nodelay, expected):
    """kcp-go: rto += rx_rto (nodelay 0) or rx_rto/2 (nodelay 1); C KCP doubles instead."""
    k = make()
    k.set_nodelay(nodelay, 10, 0, 1)
    k.write(b"x")
    now = 0
    times = []
    k.flush(now)
    sent_at = 0
    while len(times) < 4:
        now += 1
        for s in segs(k.update(now)):
            if s.cmd == CMD_PUSH:
                times.append(now - sent_at)
                sent_at = now
    assert times == expected
    assert k.snmp.LostSegs == 4


def test_check_is_none_when_idle_else_next_useful_flush():
    a, b = make(), make()
    assert a.check(0) is None
    a.write(b"x")
    assert a.check(0) == 0                    # never flushed: kcp-go's first update is at once
    first = a.flush(0)
    assert a.check(0) == 200                  # in flight, nothing else to do: its RTO
    a.write(b"y")
    assert a.check(0) == 100                  # queued data: the next tick (kcp-go's interval)
    second = a.flush(100)
    for d in first + second:
        b.input(d, 100)
    for d in b.flush(100):
        a.input(d, 101)
    a.flush(101)
    assert (b.recv(), b.recv()) == (b"x", b"y")
    b.flush(101)
    assert a.check(105) is None and b.check(105) is None


# ---------------------------------------------------------------- fast / early retransmit


def _send_n(k, n, now=0):
    k.set_wndsize(128, 128)
    for i in range(n):
        k.write(bytes([i]) * 10)
    return segs(k.flush(now))


def test_early_retransmit_fires_with_fastresend_off():
    k = make()
    k.set_nodelay(0, 10, 0, 1)
    _send_n(k, 3)
    k.input(ack(1, 0, una=0), 5)             # seg 0 now has one duplicate ACK
    out = segs(k.flush(6))                    # no new segment admitted -> early retransmit
    assert [(s.cmd, s.sn) for s in out] == [(CMD_PUSH, 0)]
    assert k.snmp.EarlyRetransSegs == 1 and k.snmp.FastRetransSegs == 0


def test_fast_retransmit_after_resend_dup_acks_when_new_data_admitted():
    k = make()
    k.set_nodelay(0, 10, 2, 1)
    _send_n(k, 4)
    k.input(ack(1, 0, una=0), 5)
    k.write(b"new")
    out = segs(k.flush(6))                    # fastack 1 < 2 and a new segment: nothing resent
    assert [s.sn for s in out] == [4]
    k.input(ack(2, 0, una=0), 7)
    k.write(b"new2")
    out = segs(k.flush(8))                    # fastack 2 >= resend 2
    assert [s.sn for s in out] == [0, 5]
    assert k.snmp.FastRetransSegs == 1


def test_dup_ack_of_later_transmission_does_not_count():
    """The ts test: an ACK for a segment first sent before seg 0's retransmission doesn't count."""
    k = make()
    k.set_nodelay(0, 10, 0, 1)
    _send_n(k, 3, now=0)
    k.input(ack(1, 0, una=0), 5)
    assert [s.sn for s in segs(k.flush(6))] == [0]            # early retransmit at ts 6
    k.input(ack(2, 0, una=0), 7)                              # acked seg sent at ts 0 < 6
    assert segs(k.flush(8)) == []


def test_cwnd_wraps_to_ssthresh_minus_one():
    """nc=0 and fastresend=0: cwnd = ssthresh + 0xFFFFFFFF mod 2^32 (§1.9 phase 6)."""
    k = make()
    k.set_nodelay(0, 10, 0, 0)
    k.cwnd = 8
    _send_n(k, 8)
    k.input(ack(1, 0, una=0), 5)
    k.flush(6)
    assert k.ssthresh == 4 and k.cwnd == 3
    assert k.incr == (3 * k.mss) & M32


def test_congestion_control_starts_at_zero_window():
    k = KCP(CONV, snmp=Snmp())               # kcp-go defaults: nc = 0
    k.write(b"x")
    assert segs(k.flush(0)) == []             # cwnd 0: first flush only raises it to 1
    assert [s.sn for s in segs(k.flush(1))] == [0]


def test_rto_loss_collapses_cwnd():
    k = make()
    k.set_nodelay(0, 10, 0, 0)
    k.cwnd = 16
    _send_n(k, 16)
    k.flush(1000)
    assert k.cwnd == 1 and k.ssthresh == 8


# ---------------------------------------------------------------- receive side


def test_fragmented_message_from_c_peer_reassembles():
    r = make()
    parts = [b"A" * 5, b"B" * 6, b"C" * 7]
    # deliver out of order; frg counts down 2, 1, 0
    r.input(seg(CMD_PUSH, sn=2, frg=0, data=parts[2]), 0)
    r.input(seg(CMD_PUSH, sn=0, frg=2, data=parts[0]), 0)
    assert r.peek_size() == -1 or r.peek_size() == 18
    assert r.peek_size() == -1
    r.input(seg(CMD_PUSH, sn=1, frg=1, data=parts[1]), 0)
    assert r.peek_size() == 18
    assert r.recv() == b"".join(parts)
    assert r.recv() is None


def test_wins_sent_when_full_receive_queue_drains():
    r = make()
    r.set_wndsize(32, 2)
    r.input(seg(CMD_PUSH, sn=0, data=b"a") + seg(CMD_PUSH, sn=1, data=b"b"), 0)
    assert segs(r.flush(0, ack_only=True))[0].wnd == 0       # queue full
    assert r.recv() == b"a"
    out = segs(r.flush(1))
    assert [(s.cmd, s.wnd) for s in out] == [(CMD_WINS, 1)]
    # If rcv_buf refills the queue during recv, kcp-go sends no WINS (the check comes after).
    r.input(seg(CMD_PUSH, sn=2, data=b"c"), 0)
    r.input(seg(CMD_PUSH, sn=3, data=b"d"), 0)
    r.flush(2, ack_only=True)
    assert r.recv() == b"b"
    assert [s.cmd for s in segs(r.flush(3))] == []


def test_wask_answered_and_zero_window_probed():
    s = make()
    s.input(seg(CMD_WASK, wnd=0), 0)
    assert s.rmt_wnd == 0
    out = segs(s.flush(0))
    assert [x.cmd for x in out] == [CMD_WINS]
    s.write(b"blocked")
    probes = []
    for now in range(1, 40000, 50):
        probes += [(now, x.cmd) for x in segs(s.update(now)) if x.cmd == CMD_WASK]
    # First WASK 7000 ms after the window closed, then +10500, +15750 (§1.9 phase 2).
    assert [p[1] for p in probes[:3]] == [CMD_WASK] * 3
    gaps = [b[0] - a[0] for a, b in zip(probes, probes[1:])]
    assert probes[0][0] in range(7000, 7060)
    assert gaps[:2] == [10500, 15750]


def test_recovered_input_does_not_update_window_or_rtt():
    k = make()
    k.write(b"a")
    k.flush(0)
    k.input(ack(0, 0, una=1, wnd=7), 50, regular=False)
    assert k.rmt_wnd == 32 and k.rx_srtt == 0
    assert k.snd_una == 1                                  # una still processed


def test_sequence_and_clock_wrap_around_u32():
    a, b = make(), make()
    for k in (a, b):
        k.set_nodelay(1, 10, 2, 1)
        k.set_wndsize(64, 64)
    start = M32 - 20
    a.snd_una = a.snd_nxt = a._ack_hi + start + 1
    a._ack_hi = start - 1
    b.rcv_nxt = start
    payload = bytes(range(256)) * 200
    a.write(payload)
    got = []
    now = M32 - 100                             # the clock wraps too
    wire_sns = set()
    for step in range(2000):
        for d in a.update(now):
            for s in decode_segments(d):
                wire_sns.add(s.sn)
            b.input(d, now & M32)
        for d in b.update(now, flush_acks=True):
            a.input(d, now & M32)
        while (m := b.recv()) is not None:
            got.append(m)
        now += 1
    assert b"".join(got) == payload
    assert 0 in wire_sns and M32 in wire_sns


def test_garbage_input_never_raises():
    import random
    rng = random.Random(7)
    k = make()
    cap = load("packets.json")["captures"][0]
    samples = [h(d["wire"]) for d in cap["datagrams"]]
    for _ in range(5000):
        d = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 4)):
            if d:
                d[rng.randrange(len(d))] = rng.randrange(256)
        if rng.random() < 0.3:
            d = d[: rng.randrange(len(d) + 1)]
        k.input(bytes(d), rng.randrange(1 << 32))
        k.flush(rng.randrange(1 << 32))
    assert len(k.rcv_buf) <= k.rcv_wnd


def test_closed_peer_window_is_probed_with_nothing_queued():
    """A writer blocked on rmt_wnd == 0 queues nothing, yet the window must still be probed
    (kcp-go listeners open new sessions with 32-segment windows and announce no increase)."""
    s = make()
    s.input(seg(CMD_WINS, wnd=0), 0)
    assert s.check(0) == 0                    # first flush starts the probe timer
    assert segs(s.update(0)) == []
    assert s.check(1) == PROBE_INIT
    s.probe_init = PROBE_INIT_LATEST
    s.input(seg(CMD_WINS, wnd=0), 2)
    probes = [now for now in range(2, 20000) if any(x.cmd == CMD_WASK
                                                    for x in segs(s.update(now)))]
    assert probes[0] == PROBE_INIT            # the timer set before the change still runs
    assert probes[1] - probes[0] == PROBE_INIT + PROBE_INIT // 2
