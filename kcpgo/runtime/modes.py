"""Where kcpgo's sessions run: on an I/O thread of their own, or on the caller's gevent hub.

* ``"thread"``: every session, listener and smux stream of the process is driven by the reader
  and scheduler greenlets of one daemon OS thread, ``kcpgo-io`` (:mod:`.iothread`), as a
  kernel's network stack runs beside the application. Sessions keep ACKing and retransmitting
  whatever the application's threads do (``time.sleep``, a database call, ``select``), every
  object may be used from any thread, and ``fileno()`` readiness is kept by that thread, so the
  stdlib's ``select``/``poll``/``selectors`` see it.
* ``"hub"``: the sessions a thread creates run on that thread's gevent hub (one reader per UDP
  socket and one scheduler greenlet per hub), and only while the hub runs. Right under
  ``gevent.monkey.patch_all()``, where every thread is a greenlet of that hub and every blocking
  call yields to it: nothing crosses a thread, nothing is locked against another thread.

``"auto"`` (the default) chooses ``"hub"`` when ``gevent.monkey`` has patched ``threading``
(``patch_all()`` does) at the moment kcpgo first needs a runtime, else ``"thread"``. The
environment variable ``KCPGO_RUNTIME`` (``auto``, ``thread``, ``hub``) sets the default;
:func:`set_runtime` overrides it before the first session is opened.
"""
from __future__ import annotations

import os
from typing import Optional

from gevent.monkey import is_module_patched

__all__ = ["set_runtime", "get_runtime", "MODES", "ENV_VAR"]

MODES = ("auto", "thread", "hub")
ENV_VAR = "KCPGO_RUNTIME"

_requested: Optional[str] = None    # set_runtime()'s choice
_effective: Optional[str] = None    # fixed at the first runtime kcpgo created


def _check(mode: str, where: str) -> str:
    if not isinstance(mode, str) or mode.lower() not in MODES:
        raise ValueError(f"{where}: runtime mode must be one of {', '.join(MODES)}, "
                         f"got {mode!r}")
    return mode.lower()


def _resolve(mode: str) -> str:
    if mode == "auto":
        return "hub" if is_module_patched("threading") else "thread"
    return mode


def _requested_mode() -> str:
    if _requested is not None:
        return _requested
    env = os.environ.get(ENV_VAR, "").strip()
    return _check(env, ENV_VAR) if env else "auto"


def set_runtime(mode: str) -> None:
    """Choose where sessions run: ``"auto"`` (default), ``"thread"`` or ``"hub"`` (module
    docstring). Call it before the first session, listener or server is created: afterwards
    a choice that would change the mode in use raises ``RuntimeError`` (the sessions already
    open cannot move). ``ValueError`` for another name."""
    global _requested
    mode = _check(mode, "set_runtime()")
    if _effective is not None and _resolve(mode) != _effective:
        raise RuntimeError(f"kcpgo already runs its sessions in {_effective!r} mode: call "
                           f"set_runtime({mode!r}) before the first session, listener or "
                           f"server is created")
    _requested = mode


def get_runtime() -> str:
    """The mode sessions run in: ``"thread"`` or ``"hub"`` (``"auto"`` resolved now, as the
    first session will resolve it unless it already has). ``ValueError`` if
    ``KCPGO_RUNTIME`` names no mode."""
    if _effective is not None:
        return _effective
    return _resolve(_requested_mode())


def fix() -> str:
    """The mode, fixed from now on (called when the first runtime is created)."""
    global _effective
    if _effective is None:
        _effective = _resolve(_requested_mode())
    return _effective


def effective() -> Optional[str]:
    """The fixed mode, or ``None`` while no runtime was created."""
    return _effective
