"""The unpatched stdlib objects the runtime needs, whatever ``gevent.monkey`` did.

* the real socket class: the reader waits for readiness with its own gevent io watcher and must
  not go through gevent's cooperative wrapper for every datagram;
* the real thread identity and thread-local: one runtime per OS thread, even after
  ``patch_all()`` (a patched ``threading.local`` would be per greenlet);
* the real locks, for flags set from any thread and for the stack lock
  (:attr:`kcpgo.runtime.scheduler.Runtime.lock`);
* the real ``time.sleep`` and ``select.select``, for waits that must block the thread;
* the real thread start, for the I/O thread (:mod:`kcpgo.runtime.iothread`): under
  ``patch_all()`` ``threading.Thread`` starts a greenlet.
"""
from __future__ import annotations

from gevent.monkey import get_original

RealSocket = get_original("socket", "socket")
real_get_ident = get_original("threading", "get_ident")
RealThreadLocal = get_original("threading", "local")
allocate_lock = get_original("_thread", "allocate_lock")
RealRLock = get_original("_thread", "RLock")
start_new_thread = get_original("_thread", "start_new_thread")
#: Blocking waits for code that must block its OS thread (no hub there, or it is the point).
real_sleep = get_original("time", "sleep")
real_select = get_original("select", "select")
#: ``select.poll`` (gevent patches it into a cooperative one that cannot run in a hub callback).
real_poll = get_original("select", "poll")

__all__ = ["RealSocket", "real_get_ident", "RealThreadLocal", "allocate_lock", "RealRLock",
           "real_poll", "start_new_thread", "real_sleep", "real_select"]
