"""A lost window update costs about an RTO, and a bulk batch's ACKs announce the window the
woken reader opened (docs/deviations.md D60).

The input: ``bench lossy --fec 10/3`` (50 ms RTT, 5 % loss each way, windows 1024). A hole that
FEC cannot fill holds up to a window of segments at the receiver; when the retransmission fills
it they all reach the receive queue at once, so the ACK sent before the application read them
announced window 0, and the window reopened only by a WINS. When that WINS was lost (5 %), the
sender sat out its zero-window probe: 500 ms, 1,250 ms if the probe's answer was lost too, and
7 s with kcp-go 5.6.1's timer (§1.9 phase 2). In the in-memory model below, 3 of 6 seeds lost
0.6-1.35 s that way (17.6 s with 5.6.1's timer).

The fixes, each checked here:

* sender: while the peer's window is closed, one WASK goes out after rx_rto, before the
  ``probe_init`` schedule (RFC 1122 section 4.2.2.17 probes a zero window on the RTO; kcp-go
  waits for probe_init); it does not count toward the dead link (D47);
* receiver: a WINS that announced an opened window is repeated after max(rx_rto, interval),
  then twice the wait, at most ``WINS_RETRIES`` times, until a PUSH or WASK shows the peer
  heard it;
* runtime: a bulk batch's ACKs go out after the reader it woke has read (a subprocess under
  ``gevent.monkey.patch_all()``).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from typing import List, Tuple

import pytest

from kcpgo.sansio import Connection
from kcpgo.sansio.kcpdefs import WINS_RETRIES
from kcpgo.sansio.memnet import LinkProfile, Network
from kcpgo.sansio.wire import (CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS, Segment, decode_segments,
                               encode_segment)
from kcpgo.snmp import Snmp

CONV = 0x1234


def segs(datagrams: List[bytes]) -> list:
    return [s for d in datagrams for s in decode_segments(d)]


def conn(recovery: bool, **kw) -> Connection:
    return Connection(CONV, mode="fast3", window=(64, 64), probe_init=500,
                      window_recovery=recovery, snmp=Snmp(), **kw)


def closed_window_pair(recovery: bool) -> Tuple[Connection, Connection, int, int]:
    """A sender that filled a receiver's 64-segment queue (window 0 announced and heard) over
    a lossless zero-delay link; returns (sender, receiver, now, the ms the sender's probe
    schedule began)."""
    a, b = conn(recovery), conn(recovery)
    a.send(b"x" * (a.mss * 100))
    for now in range(0, 50):
        for src, dst in ((a, b), (b, a)):
            for d in src.datagrams_to_send(now):
                dst.receive_datagram(d, now)
        if a.kcp.probe_wait:                 # its flush saw the closed window
            break
    assert a.kcp.rmt_wnd == 0 and len(b.kcp.rcv_queue) == 64 and a.kcp.probe_wait
    return a, b, now + 1, now


def wins_times(b: Connection, start: int, until: int) -> List[int]:
    """The ms at which ``b`` emits a WINS between ``start`` and ``until``, none delivered."""
    times = []
    for now in range(start, until):
        if any(s.cmd == CMD_WINS for s in segs(b.datagrams_to_send(now))):
            times.append(now)
    return times


def test_a_lost_wins_is_repeated_until_the_peer_sends():
    """Expected (D60): the read sends a WINS at once; it is lost, and the sender has nothing
    in flight, so nothing else would reopen its window before its probe. The receiver repeats
    it after max(rx_rto, interval) = 200 ms (no RTT sample yet: RTO_DEF), then 400, 800 and
    1600 ms later (WINS_RETRIES = 4), and no more."""
    _, b, now, _ = closed_window_pair(True)
    while b.recv() is not None:
        pass
    assert b.window_update_due
    times = wins_times(b, now, now + 5000)
    gaps = [t - times[0] for t in times]
    assert gaps == [0, 200, 600, 1400, 3000], gaps
    assert len(times) == 1 + WINS_RETRIES


def test_a_push_ends_the_repeats():
    """Expected: once a PUSH arrives after the WINS (the sender heard it), no repeat."""
    a, b, now, _ = closed_window_pair(True)
    while b.recv() is not None:
        pass
    first = b.datagrams_to_send(now)
    assert [s.wnd for s in segs(first) if s.cmd == CMD_WINS] == [64]
    for d in first:                          # this time the WINS arrives
        a.receive_datagram(d, now)
    pushes: List[bytes] = []
    while not any(s.cmd == CMD_PUSH for s in segs(pushes)):    # a's next tick
        now += 1
        pushes = a.datagrams_to_send(now)
    for d in pushes:
        b.receive_datagram(d, now)
    b.datagrams_to_send(now)                  # its ACKs (not read: no new WINS is due)
    assert wins_times(b, now + 1, now + 3000) == []


def test_without_recovery_the_wins_goes_once():
    """kcp-go's behaviour (the sans-IO default): one WINS, nothing after it is lost."""
    _, b, now, _ = closed_window_pair(False)
    while b.recv() is not None:
        pass
    assert len(wins_times(b, now, now + 5000)) == 1


@pytest.mark.parametrize("recovery,expect", [(True, "rto"), (False, "probe_init")])
def test_closed_window_is_probed_after_an_rto_first(recovery, expect):
    """Expected (D60): with recovery the first WASK goes out rx_rto after the window closed
    (the sender's RTT samples here: rx_rto = 30 ms, fast3's minimum), then the regular
    schedule from the closing: probe_init (500) and +750; only the regular probes count
    toward the dead link (D47). Without it, kcp-go latest's 500 and 1250 ms."""
    a, _, now, began = closed_window_pair(recovery)
    rto = a.kcp.rx_rto
    wasks = []
    counts = []
    for t in range(now, began + 1300):
        if any(s.cmd == CMD_WASK for s in segs(a.datagrams_to_send(t))):
            wasks.append(t)
            counts.append(a.probes_unanswered)
    offsets = [t - began for t in wasks]
    if expect == "rto":
        assert offsets == [rto, 500, 1250], (offsets, rto)
        assert counts == [0, 1, 2]
    else:
        assert offsets == [500, 1250], offsets
        assert counts == [1, 2]


def longest_stall(seed: int, recovery: bool, mb: float = 20) -> int:
    """Simulated ms of the longest time without delivery over a 50 ms-RTT, 5 %-loss link
    with FEC 10/3 and windows 1024 (bench lossy's settings). The receiver reads after each
    step, so its ACKs announce the window before the read (the worst case D60 covers)."""
    ends = []
    for _ in range(2):
        c = Connection(CONV, data_shards=10, parity_shards=3, mtu=1400, mode="fast3",
                       probe_init=500, window_recovery=recovery, snmp=Snmp(),
                       window=(1024, 1024), stream=True)
        ends.append(c)
    a, b = ends
    net = Network(a, b, seed, LinkProfile(loss=0.05, delay=25))
    total = int(mb * 1e6)
    chunk = b"x" * 65536
    sent = got = 0
    last = worst = 0
    while got < total and net.now < 120_000:
        while sent < total and a.writable():
            n = min(65536, total - sent)
            a.send(chunk[:n])
            sent += n
        net.step()
        before = got
        while (m := b.recv()) is not None:
            got += len(m)
        if got != before:
            worst = max(worst, net.now - last)
            last = net.now
    assert got == total
    return worst


def test_lossy_transfer_has_no_probe_stall():
    """Seeds 7, 8 and 12 of 1-12 lose a WINS in 20 MB. Expected: without recovery each sits
    out the 500 ms probe (measured: 600 ms without delivery); with it the longest gap is a
    repeated WINS or the early probe (measured 160-174 ms)."""
    for seed in (7, 8, 12):
        assert longest_stall(seed, False) >= 500, seed
        assert longest_stall(seed, True) < 300, seed


SCRIPT = textwrap.dedent('''
    from gevent import monkey; monkey.patch_all()
    import json, socket
    import gevent, kcpgo
    from kcpgo.sansio.wire import CMD_ACK, CMD_PUSH, Segment, decode_segments, encode_segment
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    raw.settimeout(2)
    c = kcpgo.dial(raw.getsockname(), timeout=5, window=(128, 128), stream=True)
    c.sendall(b"hi")
    d, addr = raw.recvfrom(2000)
    conv = decode_segments(d)[0].conv

    def batch(first):
        """40 one-byte PUSHes in one datagram (a bulk batch), acking "hi"; the windows
        announced by the ACKs of that batch (una covers the 40: only the last is sent)."""
        raw.sendto(b"".join(encode_segment(Segment(conv, CMD_PUSH, 0, 128, 0, sn, 1, b"z"))
                            for sn in range(first, first + 40)), addr)
        wnds = set()
        while not wnds:
            for s in decode_segments(raw.recvfrom(2000)[0]):
                if s.cmd == CMD_ACK and first <= s.sn < first + 40:
                    assert s.una == first + 40, s
                    wnds.add(s.wnd)
        return sorted(wnds)

    idle = batch(0)                 # nobody reads: the queue holds them
    got = []
    def reader():
        while True:
            got.append(c.recv(1 << 20))
    gevent.spawn(reader)
    gevent.sleep(0.1)               # it drains the 40 and waits in recv
    reading = batch(40)
    gevent.sleep(0.1)
    print(json.dumps({"idle": idle, "reading": reading, "read": sum(map(len, got))}))
''')


def test_bulk_acks_announce_the_window_the_reader_opened():
    """A raw peer sends 40 segments in one datagram to a session with a 128-segment receive
    window. Expected: with nobody reading, the ACKs announce 128 - 40 = 88 (the queue holds
    them; the window is honest); with a greenlet waiting in recv, they announce 128, because
    they go out after that reader's turn (D60). Before, both announced 88."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"idle": [88], "reading": [128], "read": 80}, res


WORKER = textwrap.dedent('''
    from gevent import monkey; monkey.patch_all()
    import sys, time
    import gevent, kcpgo
    c = kcpgo.dial(("127.0.0.1", int(sys.argv[1])), timeout=5, window=(128, 128))
    c.settimeout(None)
    c.sendall(b"hi")
    if sys.argv[2] == "flaky":          # on_update raises once, during a bulk batch
        chan = c._chan
        orig = chan.on_update
        state = {"raised": False}
        def flaky():
            if not state["raised"] and chan.conn.pending_acks >= 4:
                state["raised"] = True
                raise RuntimeError("one failing update")
            orig()
        chan.on_update = flaky
    while True:
        c.recv(1 << 20)                 # one message: 1 byte
        end = time.monotonic() + 0.02   # 20 ms of work on it, without yielding
        while time.monotonic() < end:
            pass
        print(time.monotonic(), flush=True)
''')


def raw_peer_batches(mode: str, batches: int) -> Tuple[List[float], List[float], str]:
    """This process is the raw peer of a monkey-patched kcpgo client (WORKER) whose reader
    works 20 ms on each message. Sends ``batches`` datagrams of 20 one-byte messages, one
    after the other once the previous one is ACKed (5 s each at most); returns when each
    batch's ACK came (``time.monotonic``, system-wide), when the reader finished each
    message, and its stderr."""
    import socket
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    raw.settimeout(5)
    child = subprocess.Popen([sys.executable, "-c", WORKER, str(raw.getsockname()[1]), mode],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acks: List[float] = []
    try:
        d, addr = raw.recvfrom(2000)
        conv = decode_segments(d)[0].conv
        for first in range(0, 20 * batches, 20):
            raw.sendto(b"".join(encode_segment(Segment(conv, CMD_PUSH, 0, 128, 0, sn, 1, b"z"))
                                for sn in range(first, first + 20)), addr)
            try:
                while not any(s.cmd == CMD_ACK and s.una >= first + 20
                              for s in decode_segments(raw.recvfrom(2000)[0])):
                    pass
                acks.append(time.monotonic())
            except socket.timeout:
                acks.append(float("inf"))
        time.sleep(20 * batches * 0.02 + 0.5)      # the reader's work on them all
    finally:
        child.kill()
        out, err = child.communicate(timeout=10)
        raw.close()
    return acks, [float(x) for x in out.split()], err


def test_a_reader_working_on_each_message_does_not_hold_the_acks():
    """A reviewer's finding on D60's first form (the ACKs went out at the end of the woken
    reader's turn): a reader that works 20 ms on each of 20 messages held them 400 ms, and
    the sender's RTT estimate with them. Expected: the batch's ACK leaves at the reader's
    first read (the window it opens, 109 of 128, is more than half), before it has finished
    its second message."""
    acks, done, err = raw_peer_batches("plain", 1)
    assert len(done) >= 2, err[-2000:]
    assert acks[0] < done[1], (acks, done[:3])


def test_a_failing_update_does_not_stop_the_acks():
    """A reviewer's finding: if the application's wake-up raised during a bulk batch (the
    reader logs it and goes on), the batch's flush was never queued and the flag that says
    it is stayed set: the session never ACKed a bulk batch again. Expected: every batch is
    ACKed (within 5 s each)."""
    acks, _, err = raw_peer_batches("flaky", 3)
    assert all(a != float("inf") for a in acks), (acks, err[-2000:])
