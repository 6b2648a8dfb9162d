"""What a kcpgo server is configured with: the checks and defaults of
:class:`kcpgo.server.KCPServer`'s keywords (also used by ``kcpgo.monkey``'s ``servers=``),
validated in the constructor rather than later, in the serving thread.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from .facade.smux import SmuxConfig
from .options import FIELDS, Options
from .sansio.demux import ACCEPT_BACKLOG
from .server_workers import check_workers

__all__ = ["ServerOptions", "server_options", "smux_config", "DEFAULT_IDLE_TIMEOUT",
           "DEFAULT_DRAIN_TIMEOUT"]

#: Seconds without a datagram after which a server session is declared gone (KCP has no FIN).
DEFAULT_IDLE_TIMEOUT = 60.0
#: Seconds ``shutdown_request`` waits for the peer to acknowledge what the handler wrote
#: (a TCP stack keeps delivering after close; KCP's close drops unacknowledged data).
DEFAULT_DRAIN_TIMEOUT = 5.0

#: Keywords a server accepts: the session options (kcpgo.Options), ``options`` itself, the
#: accept ``backlog``, the server's own ``drain_timeout``, ``smux`` and ``workers``.
_SERVER_OPTIONS = FIELDS | {"options", "backlog", "drain_timeout", "smux", "workers"}


class ServerOptions:
    """A server's validated settings: session :class:`~kcpgo.Options`, accept ``backlog``,
    ``drain_timeout``, the smux settings (``None``: each KCP session is a request) and the
    number of worker processes (:mod:`kcpgo.server_workers`)."""

    __slots__ = ("session", "backlog", "drain_timeout", "smux", "workers")

    def __init__(self, session: Options, backlog: int, drain_timeout: Optional[float],
                 smux: Optional[SmuxConfig] = None, workers: int = 1) -> None:
        self.session = session
        self.backlog = backlog
        self.drain_timeout = drain_timeout
        self.smux = smux
        self.workers = workers


def smux_config(value: Any, where: str) -> Optional[SmuxConfig]:
    """``smux=``: ``None``/``False`` (no smux), ``True`` (``dial_smux``'s defaults), a dict of
    ``SmuxConfig`` keywords or a ``SmuxConfig``; ``TypeError``/``ValueError`` naming it."""
    if value is None or value is False:
        return None
    return SmuxConfig.build(value, where)


def server_options(options: Dict[str, Any], *, idle_timeout: Optional[float] = DEFAULT_IDLE_TIMEOUT,
                   drain_timeout: Optional[float] = DEFAULT_DRAIN_TIMEOUT,
                   where: str = "KCPServer") -> ServerOptions:
    """Check server options now (not later, in the serving thread) and fill in defaults.

    Raises ``TypeError`` for an unknown option and ``ValueError`` for a bad value, like
    :func:`kcpgo.listen` would (also ``workers`` > 1 where the system cannot run workers).
    A cipher name and passphrase are turned into the cipher once.
    Servers default to ``stream=True`` (a byte stream, like the TCP they replace) and to the
    class's ``idle_timeout``.
    """
    unknown = set(options) - _SERVER_OPTIONS
    if unknown:
        raise TypeError(f"{where} got unexpected option(s) {', '.join(sorted(unknown))}; valid: "
                        f"{', '.join(sorted(_SERVER_OPTIONS))}")
    opts = dict(options)
    base = opts.pop("options", None)
    backlog = opts.pop("backlog", ACCEPT_BACKLOG)
    drain = opts.pop("drain_timeout", drain_timeout)
    smux = smux_config(opts.pop("smux", None), where)
    workers = check_workers(opts.pop("workers", 1), where)
    if smux is not None and opts.get("stream", True) is not True:
        raise ValueError(f"{where}: smux runs on stream-mode KCP sessions (stream=True)")
    # A server's defaults (a byte stream like the TCP it replaces, and an idle timeout, since
    # KCP has no FIN) apply wherever neither a keyword nor ``options`` chose a value.
    if base is None or base.idle_timeout is None:
        opts.setdefault("idle_timeout", idle_timeout)
    if base is None or not base.stream:
        opts.setdefault("stream", True)
    session = Options.build(where, base, **opts)
    if drain is not None and drain <= 0:
        raise ValueError("drain_timeout must be > 0 seconds or None")
    if not isinstance(backlog, int) or backlog < 1:
        raise ValueError(f"backlog must be an int >= 1, got {backlog!r}")
    return ServerOptions(session, backlog, drain, smux, workers)
