"""Worker processes of a multi-core kcpgo server: ``workers=N`` of
:class:`kcpgo.server.KCPServer` and of ``python -m kcpgo tunnel server --workers N``.

A Python server stops at one core (the GIL). kcp-go's way past that is one listener per core;
here it is one *process* per core, each with its own UDP socket bound to the same address with
``SO_REUSEPORT`` (:func:`kcpgo.listen`'s ``reuse_port``). Linux hashes each datagram's address
4-tuple to one socket of the group, so all of one client's datagrams reach one worker, which is
what KCP's address-keyed sessions need. Each worker has its own sessions and shares nothing.
The set of sockets must stay the same: a worker that ends (or starts) changes the hash, and
some clients then land on a worker that does not know them (to it they are new sessions).

What this module does (the servers decide what a worker runs):

* :func:`fork_worker`: fork one process that dies with its parent (``PR_SET_PDEATHSIG``:
  SIGTERM), runs a body and leaves with ``os._exit`` (never the parent's ``atexit`` handlers,
  nor the code after the call that forked it);
* :func:`serve_isolated`: run a serve loop in a new OS thread of a forked child, so that
  nothing the parent had scheduled on the forking thread's gevent hub (greenlets of a
  monkey-patched program, the parent's sessions) ever runs in the child, while the main
  thread waits, handling SIGTERM (stop, then leave within a bound) and ignoring SIGINT (the
  parent, which got the same Ctrl-C, stops its workers);
* :func:`release_inherited`: make a child drop its descriptors of the parent's UDP socket
  without closing descriptor numbers the parent's objects still hold;
* :class:`WorkerPool`: the parent's side: start, notice deaths, stop (SIGTERM, a bounded wait,
  SIGKILL) and reap.

Linux only (:func:`check_workers`): other systems' ``SO_REUSEPORT`` does not spread UDP
clients over the sockets.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import stat
import sys
from functools import partial
from typing import Any, Callable, Dict, Optional

from gevent.monkey import get_original

from .runtime._originals import real_select, real_sleep, start_new_thread
from .runtime.clock import monotonic

__all__ = ["WorkerPool", "fork_worker", "serve_isolated", "release_inherited", "check_workers",
           "worker_main", "ready", "STOP_TIMEOUT", "READY_TIMEOUT"]

log = logging.getLogger("kcpgo.server")

#: Seconds a stopping worker gets after SIGTERM before it is killed (SIGKILL by the parent;
#: a worker whose parent died ends itself that much later, through SIGALRM).
STOP_TIMEOUT = 10.0
#: linux/prctl.h
_PR_SET_PDEATHSIG = 1
#: Seconds the parent waits, at most, for new workers to bind their sockets (:func:`ready`).
READY_TIMEOUT = 10.0
#: Seconds between checks while the parent waits for starting or stopping workers.
_REAP_POLL = 0.005

#: In a worker: the pipe on which it tells the parent it is ready (:func:`ready`).
_ready_fd: Optional[int] = None

_waitpid = get_original("os", "waitpid")


def check_workers(workers: Any, where: str) -> int:
    """``workers`` as an int >= 1. ``TypeError``/``ValueError`` naming ``where`` for a bad
    value, ``ValueError`` for more than one worker where Linux's ``SO_REUSEPORT`` or
    ``os.fork`` is missing."""
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(f"{where}: workers must be an int >= 1, got {workers!r}")
    if workers < 1:
        raise ValueError(f"{where}: workers must be >= 1, got {workers}")
    if workers > 1 and (not sys.platform.startswith("linux") or not hasattr(os, "fork")
                        or not hasattr(__import__("socket"), "SO_REUSEPORT")):
        raise ValueError(f"{where}: workers={workers} needs Linux (SO_REUSEPORT spreading UDP "
                         f"clients over the processes' sockets, and fork()); this is "
                         f"{sys.platform}")
    return workers


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when its parent (the thread that forked it) ends; leave at once
    if it already has."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("kcpgo worker %d: prctl(PR_SET_PDEATHSIG) failed (errno %d): it will "
                        "outlive its parent", os.getpid(), ctypes.get_errno())
    except (OSError, AttributeError, ImportError) as e:   # pragma: no cover - not Linux
        log.warning("kcpgo worker %d: no PR_SET_PDEATHSIG (%s): it will outlive its parent",
                    os.getpid(), e)
    if os.getppid() != parent:
        os._exit(0)


def _flush_std() -> None:
    for f in (sys.stdout, sys.stderr):
        try:
            if f is not None:
                f.flush()
        except (OSError, ValueError):
            pass


def ready() -> None:
    """In a worker: tell the parent that this worker's socket is bound (its :meth:`WorkerPool.
    start` waits for that, so that the set of sockets, and so the kernel's choice of worker
    for each client, is settled when the server starts serving). Elsewhere, nothing."""
    global _ready_fd
    fd, _ready_fd = _ready_fd, None
    if fd is not None:
        try:
            os.write(fd, b"!")
        finally:
            os.close(fd)


def fork_worker(index: int, body: Callable[[], int], ready_fd: Optional[int] = None) -> int:
    """Fork worker ``index``; returns its pid in the parent. In the child, ``body()`` runs and
    its result is the exit status (1 after an exception, which is logged to ``kcpgo.server``);
    the child never returns from here. ``ready_fd``: the write end of a pipe on which the child
    calls :func:`ready`. ``OSError`` if the system cannot fork."""
    global _ready_fd
    parent = os.getpid()
    _flush_std()                # else the child would print the parent's buffered output too
    from gevent.os import fork_gevent       # raw fork, then the forking thread's hub re-armed
    pid = fork_gevent()
    if pid:
        return pid
    code = 1
    _ready_fd = ready_fd
    try:
        _die_with_parent(parent)
        code = body()
    except SystemExit as e:
        code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    except BaseException:
        log.exception("kcpgo worker %d (pid %d) failed", index, os.getpid())
    finally:
        _flush_std()
        os._exit(code)
    raise AssertionError("unreachable")     # pragma: no cover


def serve_isolated(serve: Callable[[], None], stop: Callable[[], None],
                   stop_timeout: float = STOP_TIMEOUT) -> int:
    """In a forked child: run ``serve()`` in a new OS thread and wait for it in this one;
    returns 0 when it returned, 1 when it raised (logged). SIGTERM calls ``stop()`` (from a
    signal handler: it must only set flags and write to a pipe) and arms SIGALRM, whose
    default action ends the process ``stop_timeout`` s later if ``serve()`` has not returned
    by then; SIGINT is ignored. Call it from the child's only thread (the one that forked)."""
    rfd, wfd = os.pipe()
    result = [1]

    def thread_main() -> None:
        try:
            serve()
            result[0] = 0
        except BaseException:
            log.exception("kcpgo worker (pid %d) failed", os.getpid())
        finally:
            os.write(wfd, b"!")

    def on_term(signum: int, frame: Any) -> None:
        signal.alarm(max(1, int(stop_timeout + 0.999)))
        stop()

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, on_term)
    start_new_thread(thread_main, ())
    while True:
        done, _, _ = real_select([rfd], [], [])    # (EINTR: the handler ran; PEP 475 retries)
        if done:
            return result[0]


def release_inherited(sock: Any) -> None:
    """In a forked child: point every descriptor of the socket ``sock`` names (its own and the
    duplicates a listener made of it) at ``/dev/null``, so that this process no longer holds
    the parent's socket, while the numbers stay taken (the parent's objects, copied into the
    child, may still close them; a number reused meanwhile would close another socket).
    Linux (``/proc/self/fd``); does nothing where that cannot be read."""
    try:
        target = os.fstat(sock.fileno())
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except (OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in fds:
            if fd == null:
                continue
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if stat.S_ISSOCK(st.st_mode) and (st.st_ino, st.st_dev) == \
                    (target.st_ino, target.st_dev):
                os.dup2(null, fd)
    finally:
        os.close(null)


def worker_main(server: Any, index: int, poll_interval: float) -> int:
    """Worker ``index`` of a :class:`kcpgo.server.KCPServer` with ``workers=N``, in its forked
    process: drop the parent's UDP socket and server state (its listener, sessions, wake-up
    pipe, handler threads: all the parent's), bind a socket of its own to the same address
    and serve in a new thread (:func:`serve_isolated`) until SIGTERM, or until a handler
    calls ``shutdown()``; then ``server_close()``. Returns the exit status."""
    from .facade.api import udp_socket
    old = server._kcpgo
    release_inherited(server.socket)
    old.close_pipe()            # (no loop of this process waits on it: the parent's hub is frozen)
    st = server._kcpgo = type(old)(old.options)     # a fresh _KCPState: no workers of its own
    st.index, st.dualstack = index, old.dualstack
    vars(server).pop("_threads", None)              # ThreadingMixIn's list: the parent's

    def serve() -> None:
        server.socket = udp_socket(server.address_family, st.dualstack, True,
                                   where=type(server).__name__)
        server.server_bind()
        ready()
        server.server_activate()
        log.debug("kcpgo worker %d (pid %d) serving %s", index, os.getpid(),
                  server.server_address)
        try:
            server.serve_forever(poll_interval)
        finally:
            server.server_close()

    def stop() -> None:                             # (a signal handler: a flag and a pipe)
        st.shutdown_request = True
        st.wake()
    return serve_isolated(serve, stop, getattr(server, "worker_stop_timeout", STOP_TIMEOUT))


class WorkerPool:
    """The parent's side of ``count - 1`` worker processes (the parent itself is worker 0).

    :meth:`start` forks them; :meth:`poll` logs (once) each that ended on its own;
    :meth:`stop` ends and reaps them all. Not thread-safe: the serving thread uses it.
    """

    def __init__(self, count: int, stop_timeout: float = STOP_TIMEOUT) -> None:
        self.count = count
        self.stop_timeout = stop_timeout
        #: pid -> worker index, of the workers still to be reaped
        self.pids: Dict[int, int] = {}
        #: Set once :meth:`start` returned (the workers said they are ready, or the wait ended).
        self.ready = False

    @property
    def running(self) -> bool:
        return bool(self.pids)

    def start(self, body: Callable[[int], int],
              wait: Optional[Callable[[float], None]] = None) -> None:
        """Fork workers 1..count-1, each running ``body(index)`` (:func:`fork_worker`), and
        wait (``wait``: how to sleep) until each called :func:`ready` or ended, at most
        :data:`READY_TIMEOUT` s. If a fork fails, the workers already started are stopped and
        the ``OSError`` raised."""
        rfd, wfd = os.pipe()
        try:
            try:
                for index in range(1, self.count):
                    pid = fork_worker(index, partial(body, index), wfd)
                    self.pids[pid] = index
            finally:
                os.close(wfd)
            self._wait_ready(rfd, wait or real_sleep)
        except BaseException:
            self.stop(wait)
            raise
        finally:
            os.close(rfd)
        self.ready = True
        log.info("kcpgo: worker processes %s serving beside pid %d",
                 ", ".join(str(p) for p in self.pids), os.getpid())

    def _wait_ready(self, rfd: int, pause: Callable[[float], None]) -> None:
        os.set_blocking(rfd, False)
        deadline = monotonic() + READY_TIMEOUT
        got = 0
        while got < len(self.pids):
            try:
                chunk = os.read(rfd, 64)
            except BlockingIOError:
                chunk = None
            if chunk == b"":
                return                  # every worker said so, or ended (poll() reports it)
            got += len(chunk or b"")
            if got >= len(self.pids):
                return
            if monotonic() >= deadline:
                log.warning("kcpgo: %d of %d workers not ready after %g s", len(self.pids) -
                            got, len(self.pids), READY_TIMEOUT)
                return
            pause(_REAP_POLL)

    def poll(self) -> None:
        """Reap workers that ended on their own, logging each at WARNING: the kernel now
        spreads clients over fewer sockets, and some of them land on another worker."""
        for pid, index in list(self.pids.items()):
            status = self._reap(pid)
            if status is not None:
                del self.pids[pid]
                log.warning("kcpgo worker %d (pid %d) ended (%s); %d of %d workers left",
                            index, pid, _describe(status), len(self.pids) + 1, self.count)

    def watch(self, sleep: Callable[[float], None], period: float = 1.0) -> None:
        """:meth:`poll` every ``period`` s with ``sleep`` (``gevent.sleep`` in a greenlet)
        while workers run."""
        while self.pids:
            sleep(period)
            self.poll()

    def stop(self, wait: Optional[Callable[[float], None]] = None) -> None:
        """SIGTERM every worker, wait up to :attr:`stop_timeout` s for them to end (``wait``:
        how to sleep; cooperative where the caller runs a hub), SIGKILL the rest and reap
        them. Idempotent."""
        self.ready = False
        if not self.pids:
            return
        pause = wait or real_sleep
        for pid in self.pids:
            _signal(pid, signal.SIGTERM)
        deadline = monotonic() + self.stop_timeout
        while self.pids:
            for pid, index in list(self.pids.items()):
                status = self._reap(pid)
                if status is not None:
                    del self.pids[pid]
                    if status not in (0, signal.SIGTERM):
                        log.info("kcpgo worker %d (pid %d) stopped: %s", index, pid,
                                 _describe(status))
            if not self.pids or monotonic() >= deadline:
                break
            pause(_REAP_POLL)
        for pid, index in list(self.pids.items()):
            log.warning("kcpgo worker %d (pid %d) did not stop within %g s: killed", index,
                        pid, self.stop_timeout)
            _signal(pid, signal.SIGKILL)
            self._reap(pid, block=True)
            del self.pids[pid]

    @staticmethod
    def _reap(pid: int, block: bool = False) -> Optional[int]:
        """The raw wait status of an ended worker (reaped now), or None while it runs. A worker
        someone else reaped (a SIGCHLD handler, gevent's child watchers) counts as ended."""
        try:
            got, status = _waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return 0
        except InterruptedError:        # pragma: no cover - PEP 475 retries
            return None
        if got == 0:
            return None
        return status


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError as e:
        if e.errno != errno.ESRCH:      # pragma: no cover - not ours any more
            raise


def _describe(status: int) -> str:
    """A raw wait status as text."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:              # pragma: no cover
            name = str(sig)
        return f"killed by {name}"
    if os.WIFEXITED(status):
        return f"exit status {os.WEXITSTATUS(status)}"
    return f"wait status {status}"      # pragma: no cover
