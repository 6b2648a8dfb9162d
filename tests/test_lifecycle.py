"""Session lifecycle faults found by a review of the re-layered facade, each pinned by a test.

Expected values come from the stdlib socket contract (docs.python.org, socket): a closed
socket raises EBADF also from sendall(b""); a socket dropped without close() is closed when
collected, with a ResourceWarning; a failed constructor leaks nothing. And from TCP: a peer
that restarts resets the old connection (ECONNRESET), it does not leave it hanging.
"""
from __future__ import annotations

import errno
import gc
import os
import socket
import warnings

import gevent
import pytest

import kcpgo
from kcpgo.sansio import CMD_PUSH, Segment, encode_segment
from kcpgo.snmp import Snmp

LOCAL = ("127.0.0.1", 0)


def push(u: socket.socket, ln, conv: int, data: bytes, sn: int = 0) -> None:
    """One raw KCP PUSH from the UDP socket ``u`` (no cipher, no FEC)."""
    u.sendto(encode_segment(Segment(conv, CMD_PUSH, 0, 32, 0, sn, 0, data)), ln.getsockname())


def test_restarted_peer_never_leaves_a_dead_session_in_the_backlog(raw):
    with kcpgo.listen(LOCAL, snmp=Snmp(), stream=True) as ln:
        ln.settimeout(2)
        push(raw, ln, 111, b"old")
        gevent.sleep(0.05)
        push(raw, ln, 222, b"new")           # restarted before the first was accepted
        gevent.sleep(0.05)
        assert (ln.pending_count, ln.session_count) == (1, 1)
        s, _ = ln.accept()
        assert s.conv == 222 and not s.closed and s.recv(10) == b"new"
        s.close()


def test_restarted_peer_resets_a_blocked_reader(raw):
    with kcpgo.listen(LOCAL, snmp=Snmp(), stream=True) as ln:
        ln.settimeout(2)
        push(raw, ln, 111, b"GET /\n")
        s, _ = ln.accept()
        rfile = s.makefile("rb")              # a StreamRequestHandler's shape
        assert rfile.readline() == b"GET /\n"
        reader = gevent.spawn(rfile.readline)
        gevent.sleep(0.05)
        push(raw, ln, 222, b"GET /again\n")    # the client restarted
        s2, _ = ln.accept()
        with pytest.raises(ConnectionResetError):
            reader.get(timeout=2)             # no timeout set: it used to hang forever
        assert s.closed and s2.recv(100) == b"GET /again\n"
        rfile.close()
        s.close()
        s2.close()


def test_last_makefile_close_wakes_a_blocked_recv():
    ln = kcpgo.listen(LOCAL, snmp=Snmp(), mode="fast3")
    c = kcpgo.dial(ln.getsockname(), snmp=Snmp(), mode="fast3")
    c.sendall(b"x")
    ln.settimeout(2)
    s, _ = ln.accept()
    f = s.makefile("rb")
    s.close()                                 # the file keeps the session open
    blocked = gevent.spawn(s.recv, 10)
    gevent.sleep(0.05)
    assert blocked.get(timeout=2) == b"x"
    blocked = gevent.spawn(s.recv, 10)
    gevent.sleep(0.05)
    f.close()                                 # now it is released
    with pytest.raises(OSError) as e:
        blocked.get(timeout=2)
    assert e.value.errno == errno.EBADF
    c.close()
    ln.close()


def test_readiness_follows_the_leftover_of_a_message():
    from gevent.select import select
    ln = kcpgo.listen(LOCAL, snmp=Snmp(), mode="fast3")
    c = kcpgo.dial(ln.getsockname(), snmp=Snmp(), mode="fast3")
    c.sendall(b"0123456789")
    ln.settimeout(2)
    s, _ = ln.accept()
    fd = s.fileno()
    assert select([fd], [], [], 2)[0] == [fd]
    assert s.recv(4) == b"0123"
    assert select([fd], [], [], 0)[0] == [fd]       # the rest of the message is kept
    assert s.recv(6) == b"456789"
    assert select([fd], [], [], 0)[0] == []         # nothing left: recv would block
    s.setblocking(False)
    with pytest.raises(BlockingIOError):
        s.recv(10)
    for x in (s, c, ln):
        x.close()


def test_sendall_empty_on_a_closed_or_shut_session_raises_like_a_socket():
    c = kcpgo.dial(("127.0.0.1", 9), snmp=Snmp())
    c.shutdown(socket.SHUT_WR)
    with pytest.raises(BrokenPipeError):
        c.sendall(b"")
    c.close()
    with pytest.raises(OSError) as e:
        c.sendall(b"")
    assert e.value.errno == errno.EBADF


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_failed_dial_leaks_nothing():
    snmp = Snmp()
    before = _fds()
    for bad in (-1, "x"):
        with pytest.raises((ValueError, TypeError)):
            kcpgo.dial(("127.0.0.1", 9), timeout=bad, snmp=snmp)
    with pytest.raises(ValueError, match="u32"):
        kcpgo.dial(("127.0.0.1", 9), conv=-1, snmp=snmp)
    assert (snmp.CurrEstab, snmp.ActiveOpens) == (0, 0)
    assert _fds() == before


def test_a_dropped_session_is_closed_when_collected():
    snmp = Snmp()
    gc.collect()
    before = _fds()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(20):
            kcpgo.dial(("127.0.0.1", 9), snmp=snmp).sendall(b"x")
        gc.collect()
        gevent.sleep(0.01)                    # the releases run on the hub
    assert snmp.CurrEstab == 0
    assert _fds() <= before + 1
    assert sum(issubclass(x.category, ResourceWarning) for x in w) == 20


def test_an_endpoint_closed_by_its_own_batch_stops_its_reader(raw):
    """An endpoint closed from inside its own reader's batch (an smux session whose linger
    ends on an ACK does this) must not wait on its closed watcher again: gevent restarts it,
    on a descriptor that is gone or already another socket's, and libev aborts the process at
    its next epoll_ctl ("I/O watcher with invalid fd found in epoll_ctl"; found in hub mode by
    opening and closing an smux pair, then pairs with a dead link and an idle timeout). The
    reader must end, its watcher inactive."""
    from kcpgo.runtime.scheduler import Runtime
    from kcpgo.runtime.udp import UDPEndpoint
    rt = Runtime.current()
    sock = UDPEndpoint.open(LOCAL)
    addr = sock.getsockname()

    def build():
        ep = UDPEndpoint(sock)
        ep.on_batch = lambda batch, now: ep.close()
        return ep
    ep = rt.run_sync(build)
    ep.wait_started()
    raw.sendto(b"x" * 30, addr)
    for _ in range(200):
        if ep._reader is not None and ep._reader.dead:
            break
        gevent.sleep(0.01)
    assert ep.closed and ep._reader.dead and not ep._watcher.active


def test_a_new_sessions_first_write_leaves_at_once():
    """kcp-go runs a session's first update when it creates it (sess.go newUDPSession:
    ``SystemTimedSched.Put(sess.update, time.Now())``), which raises KCP's cwnd from 0 to 1
    (docs/protocol.md §1.9 phase 6), so with congestion control on (kcp-go's default mode)
    the application's first write is flushed by ``Write`` itself. Before: kcpgo's first flush
    came with that write, sent nothing and waited for the next tick, 100 ms later (a new
    user's first request/response took 102 ms)."""
    snmp = Snmp()
    with kcpgo.listen(LOCAL, snmp=Snmp()) as ln:
        c = kcpgo.dial(ln.getsockname(), snmp=snmp)       # default mode: nc 0, interval 100
        c.sendall(b"x")
        assert snmp.OutPkts == 1                           # on the wire before sendall returned
        c.close()


def test_a_closed_timer_is_never_armed_again():
    """A closed session's timer must stay off whatever path still arms it: the churn tool
    once found 2 armed timers after every session was closed (clean-clone CI, 2026-11-30),
    and an armed timer keeps its closed owner's handle in the runtime's heap until it fires.
    ``Timer.schedule`` after ``close()`` is a no-op, so ``live_timers`` counts only open
    sessions' timers."""
    from kcpgo.runtime.scheduler import Runtime
    rt = Runtime.current()
    fired = []
    t = rt.timer(fired.append)
    before = rt.live_timers
    t.schedule(10**12)
    assert rt.live_timers == before + 1
    t.close()
    assert rt.live_timers == before
    t.schedule(1)                       # e.g. a batch's ACK timer, after on_update closed it
    assert not t.pending and rt.live_timers == before
    gevent.sleep(0.01)
    assert fired == []


def test_scheduler_sleeps_past_cancelled_timers():
    """A request/response session leaves two cancelled timers per message in the heap (its
    ACK timer and its retransmission timer, both made moot by the answer). The scheduler
    skips such entries when it goes to sleep instead of waking for each: with 1,000 sessions
    at one message a second that was ~500 extra hub round trips a second (cProfile:
    gevent's Timeout._on_expiration 4,911 times in 10 s), ~5 % of the server's CPU."""
    from kcpgo.runtime.clock import now_ms
    from kcpgo.runtime.scheduler import Runtime
    rt = Runtime()                      # this thread's hub, a heap of its own
    real = rt._alarm_at
    sleeps = []

    def spy(ms):                        # records how long each sleep was meant to be
        sleeps.append(ms)
        real(ms)

    rt._alarm_at = spy
    fired = []
    moot, due = rt.timer(fired.append), rt.timer(fired.append)
    with rt.lock:
        now = now_ms()
        moot.schedule(now + 40)
        due.schedule(now + 200)
        moot.cancel()
    gevent.sleep(0.01)                  # the scheduler's first pass: it goes to sleep
    until = rt._sleep_until
    gevent.sleep(0.4)
    assert len(fired) == 1 and fired[0] >= now + 200
    assert until == now + 200, (until - now, sleeps)   # the old code slept until now + 40
    assert len(sleeps) == 2 and sleeps[1] is None, sleeps   # the live timer's, then none


def test_an_earlier_deadline_moves_the_alarm_without_a_callback():
    """A send arms its retransmission timer, usually earlier than the scheduler's sleep. That
    wake-up was ``Event.set()``: a callback queued on the hub, and a busy-polling ``recv``
    (D54) spins only while none is queued, so request/response sessions never spun in their
    own greenlet (instrumented ping, 3,000 round trips: 3,019 of 3,020 spins refused, an
    Event's ``_notify_links`` queued; p50 182 µs). Expected: the sleeping scheduler's libev
    alarm moves earlier, nothing is queued, and the earlier timer fires first."""
    from kcpgo.runtime.clock import now_ms
    from kcpgo.runtime.scheduler import Runtime
    rt = Runtime()
    fired = []
    late, early = rt.timer(lambda now: fired.append("late")), \
        rt.timer(lambda now: fired.append("early"))
    with rt.lock:
        late.schedule(now_ms() + 2000)
    gevent.sleep(0.01)                  # the scheduler sleeps until the late one
    assert rt._sleep_until is not None
    with rt.lock:
        early.schedule(now_ms() + 30)
    assert not rt.hub.loop._callbacks, list(rt.hub.loop._callbacks)
    gevent.sleep(0.5)
    assert fired == ["early"]
    with rt.lock:
        late.cancel()


def test_a_deadline_pushed_while_the_scheduler_goes_to_sleep_is_kept():
    """A signal handler can push a deadline at any bytecode, the stack lock being re-entrant:
    also after the scheduler decided how long to sleep and before it sleeps. A reviewer's
    script sent from a SIGUSR1 handler delivered exactly there: its retransmission waited
    for the next deadline, 3 s away (1 datagram in 1.5 s where 5 were due). Here the push
    comes from inside the scheduler's own arming of its alarm (the same window): the earlier
    timer must fire first. Fails on the code before the fix (the alarm was re-armed with the
    deadline decided before)."""
    from kcpgo.runtime.clock import now_ms
    from kcpgo.runtime.scheduler import Runtime
    rt = Runtime()
    fired = []
    late, early = rt.timer(lambda now: fired.append("late")), \
        rt.timer(lambda now: fired.append("early"))
    real = rt._alarm_at
    pushed = []

    def arming(ms):
        if ms is not None and ms > 1000 and not pushed:    # the scheduler going to sleep
            pushed.append(True)
            with rt.lock:
                early.schedule(now_ms() + 30)
        real(ms)

    rt._alarm_at = arming
    with rt.lock:
        late.schedule(now_ms() + 2000)
    gevent.sleep(0.5)
    assert pushed and fired == ["early"], (pushed, fired)
    with rt.lock:
        late.cancel()


def test_owner_liveness_never_asks_sys_current_frames(monkeypatch):
    """``Runtime.owner_alive`` / ``owner_runs_elsewhere`` run in ``__del__`` methods
    (``SmuxSession.__del__``). They asked ``sys._current_frames()``, which allocates while
    holding the interpreter's thread-list lock: a collection it triggered ran such a
    ``__del__``, which asked again and waited for that lock for ever (a full-suite run hung
    in ``test_smux_driver``; py-spy: ``_PyThread_CurrentFrames`` → ``gc_collect_main`` →
    ``SmuxSession.__del__`` → ``owner_alive`` → ``_PyThread_CurrentFrames``). Liveness now
    comes from a thread-local mark released when the thread ends; the answers are the same."""
    import sys
    import threading
    from kcpgo.runtime.scheduler import Runtime

    def forbidden():
        raise AssertionError("sys._current_frames() called")

    monkeypatch.setattr(sys, "_current_frames", forbidden)
    box = {}
    ran = threading.Event()
    done = threading.Event()

    def owner():
        box["rt"] = Runtime()           # a hub-mode runtime owned by this thread
        ran.set()
        done.wait(10)

    t = threading.Thread(target=owner)
    t.start()
    assert ran.wait(10)
    rt = box["rt"]
    assert rt.owner_alive() and rt.owner_runs_elsewhere()       # asked from another thread
    done.set()
    t.join(10)
    assert not rt.owner_alive() and not rt.owner_runs_elsewhere()
    mine = Runtime()
    assert mine.owner_alive() and not mine.owner_runs_elsewhere()   # asked from its thread
