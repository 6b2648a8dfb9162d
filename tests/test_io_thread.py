"""Issue 12: sessions that keep running whatever the caller's thread does.

In a program that gevent has not monkey-patched, kcpgo runs every session, listener and smux
stream on one I/O thread of its own ("thread" runtime), so that:

* ``fileno()`` readiness works with the stdlib ``select``/``selectors``/``poll`` (Why, bullet
  1; Deliver 3), also for data that arrives while the caller sits in ``select``;
* sessions keep ACKing while the application's thread sleeps (Why, bullet 2; Deliver 1);
* a session can be used from any OS thread, with socket semantics (Why, bullet 3; Deliver 2);
* the interpreter still exits cleanly with sessions open (Deliver 1: "stopped cleanly at
  exit"; Deliver 7);
* plain programs that use greenlets without monkey-patching keep working (Deliver 1);
* ``kcpgo.get_runtime()``/``set_runtime()``/``KCPGO_RUNTIME`` say and choose the mode, and
  the "hub" mode keeps today's behaviour, stall included (Deliver 1: "automatic and
  documented, with an explicit override").

Every scenario runs in a fresh interpreter (a child process: the runtime is chosen per
process, and monkey-patching would change this one), importing the same kcpgo as this test,
with a timeout after which the child is killed, so that a hang fails instead of stalling the
suite. The peer that echoes or pushes data is a separate monkey-patched process (model (a),
which issue 12 leaves unchanged), so it keeps running whatever the child does.
``ThreadingKCPServer`` and ``kcpgo.monkey`` servers are in tests/test_io_thread_server.py.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from typing import Any, Dict, Iterator, Optional

import pytest

from kcpgo.testing.process import read_line
from tests.support.children import ROOT, child_env, reap, run_child

# ---------------------------------------------------------------- the peer (another process)

#: A monkey-patched KCP server (stream mode, fast3) that keeps running whatever the children
#: do. Each session starts with one command line:
#:   ``ECHO <delay>``        wait ``delay`` s, then echo every byte as it comes;
#:   ``PUSH <n> <tag>``      sendall ``payload(n)`` at once, then print
#:                           ``PUSHED <tag> <seconds>`` (from the command's arrival to the end
#:                           of ``sendall``) or ``PUSHED <tag> ERROR <exception>``.
#: ``payload(n)`` is ``random.Random(n).randbytes(n)``; children rebuild it to check.
#: Send window 128 segments (~176 KB): a push of more than that needs the child's ACKs.
PEER = textwrap.dedent('''
    from gevent import monkey
    monkey.patch_all()
    import random
    import threading
    import time

    import kcpgo


    def serve(sess):
        try:
            f = sess.makefile("rb")
            cmd = f.readline().split()
            if not cmd:
                return
            if cmd[0] == b"ECHO":
                time.sleep(float(cmd[1]))
                while True:
                    data = f.read1(65536)
                    if not data:
                        break
                    sess.sendall(data)
            elif cmd[0] == b"PUSH":
                n, tag = int(cmd[1]), cmd[2].decode()
                data = random.Random(n).randbytes(n)
                t0 = time.monotonic()
                try:
                    sess.sendall(data)
                except Exception as e:
                    print("PUSHED", tag, "ERROR", repr(e), flush=True)
                    return
                print("PUSHED", tag, round(time.monotonic() - t0, 3), flush=True)
                sess.drain(timeout=10)
        except Exception:
            pass                        # a child that went away: the idle timeout ends it
        finally:
            sess.close()


    ln = kcpgo.listen(("127.0.0.1", 0), mode="fast3", stream=True, window=(128, 1024),
                      idle_timeout=10)
    print("LISTENING", ln.getsockname()[1], flush=True)
    while True:
        s, _ = ln.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()
''')


class Peer:
    """The running :data:`PEER` process: ``port``, and :meth:`pushed` to read its reports."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", PEER], cwd=ROOT, env=child_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = read_line(self.proc.stdout, 15)
        if not line.startswith("LISTENING "):
            self.close()
            raise RuntimeError(f"the peer did not start: {line!r}")
        self.port = int(line.split()[1])

    def pushed(self, tag: str, timeout: float = 10) -> str:
        """What the peer reported for push ``tag``: its seconds as a string, or
        ``"ERROR ..."``; ``"no report"`` if nothing came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = read_line(self.proc.stdout, deadline - time.monotonic())
            if not line:
                break
            words = line.split(maxsplit=2)
            if words[:2] == ["PUSHED", tag]:
                return words[2].strip()
        return "no report"

    def close(self) -> None:
        reap(self.proc, kill=True)


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    p = Peer()
    try:
        yield p
    finally:
        p.close()


#: The start of every child: ``argv[1]`` is ``patched`` (``gevent.monkey.patch_all()`` before
#: anything else) or ``unpatched``, ``argv[2]`` the peer's port.
PROLOGUE = '''
import sys
if sys.argv[1] == "patched":
    from gevent import monkey
    monkey.patch_all()
import hashlib
import json
import random
import select
import selectors
import threading
import time

import kcpgo

ADDR = ("127.0.0.1", int(sys.argv[2]))


def report(**values):
    print(json.dumps(values), flush=True)


def guarded(errors, name, fn, *args):
    """fn(*args) as a thread target; an exception is recorded in errors[name]."""
    def run():
        try:
            fn(*args)
        except BaseException as e:
            errors[name] = f"{type(e).__name__}: {e}"
    return run
'''


def script(body: str) -> str:
    return PROLOGUE + textwrap.dedent(body)


# ---------------------------------------------------------------- 1. select / selectors / poll

#: ``wait_readable(api, obj, timeout)``: whether ``api`` reported ``obj`` (and only it)
#: readable within ``timeout`` seconds, as the stdlib documents each one's result.
WAIT_READABLE = '''
def wait_readable(api, obj, timeout):
    if api == "select":
        r, w, x = select.select([obj], [], [], timeout)
        return len(r) == 1 and r[0] is obj, repr((r, w, x))
    if api == "selectors":
        with selectors.DefaultSelector() as sel:
            sel.register(obj, selectors.EVENT_READ)
            events = sel.select(timeout)
        ok = (len(events) == 1 and events[0][0].fileobj is obj
              and bool(events[0][1] & selectors.EVENT_READ))
        return ok, repr([(key.fd, ev) for key, ev in events])
    p = select.poll()
    p.register(obj, select.POLLIN)
    events = p.poll(timeout * 1000)             # milliseconds
    ok = len(events) == 1 and events[0][0] == obj.fileno() and bool(events[0][1] & select.POLLIN)
    return ok, repr(events)
'''

SELECT_SESSION = WAIT_READABLE + '''
results = {}
for API in sys.argv[3].split(","):
    sess = kcpgo.dial(ADDR, mode="fast3", stream=True, timeout=5)
    sess.sendall(b"ECHO 0.5\\nping")            # the peer answers "ping" after 0.5 s
    t0 = time.monotonic()
    ok, got = wait_readable(API, sess, 3)
    elapsed = time.monotonic() - t0
    sess.settimeout(0)
    try:
        data = sess.recv(100).decode()
    except BlockingIOError:
        data = None
    sess.close()
    results[API] = dict(ok=ok, got=got, elapsed=elapsed, data=data)
report(**results)
'''

SELECT_LISTENER = WAIT_READABLE + '''
clients = []
results = {}


def connect(ln):
    c = kcpgo.dial(ln.getsockname(), mode="fast3", stream=True)
    c.sendall(b"hello")                     # the first datagram: a new session for ln
    clients.append(c)


for API in sys.argv[3].split(","):
    ln = kcpgo.listen(("127.0.0.1", 0), mode="fast3", stream=True)
    threading.Timer(0.5, connect, (ln,)).start()
    t0 = time.monotonic()
    ok, got = wait_readable(API, ln, 3)
    elapsed = time.monotonic() - t0
    ln.settimeout(0)
    try:
        s, _ = ln.accept()
        accepted = True
    except BlockingIOError:
        accepted = False
    results[API] = dict(ok=ok, got=got, elapsed=elapsed, accepted=accepted)
report(**results)
'''

APIS = ["select", "selectors", "poll"]
MODES = ["unpatched", "patched"]
#: The patched variants of the thread tests (hub mode, threads are greenlets) run with
#: KCPGO_SLOW=1 only: the 6-minute default suite keeps the unpatched ones, which are new.
THREAD_MODES = ["unpatched", pytest.param("patched", marks=pytest.mark.slow)]


@pytest.mark.parametrize("mode", MODES)
def test_session_readable_in_select_when_reply_arrives(peer, mode):
    """``select.select([sess], [], [], 3)``, ``selectors.DefaultSelector().select(3)`` and
    ``select.poll().poll(3000)`` on a client session whose echo reply is on its way (the peer
    sends it 0.5 s after the request, while the child already waits) return the session as
    readable (the stdlib docs: select returns the ready subset of the objects passed,
    selectors ``(key, events)`` with ``key.fileobj``, poll ``(fd, event)`` pairs) within
    ~1 s of the reply, and a non-blocking ``recv`` then returns the reply (README: fileno is
    readable exactly when recv would not block). Issue 12, Why bullet 1 and Deliver 3:
    unpatched (thread runtime) and patched (gevent's select) alike. Unpatched today the
    hub that would read the reply is stopped by the real select: ``[]`` after 3 s."""
    results = run_child(script(SELECT_SESSION), mode, str(peer.port), ",".join(APIS))
    for api in APIS:                            # one child tries each API in turn
        out = results[api]
        assert out["ok"], f"{api} did not report the session readable: {out}"
        assert 0.4 <= out["elapsed"] < 1.5, (api, out)  # the reply left 0.5 s after t0
        assert out["data"] == "ping", (api, out)


@pytest.mark.parametrize("mode", MODES)
def test_listener_readable_in_select_when_first_datagram_arrives(mode):
    """A listener's ``fileno()`` is reported readable by ``select``/``selectors``/``poll``
    once a client's first datagram (sent 0.5 s after the wait began, from a timer thread)
    has arrived, and a non-blocking ``accept()`` then succeeds (README, Listener: fileno is
    readable exactly when accept would not block; issue 12, Deliver 3). Unpatched today
    nobody reads the UDP socket while the real select blocks the thread: ``[]`` after 3 s."""
    results = run_child(script(SELECT_LISTENER), mode, "0", ",".join(APIS))
    for api in APIS:                            # one child tries each API in turn
        out = results[api]
        assert out["ok"], f"{api} did not report the listener readable: {out}"
        assert 0.4 <= out["elapsed"] < 1.5, (api, out)  # the datagram left 0.5 s after t0
        assert out["accepted"], (api, out)


# ---------------------------------------------------------------- 2. time.sleep while receiving

PUSH_WHILE_SLEEPING = '''
TAG, RUNTIME = sys.argv[3], sys.argv[4]
if RUNTIME == "set-hub":
    kcpgo.set_runtime("hub")
N = 3_000_000
# A receive window of 4096 segments (5.6 MB) takes the whole push without a recv.
sess = kcpgo.dial(ADDR, mode="fast3", stream=True, window=(128, 4096), timeout=10)
sess.sendall(f"PUSH {N} {TAG}\\n".encode())
t0 = time.monotonic()
time.sleep(2)                       # the thread that created the session sleeps
slept = time.monotonic() - t0
got = bytearray()
sess.setblocking(False)
try:
    while len(got) < N:
        got += sess.recv(1 << 20)
except BlockingIOError:
    pass
buffered = len(got)                 # what had arrived by the end of the sleep
sess.settimeout(10)
while len(got) < N:
    got += sess.recv(1 << 20)
report(slept=slept, buffered=buffered,
       intact=bytes(got) == random.Random(N).randbytes(N))
'''


def push_while_sleeping(peer: Peer, tag: str, mode: str = "unpatched", runtime: str = "auto",
                        env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    out = run_child(script(PUSH_WHILE_SLEEPING), mode, str(peer.port), tag, runtime, env=env)
    out["pushed"] = peer.pushed(tag)
    return out


def test_sleeping_thread_does_not_stall_a_transfer(peer):
    """While the thread that created the session sits in ``time.sleep(2)``, a peer in
    another process pushes 3 MB to it: the peer's ``sendall`` finishes within 1.5 s of the
    request (its send window is 128 segments, so that needs the child's ACKs for ~2,000
    segments during the sleep), and when the sleep ends most of the data (>= 2 MB) is
    already buffered for a non-blocking ``recv``; all 3 MB arrive intact. Issue 12, Why
    bullet 2 / Deliver 1 ("sessions keep ACKing and retransmitting whatever the application
    threads do"). Today nothing is ACKed during the sleep: the push takes >= 2 s."""
    out = push_while_sleeping(peer, "thread")
    assert out["intact"], out
    assert out["slept"] >= 2.0, out
    assert out["pushed"].replace(".", "").isdigit(), out
    assert float(out["pushed"]) < 1.5, f"the transfer stalled while the client slept: {out}"
    assert out["buffered"] >= 2_000_000, out


@pytest.mark.slow       # a control (it passed before issue 12): kept out of the 6-minute suite
def test_sleep_under_monkey_patching_does_not_stall_either(peer):
    """The same scenario in a patched child, where ``time.sleep`` is gevent's and the hub
    keeps running (model (a), unchanged by issue 12): the push completes within 1.5 s and
    >= 2 MB is buffered after the sleep. It passes today, and shows that the thresholds of
    :func:`test_sleeping_thread_does_not_stall_a_transfer` are met by a session that runs."""
    out = push_while_sleeping(peer, "patched", mode="patched")
    assert out["intact"], out
    assert out["pushed"].replace(".", "").isdigit(), out
    assert float(out["pushed"]) < 1.5, out
    assert out["buffered"] >= 2_000_000, out


# ---------------------------------------------------------------- 3. one session, many threads

DUPLEX = '''
sess = kcpgo.dial(ADDR, mode="fast3", stream=True, window=(1024, 1024), timeout=10)
sess.sendall(b"ECHO 0\\n")
data = random.Random(1).randbytes(1 << 20)
got = bytearray()
errors = {}


def read_all():
    while len(got) < len(data):
        chunk = sess.recv(65536)
        if not chunk:
            break
        got.extend(chunk)


threads = [threading.Thread(target=guarded(errors, "reader", read_all)),
           threading.Thread(target=guarded(errors, "writer", sess.sendall, data))]
for t in threads:
    t.start()
for t in threads:
    t.join(20)
report(errors=errors, hung=[t.name for t in threads if t.is_alive()], received=len(got),
       same=hashlib.sha256(got).digest() == hashlib.sha256(data).digest())
'''

CLOSE_WAKES = '''
sess = kcpgo.dial(ADDR, mode="fast3", stream=True, timeout=10)
sess.sendall(b"ECHO 0\\n")                  # the peer holds the session and sends nothing
res = {}


def reader():
    try:
        sess.recv(100)
        res["outcome"] = "recv returned"
    except OSError as e:
        res["woke"] = time.monotonic()
        res["outcome"] = f"{type(e).__name__}: {e}"
        res["errno"] = e.errno
    except BaseException as e:
        res["outcome"] = f"{type(e).__name__}: {e}"


def closer():
    res["closed"] = time.monotonic()
    sess.close()


r = threading.Thread(target=reader)
r.start()
time.sleep(0.3)                             # r is blocked in recv by now
c = threading.Thread(target=closer)
c.start()
c.join(5)
r.join(5)
res["latency"] = res["woke"] - res["closed"] if "woke" in res and "closed" in res else None
res["hung"] = r.is_alive() or c.is_alive()
report(**res)
'''

TIMEOUT_EXACT = '''
WHERE = sys.argv[3]
sess = kcpgo.dial(ADDR, mode="fast3", stream=True)   # the peer never hears of it
sess.settimeout(0.3)
res = {}


def measure():
    t0 = time.monotonic()
    try:
        sess.recv(100)
        res["outcome"] = "recv returned"
    except TimeoutError:
        res["outcome"] = "TimeoutError"
    except BaseException as e:
        res["outcome"] = f"{type(e).__name__}: {e}"
    res["elapsed"] = time.monotonic() - t0


if WHERE == "main":
    measure()
else:
    t = threading.Thread(target=measure)
    t.start()
    t.join(5)
report(**res)
'''

TWO_READERS = '''
TAG = sys.argv[3]
N = 1_000_000
stream = random.Random(N).randbytes(N)
sess = kcpgo.dial(ADDR, mode="fast3", stream=True, window=(128, 1024), timeout=0.5)
sess.sendall(f"PUSH {N} {TAG}\\n".encode())
chunks = {"a": [], "b": []}
total = [0]
lock = threading.Lock()
errors = {}
deadline = time.monotonic() + 15


def read(name):
    while total[0] < N and time.monotonic() < deadline:
        try:
            chunk = sess.recv(4096)
        except TimeoutError:
            continue                        # the other reader may have taken the last bytes
        with lock:
            chunks[name].append(chunk)
            total[0] += len(chunk)
        time.sleep(0.001)                   # some work between reads: the other one's turn


def interleaves(a, b):
    """Whether the two threads' chunks, each list in its own order, merge into stream."""
    ends_a = [0]
    for c in a:
        ends_a.append(ends_a[-1] + len(c))
    ends_b = [0]
    for c in b:
        ends_b.append(ends_b[-1] + len(c))
    if ends_a[-1] + ends_b[-1] != len(stream):
        return False
    frontier = {(0, 0)}
    for _ in range(len(a) + len(b)):
        following = set()
        for i, j in frontier:
            pos = ends_a[i] + ends_b[j]
            if i < len(a) and stream.startswith(a[i], pos):
                following.add((i + 1, j))
            if j < len(b) and stream.startswith(b[j], pos):
                following.add((i, j + 1))
        frontier = following
        if not frontier:
            return False
    return True


threads = [threading.Thread(target=guarded(errors, n, read, n)) for n in ("a", "b")]
for t in threads:
    t.start()
for t in threads:
    t.join(20)
report(errors=errors, hung=[t.name for t in threads if t.is_alive()], total=total[0],
       counts={n: len(c) for n, c in chunks.items()},
       exact=interleaves(chunks["a"], chunks["b"]))
'''


@pytest.mark.parametrize("mode", THREAD_MODES)
def test_recv_and_sendall_from_two_other_threads(peer, mode):
    """A session created in the main thread; one ``threading.Thread`` receives while another
    ``sendall``s 1 MB, which the peer echoes as it comes: the reader gets exactly the 1 MB
    sent (sha256) and neither thread fails or hangs. Issue 12, Why bullet 3 / Deliver 2 ("one
    thread may recv while another sendalls", as on a socket). Unpatched today both threads
    raise ``RuntimeError`` (the session belongs to the main thread's hub); patched (threads
    are greenlets, model (a)) it passes today."""
    out = run_child(script(DUPLEX), mode, str(peer.port))
    assert out["errors"] == {} and out["hung"] == [], out
    assert out["received"] == 1 << 20 and out["same"], out


@pytest.mark.parametrize("mode", THREAD_MODES)
def test_close_from_a_third_thread_wakes_a_blocked_recv(peer, mode):
    """A thread blocked in ``recv`` on a session created by the main thread gets
    ``OSError(EBADF)`` less than 1 s after a third thread calls ``close()``. Issue 12,
    Deliver 2 ("close() from any thread wakes every waiter with OSError(EBADF)"), README
    (KCPSocket.close: every waiter gets EBADF; gevent's socket does the same). Unpatched
    today the reader raises ``RuntimeError`` at once instead of blocking."""
    out = run_child(script(CLOSE_WAKES), mode, str(peer.port))
    assert not out["hung"], out
    assert out.get("errno") == 9, out           # errno.EBADF
    assert out["latency"] is not None and 0 <= out["latency"] < 1.0, out


@pytest.mark.parametrize("mode", THREAD_MODES)
@pytest.mark.parametrize("where", ["main", "other"])
def test_recv_timeout_is_exact_in_any_thread(peer, where, mode):
    """``settimeout(0.3)`` then ``recv`` with nothing coming raises ``TimeoutError`` after
    0.28..0.6 s, in the creating thread and in another one (stdlib socket docs: the timeout
    bounds the blocking call; issue 12, Deliver 2 "timeouts are exact"; the lower bound
    allows the clocks' granularity, the upper a loaded 2-core machine). Unpatched today the
    other thread gets ``RuntimeError`` at once."""
    out = run_child(script(TIMEOUT_EXACT), mode, str(peer.port), where)
    assert out["outcome"] == "TimeoutError", out
    assert 0.28 <= out["elapsed"] <= 0.6, out


@pytest.mark.parametrize("mode", THREAD_MODES)
def test_two_threads_reading_one_session_get_each_byte_once(peer, mode):
    """Two threads ``recv(4096)`` the same session while the peer pushes 1 MB: together
    they receive exactly 1 MB, and the two threads' chunks, each in its own order, interleave
    into the pushed bytes (each recv takes a contiguous run from the front of the stream: no
    byte duplicated, lost or reordered), as two threads reading one TCP socket would.
    Issue 12, Deliver 2 ("two threads reading the same session at once behave as they would
    on a socket"). Unpatched today both threads raise ``RuntimeError``."""
    out = run_child(script(TWO_READERS), mode, str(peer.port), f"two-readers-{mode}")
    assert out["errors"] == {} and out["hung"] == [], out
    assert out["total"] == 1_000_000, out
    assert out["exact"], out


# ---------------------------------------------------------------- 5. clean exit

#: Each variant leaves something open, prints END and falls off the end of the module.
LEFT_OPEN = '''
WHAT = sys.argv[3]
if WHAT == "session":
    s = kcpgo.dial(ADDR, mode="fast3", stream=True, timeout=5)
    s.sendall(b"ECHO 0\\nhello")
    assert s.recv(5) == b"hello"
elif WHAT == "listener":
    ln = kcpgo.listen(("127.0.0.1", 0), mode="fast3", stream=True)
    c = kcpgo.dial(ln.getsockname(), mode="fast3", stream=True, timeout=5)
    c.sendall(b"hello")
    ln.settimeout(5)
    a, _ = ln.accept()
    assert a.recv(5) == b"hello"
elif WHAT == "recv-thread":                 # created here, blocked in recv in a daemon thread
    s = kcpgo.dial(ADDR, mode="fast3", stream=True)
    s.sendall(b"ECHO 0\\n")
    threading.Thread(target=s.recv, args=(100,), daemon=True).start()
    time.sleep(0.3)
elif WHAT == "recv-thread-own":             # created and blocked in a daemon thread
    started = threading.Event()

    def own():
        s = kcpgo.dial(ADDR, mode="fast3", stream=True)
        s.sendall(b"ECHO 0\\n")
        started.set()
        s.recv(100)

    threading.Thread(target=own, daemon=True).start()
    started.wait(5)
    time.sleep(0.3)
print("END", flush=True)
'''


@pytest.mark.parametrize("what", ["session", "listener", "recv-thread", "recv-thread-own"])
def test_interpreter_exits_cleanly_with_objects_open(peer, what):
    """An unpatched script that leaves a session open (after traffic both ways), a listener
    with an accepted session and a client, or a daemon thread blocked in ``recv`` (on a
    session of the main thread, or of its own), and falls off the end of the module: it exits
    with status 0 within 3 s of its last line, with no traceback, "Exception ignored" or
    fatal error on stderr. Issue 12, Deliver 1 (the I/O thread is "stopped cleanly at exit")
    and Deliver 7 ("clean interpreter exit with sessions still open"); a daemon thread
    blocked in a socket call does not hold CPython's exit either (threading docs)."""
    proc = subprocess.Popen([sys.executable, "-c", script(LEFT_OPEN), "unpatched",
                             str(peer.port), what], cwd=ROOT, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = read_line(proc.stdout, 20)
        ended = time.monotonic()
        if line != "END\n":
            proc.kill()
            proc.wait()
            pytest.fail(f"the script did not reach its end: {line!r}; stderr: "
                        f"{proc.stderr.read().decode()}")
        try:
            rc = proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"still running 3 s after its last line; stderr: "
                        f"{proc.stderr.read().decode()}")
        took = time.monotonic() - ended
        err = proc.stderr.read().decode()
    finally:
        reap(proc, kill=True)
        proc.stdout.close()
        proc.stderr.close()
    assert rc == 0, err
    for bad in ("Traceback", "Exception ignored", "Fatal Python error"):
        assert bad not in err, err
    assert took < 3, took


# ---------------------------------------------------------------- 6. greenlets, no patching

GREENLET_SERVER = '''
import gevent
import gevent.monkey

N = 200_000
data = random.Random(2).randbytes(N)
ln = kcpgo.listen(("127.0.0.1", 0), mode="fast3", stream=True, window=(256, 256))


def serve():
    sess, _ = ln.accept()
    echoed = 0
    while echoed < N:
        chunk = sess.recv(65536)
        if not chunk:
            break
        sess.sendall(chunk)
        echoed += len(chunk)
    sess.drain(timeout=5)
    sess.close()
    return echoed


server = gevent.spawn(serve)
c = kcpgo.dial(ln.getsockname(), mode="fast3", stream=True, window=(256, 256), timeout=10)
c.sendall(data)
got = bytearray()
while len(got) < N:
    got += c.recv(65536)
server.join(10)
report(patched=gevent.monkey.is_module_patched("socket"), same=bytes(got) == data,
       echoed=server.value, server_error=repr(server.exception))
'''

GREENLET_DUPLEX = '''
import gevent
import gevent.monkey

N = 500_000
data = random.Random(3).randbytes(N)
sess = kcpgo.dial(ADDR, mode="fast3", stream=True, window=(1024, 1024), timeout=10)
sess.sendall(b"ECHO 0\\n")


def read_all():
    got = bytearray()
    while len(got) < N:
        got += sess.recv(65536)
    return bytes(got)


writer = gevent.spawn(sess.sendall, data)
reader = gevent.spawn(read_all)
gevent.joinall([writer, reader], timeout=20)
report(patched=gevent.monkey.is_module_patched("socket"), same=reader.value == data,
       writer_error=repr(writer.exception), reader_error=repr(reader.exception))
'''


def test_unpatched_server_greenlet_and_client_in_one_thread():
    """A plain (unpatched) program: ``gevent.spawn`` a server greenlet that accepts and
    echoes while the main greenlet is the client, 200 KB both ways: the echo comes back
    intact. This is README model (b), which issue 12, Deliver 1, says must keep working
    (blocking waits cooperate with the calling thread's own hub). Passes today."""
    out = run_child(script(GREENLET_SERVER), "unpatched", "0")
    assert out["patched"] is False
    assert out["server_error"] == "None", out
    assert out["echoed"] == 200_000 and out["same"], out


def test_unpatched_writer_and_reader_greenlets_on_one_session(peer):
    """A plain program: a writer greenlet ``sendall``s 500 KB beside a reader greenlet on
    the same session (the peer echoes): the reader gets the same bytes, neither fails.
    Issue 12, Deliver 1 ("a writer greenlet beside a reading one ... keep working"). Passes
    today."""
    out = run_child(script(GREENLET_DUPLEX), "unpatched", str(peer.port))
    assert out["patched"] is False
    assert (out["writer_error"], out["reader_error"]) == ("None", "None"), out
    assert out["same"], out


# ---------------------------------------------------------------- 7. choosing the runtime

RUNTIME = '''
import os
import sys
ORDER = sys.argv[1]
if ORDER == "gevent-first":
    from gevent import monkey
    monkey.patch_all()
import json

import kcpgo
from tests.support.children import reap

if ORDER == "kcpgo-first":
    from gevent import monkey
    monkey.patch_all()
if len(sys.argv) > 2:
    try:
        kcpgo.set_runtime(sys.argv[2])
    except Exception as e:
        print(json.dumps({"set_error": type(e).__name__}))
        raise SystemExit(0)
print(json.dumps({"runtime": kcpgo.get_runtime()}))
'''


@pytest.mark.parametrize("order,env,set_to,expected", [
    ("unpatched", None, None, "thread"),
    ("gevent-first", None, None, "hub"),
    ("kcpgo-first", None, None, "hub"),
    ("unpatched", "hub", None, "hub"),
    ("unpatched", "thread", None, "thread"),
    ("unpatched", "auto", None, "thread"),
    ("unpatched", None, "hub", "hub"),
    ("unpatched", "hub", "auto", "thread"),
    ("gevent-first", None, "auto", "hub"),
])
def test_get_runtime(order, env, set_to, expected):
    """``kcpgo.get_runtime()`` is the effective mode: "thread" in an unpatched program,
    "hub" once gevent.monkey has patched (before or after ``import kcpgo``, as long as no
    session exists yet); ``KCPGO_RUNTIME`` sets the default and ``set_runtime(mode)``
    overrides it ("auto" chooses again). Issue 12, Deliver 1 ("automatic and documented,
    with an explicit override"), and the lead's design (modes auto/thread/hub). Today
    ``get_runtime`` does not exist."""
    extra = {"KCPGO_RUNTIME": env} if env else {}
    args = [order] + ([set_to] if set_to else [])
    out = run_child(RUNTIME, *args, env=child_env(**extra))
    assert out == {"runtime": expected}


def test_set_runtime_rejects_an_unknown_mode():
    """``set_runtime("fibers")`` raises ``ValueError`` (STYLE.md: ``ValueError`` for bad
    arguments; the modes are "auto", "thread", "hub")."""
    out = run_child(RUNTIME, "unpatched", "fibers")
    assert out == {"set_error": "ValueError"}


@pytest.mark.parametrize("how", [pytest.param("env", marks=pytest.mark.slow), "set-hub"])
def test_hub_mode_stalls_while_the_owning_thread_sleeps(peer, how):
    """With the hub runtime forced in an unpatched program (``KCPGO_RUNTIME=hub`` or
    ``kcpgo.set_runtime("hub")``), sessions run only while their thread is inside kcpgo, as
    today: the 3 MB push of :func:`test_sleeping_thread_does_not_stall_a_transfer` waits for
    the client's 2 s sleep to end (>= 1.5 s).
    The README documents this stall for hub mode (issue 12, Why bullet 2 describes it).
    The ``env`` variant passes today (the variable is ignored and today's runtime is hub);
    ``set-hub`` fails today on the missing ``set_runtime``."""
    env = child_env(KCPGO_RUNTIME="hub") if how == "env" else None
    out = push_while_sleeping(peer, f"hub-{how}", runtime=how, env=env)
    assert out["intact"], out
    assert out["pushed"].replace(".", "").isdigit(), out
    assert float(out["pushed"]) >= 1.5, out
