"""Faults a breaker found in the I/O-thread runtime (issue 12), each pinned by a test.

Expected values come from the stdlib socket contract (a forked child may close the sockets it
inherited at once; an atexit handler may still talk over a socket; a signal handler may call
socket methods) and from kcpgo's own rule that nothing hangs or fails silently. Children run in
fresh interpreters (fork, atexit and signals need their own process).
"""
from __future__ import annotations

import errno
import os
import textwrap

import pytest

import kcpgo
from tests.support.children import run_child
from kcpgo.snmp import Snmp

LOCAL = ("127.0.0.1", 0)


#: A child's start: a listener ``ln``, a client ``c`` (no timeout) and the accepted ``s``,
#: with the client's first bytes read.
PAIR = """
import errno, json, kcpgo
from kcpgo.runtime import iothread
ln = kcpgo.listen(("127.0.0.1", 0))
c = kcpgo.dial(ln.getsockname(), timeout=None)
c.sendall(b"hi")
ln.settimeout(5)
s, _ = ln.accept()
assert s.recv(10) == b"hi"
"""


def run(code: str, timeout: float = 60, pair: bool = False, before: str = "") -> dict:
    """Run ``code`` in a child (:func:`run_child`), after :data:`PAIR` with ``pair``, and
    ``before`` first of all (before kcpgo is imported)."""
    return run_child(textwrap.dedent(before) + (PAIR if pair else "") + textwrap.dedent(code),
                     timeout=timeout)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_closes_inherited_sessions_at_once_and_cannot_use_them():
    """A child closing an inherited session hung in 22 forks of 30: the stack lock was copied
    held by the I/O thread, which does not exist in the child. Now close() only frees the
    child's descriptors (the parent's session goes on) and any other call raises EBADF naming
    the cause: the child's datagrams would otherwise go into the parent's session."""
    out = run('''
        import json, os, threading, kcpgo
        ln = kcpgo.listen(("127.0.0.1", 0), mode="fast3")
        c = kcpgo.dial(ln.getsockname(), mode="fast3", window=(512, 512), timeout=5)
        got = [0]
        def sink():
            s, _ = ln.accept()
            s.settimeout(5)
            while got[0] < 15 * 100_000:
                got[0] += len(s.recv(1 << 20))
        reader = threading.Thread(target=sink)
        reader.start()
        hung = 0
        for i in range(15):
            c.sendall(b"x" * 100_000)          # the I/O thread is busy with ACKs meanwhile
            pid = os.fork()
            if pid == 0:
                import faulthandler
                faulthandler.dump_traceback_later(3, exit=True)
                try:
                    c.sendall(b"from the child")
                    os._exit(2)
                except OSError as e:
                    code = 0 if e.errno == 9 and "fork" in str(e) else 3
                c.close()
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            hung += status != 0
        reader.join(10)
        print(json.dumps({"bad_children": hung, "parent_received": got[0]}))
    ''')
    assert out == {"bad_children": 0, "parent_received": 1_500_000}


def test_an_atexit_handler_registered_before_first_use_can_still_use_its_session():
    """atexit runs handlers last-registered-first. kcpgo's exit hook, once registered at its
    first use, ran before a goodbye handler registered earlier and stopped the I/O thread:
    the goodbye waited for a reply that could not come (for ever without a timeout); over TCP
    the goodbye works. The hook is now registered by ``import kcpgo``, so it runs after the
    goodbye (and parks the thread then, D56)."""
    out = run('''
        import atexit, json, threading, kcpgo
        box = {}
        def goodbye():
            c = box["c"]
            c.sendall(b"BYE")
            print(json.dumps({"reply": c.recv(100).decode()}), flush=True)
        atexit.register(goodbye)
        ln = kcpgo.listen(("127.0.0.1", 0))
        def serve():
            s, _ = ln.accept()
            while True:
                s.sendall(b"OK " + s.recv(100))
        threading.Thread(target=serve, daemon=True).start()
        c = box["c"] = kcpgo.dial(ln.getsockname(), timeout=5)
        c.sendall(b"HI")
        assert c.recv(100) == b"OK HI"
    ''', timeout=30)
    assert out == {"reply": "OK BYE"}


def test_at_exit_the_io_thread_parks_and_late_calls_raise_instead_of_hanging():
    """At interpreter exit the I/O thread used to keep serving into finalization, where
    CPython ends a daemon thread that wakes with pthread_exit; unwinding through the hub
    greenlet crashed 1-2 % of exits (SIGSEGV in greenlet's g_initialstub, core dump of an
    smux client, docs/deviations.md D56). kcpgo's exit hook (``iothread.at_exit``, what
    ``import kcpgo`` registers with atexit) now parks it after the linger: alive, blocked in
    ``_park_forever`` called from ``_main`` (its main greenlet), its loop ended. Then a kcpgo
    call from the hook's thread (a handler registered before ``import kcpgo``) raises EBADF
    at once, on an old session or a new one (it would wait for ever on the old, and a new I/O
    thread would run into finalization); a daemon thread's call parks it quietly instead of
    printing a traceback while the process ends. The hook is called here by hand, in a
    child, to look."""
    out = run('''
        import errno, json, sys, threading, time, kcpgo
        from kcpgo.runtime import iothread
        ln = kcpgo.listen(("127.0.0.1", 0))
        c = kcpgo.dial(ln.getsockname(), timeout=5)
        c.sendall(b"HI")
        ln.settimeout(5)
        s, _ = ln.accept()
        assert s.recv(10) == b"HI"
        old = iothread._current
        t0 = time.monotonic()
        iothread.at_exit()
        where = [[f.f_code.co_name, f.f_back.f_code.co_name]
                 for tid, f in sys._current_frames().items()
                 if tid != threading.get_ident() and f.f_code.co_name == "_park_forever"]

        def code(call):
            try:
                call()
                return "no error"
            except OSError as e:
                return errno.errorcode.get(e.errno, repr(e))

        late = code(lambda: c.recv(10))
        new = code(lambda: kcpgo.dial(ln.getsockname(), timeout=5).recv(10))
        took = time.monotonic() - t0
        seen = []
        t = threading.Thread(target=lambda: seen.append(code(lambda: s.recv(10))), daemon=True)
        t.start()
        t.join(0.5)
        print(json.dumps({"stopped": old.runtime.stopped, "in_main": where, "late": late,
                          "new": new, "quick": took < 3, "daemon_parked": t.is_alive(),
                          "daemon_saw": seen, "threads": len([
                              x for x in threading.enumerate()
                              if x.name == iothread.THREAD_NAME])}))
    ''', timeout=30)
    assert out == {"stopped": True, "in_main": [["_park_forever", "_main"]], "late": "EBADF",
                   "new": "EBADF", "quick": True, "daemon_parked": True, "daemon_saw": [],
                   "threads": 1}


def test_after_stop_calls_raise_and_a_new_session_gets_a_new_io_thread():
    """``iothread.stop()`` (tests, embedders) ends the I/O thread: a call on one of its
    sessions made afterwards waited for ever (nothing serves it); it raises EBADF now, and a
    new session starts a new I/O thread instead of being handed the stopped one."""
    out = run('''
        import errno, json, kcpgo
        from kcpgo.runtime import iothread
        ln = kcpgo.listen(("127.0.0.1", 0))
        c = kcpgo.dial(ln.getsockname(), timeout=5)
        old = iothread._current
        iothread.stop()
        try:
            c.recv(10)
            late = "no error"
        except OSError as e:
            late = errno.errorcode.get(e.errno, repr(e))
        ln2 = kcpgo.listen(("127.0.0.1", 0))
        c2 = kcpgo.dial(ln2.getsockname(), timeout=5)
        c2.sendall(b"AGAIN")
        ln2.settimeout(5)
        s2, _ = ln2.accept()
        print(json.dumps({"late": late, "new_thread": iothread._current is not old,
                          "again": s2.recv(10).decode()}))
    ''', timeout=30)
    assert out == {"late": "EBADF", "new_thread": True, "again": "AGAIN"}


def test_calls_blocked_when_the_io_thread_stops_raise_instead_of_waiting_for_ever():
    """A call blocked in recv(), accept() or sendall() (window full, nothing acknowledges)
    when ``iothread.stop()`` ends the I/O thread waited for ever: nothing would wake it
    again. Each now wakes and raises EBADF (as a call made after the stop does), and a
    second recv() queued behind the first for the same direction is refused in its turn."""
    out = run('''
        import threading, time
        ln.settimeout(None)
        mute = kcpgo.dial(("127.0.0.1", 9), timeout=None)   # nobody answers: window fills
        got = {}
        def call(name, fn):
            try:
                fn()
                got[name] = "returned"
            except OSError as e:
                got[name] = errno.errorcode.get(e.errno, repr(e))
        calls = {"recv": lambda: s.recv(10), "recv_queued": lambda: s.recv(10),
                 "accept": ln.accept, "sendall": lambda: mute.sendall(b"x" * 4_000_000)}
        threads = []
        for name, fn in calls.items():
            t = threading.Thread(target=call, args=(name, fn), daemon=True)
            t.start()
            threads.append(t)
            time.sleep(0.3)
        assert not got, got                  # all four are blocked
        iothread.stop()
        for t in threads:
            t.join(5)
        print(json.dumps(got, sort_keys=True))
    ''', timeout=30, pair=True)
    assert out == {"accept": "EBADF", "recv": "EBADF", "recv_queued": "EBADF",
                   "sendall": "EBADF"}


def test_at_exit_a_blocked_reader_stays_blocked_until_a_late_handler_closes_its_session():
    """The usual shutdown: an atexit handler closes a session and joins the daemon thread
    blocked in its recv. Registered before ``import kcpgo``, the handler runs after kcpgo's
    exit hook; the hook must not wake the reader (it would park for good, as every non-hook
    thread's kcpgo call does after the hook, and the join would hang: a reviewer's script,
    11 of 12 runs). The reader stays blocked until close() wakes it with EBADF, as a
    socket's reader is when another thread closes it."""
    out = run('''
        import threading, time
        got = []
        def work():
            try:
                s.recv(10)
            except OSError as e:
                got.append(errno.errorcode.get(e.errno, repr(e)))
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        time.sleep(0.3)
    ''', timeout=30, pair=True, before='''
        import atexit, json
        def shutdown():
            s.close()
            worker.join(5)
            print(json.dumps({"alive": worker.is_alive(), "got": got}))
        atexit.register(shutdown)
    ''')
    assert out == {"alive": False, "got": ["EBADF"]}


def test_a_stop_from_a_signal_handler_inside_a_call_still_wakes_that_call():
    """A signal handler calling ``iothread.stop()`` (an embedder's SIGTERM clean-up) while
    the main thread is inside recv, between its check of the stopped flag and registering
    its wake-up: the stop cannot take the stack lock (that thread holds it), marks the
    runtime stopped without it after 1 s and wakes what is registered. The call then
    registered after the wake-ups went out, and waited for ever (a reviewer's script); it
    checks the flag once more after registering and raises EBADF. The signal is raised
    from the busy-poll, which runs exactly there."""
    out = run('''
        import os, signal
        from kcpgo.facade.socket import KCPSocket
        signal.signal(signal.SIGTERM, lambda *_: iothread.stop())
        real = KCPSocket._busy_poll
        def busy_poll(self, side):
            KCPSocket._busy_poll = real
            os.kill(os.getpid(), signal.SIGTERM)      # handled at the next bytecode
            return real(self, side)
        KCPSocket._busy_poll = busy_poll
        try:
            s.recv(10)
            got = "returned"
        except OSError as e:
            got = errno.errorcode.get(e.errno, repr(e))
        print(json.dumps({"got": got, "stopped": s._runtime.stopped}))
    ''', timeout=20, pair=True)
    assert out == {"got": "EBADF", "stopped": True}


def test_after_stop_select_reports_every_descriptor_and_servers_stop_serving():
    """``fileno()`` promises "readable exactly when the call would not block"; after
    ``iothread.stop()`` every call raises EBADF at once, yet a select() on a session's or a
    listener's descriptor blocked for ever (also one first asked for after the stop), and
    ``KCPServer.serve_forever`` spun at 100 % CPU on a listener whose backlog held a
    session (readable, and accept raising EBADF every time: a reviewer's scripts). The
    descriptors are readable for good now, and serve_forever raises EBADF."""
    out = run('''
        import select, socketserver, threading, time
        from kcpgo.server import KCPServer
        srv = KCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler)
        waiting = kcpgo.dial(srv.server_address, timeout=5)
        waiting.sendall(b"x")                       # left in the server's backlog
        fds = [s.fileno(), ln.fileno()]
        got = {}
        def wait():                                 # returns at the first one readable
            got["select"] = bool(select.select(fds, [], [])[0])
        t = threading.Thread(target=wait, daemon=True)
        t.start()
        time.sleep(0.3)
        iothread.stop()
        t.join(5)
        got["all"] = sorted(select.select(fds, [], [], 5)[0]) == sorted(fds)
        got["new fileno"] = select.select([c.fileno()], [], [], 5)[0] == [c.fileno()]
        def serve():
            try:
                srv.serve_forever(poll_interval=0.1)
                got["serve_forever"] = "returned"
            except OSError as e:
                got["serve_forever"] = errno.errorcode.get(e.errno, repr(e))
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        t.join(5)
        print(json.dumps(got, sort_keys=True))
    ''', timeout=30, pair=True)
    assert out == {"all": True, "new fileno": True, "select": True,
                   "serve_forever": "EBADF"}


def test_a_wait_inside_a_kcpgo_call_raises_instead_of_deadlocking():
    """A signal handler that makes a blocking call while the code it interrupted was inside
    kcpgo (holding the stack lock) waited while holding that lock, so the I/O thread could
    deliver nothing: a deadlock until the timeout, or for ever. It now raises RuntimeError
    at once saying why; the interrupted call, and later ones, work. (Holding the lock by hand
    is the same state the signal handler found.)"""
    snmp = Snmp()
    with kcpgo.listen(LOCAL, snmp=snmp) as ln:
        c = kcpgo.dial(ln.getsockname(), snmp=Snmp(), timeout=5)
        with c._runtime.lock:
            with pytest.raises(RuntimeError, match="already inside a kcpgo call"):
                c.recv(10)
        c.sendall(b"x")
        ln.settimeout(5)
        s, _ = ln.accept()
        assert s.recv(10) == b"x"
        s.close()
        c.close()


def test_a_keyboardinterrupt_inside_the_state_change_aborts_the_session():
    """Ctrl-C during sendall that lands inside kcpgo's state change (not in its wait) left
    KCP's queues out of step: a session that never retransmitted, or IndexErrors in the I/O
    thread for ever. The session is now aborted: the interrupt propagates, and every later
    call raises ConnectionAbortedError(ECONNABORTED) saying why."""
    with kcpgo.listen(LOCAL, snmp=Snmp()) as ln:
        c = kcpgo.dial(ln.getsockname(), snmp=Snmp(), timeout=5)
        conn = c._conn
        real = conn.send

        def interrupted(data):
            conn.send = real
            raise KeyboardInterrupt
        conn.send = interrupted
        with pytest.raises(KeyboardInterrupt):
            c.sendall(b"x" * 10)
        with pytest.raises(ConnectionAbortedError) as info:
            c.sendall(b"y")
        assert info.value.errno == errno.ECONNABORTED and "KeyboardInterrupt" in str(info.value)
        c.close()
