"""The unpatched stdlib objects the runtime needs, whatever ``gevent.monkey`` did.

* the real socket class: the reader waits for readiness with its own gevent io watcher and must
  not go through gevent's cooperative wrapper for every datagram;
* the real thread identity and thread-local: one runtime per OS thread, even after
  ``patch_all()`` (a patched ``threading.local`` would be per greenlet);
* the real lock, for flags set from any thread.
"""
from __future__ import annotations

from gevent.monkey import get_original

RealSocket = get_original("socket", "socket")
real_get_ident = get_original("threading", "get_ident")
RealThreadLocal = get_original("threading", "local")
allocate_lock = get_original("_thread", "allocate_lock")

__all__ = ["RealSocket", "real_get_ident", "RealThreadLocal", "allocate_lock"]
