"""[latest] Out-of-band packets on a :class:`~kcpgo.KCPSocket` (kcp-go latest ``SendOOB``,
``SetOOBHandler``, ``GetOOBMaxSize``; docs/protocol.md §2.2(e), docs/deviations.md D49).

An OOB packet carries one payload outside KCP: not acknowledged, not retransmitted, not
ordered with the stream or with other OOB packets, not FEC-protected. Sending needs FEC on the
session (kcp-go's rule: the packet borrows the FEC header); receiving works on any session.
Only the latest kcp-go and kcpgo understand it: kcpgo never sends one unless the application
calls :meth:`OOBMixin.send_oob`, so a kcp-go 5.6.1 peer never receives one uninvited.
"""
from __future__ import annotations

import errno
import logging
from typing import Any, Callable, Optional

from ._blocking import WOULD_BLOCK, locked

__all__ = ["OOBMixin"]

log = logging.getLogger("kcpgo.socket")


class OOBMixin:
    """OOB sending and receiving for :class:`~kcpgo.KCPSocket` (which provides ``_conn``,
    ``_chan``, ``_rd``, ``_runtime``, the wait loop and the state checks)."""

    _oob_handler: Optional[Callable[[bytes], None]] = None

    @property
    def oob_max_size(self) -> int:
        """Largest payload :meth:`send_oob` takes, in bytes (the KCP MTU minus the 4-byte conv;
        kcp-go latest ``GetOOBMaxSize``); 0 when the session has no FEC."""
        return self._conn.oob_max_size  # type: ignore[attr-defined]

    @property
    def oob_dropped(self) -> int:
        """OOB payloads received but dropped because ``OOB_QUEUE_MAX`` (128) were already
        waiting for :meth:`recv_oob`."""
        return self._conn.oob_dropped  # type: ignore[attr-defined]

    @locked
    def send_oob(self, data: Any) -> int:
        """Send ``data`` at once as one OOB packet; returns ``len(data)``. Like a UDP
        ``sendto``, it may be lost on the way (or dropped here when the socket buffer is full),
        and nothing tells: the peer's handler or ``recv_oob`` gets it or not.
        ``OSError(EOPNOTSUPP)`` when the session has no FEC (kcp-go: "OOB requires FEC to be
        enabled"), ``OSError(EMSGSIZE)`` above :attr:`oob_max_size`; raises like ``send`` when
        the session is closed (``EBADF``), shut down for writing or dead."""
        self._check_writable()  # type: ignore[attr-defined]
        payload = bytes(memoryview(data).cast("B"))
        conn = self._conn  # type: ignore[attr-defined]
        if not conn.oob_max_size:
            raise OSError(errno.EOPNOTSUPP, "OOB needs FEC on this session (data_shards and "
                                            "parity_shards > 0), as in kcp-go")
        if len(payload) > conn.oob_max_size:
            raise OSError(errno.EMSGSIZE, f"OOB payload of {len(payload)} bytes exceeds "
                                          f"oob_max_size ({conn.oob_max_size} bytes)")
        chan = self._chan  # type: ignore[attr-defined]
        chan.endpoint.sendto(conn.oob_datagram(payload), chan.peer, chan.local)
        return len(payload)

    def _try_recv_oob(self, bufsize: int) -> object:
        self._check_usable()  # type: ignore[attr-defined]
        data = self._conn.recv_oob()  # type: ignore[attr-defined]
        if data is not None:
            return data[:bufsize]
        if self._chan.error is not None:  # type: ignore[attr-defined]
            self._raise_error()  # type: ignore[attr-defined]
        return WOULD_BLOCK

    def recv_oob(self, bufsize: int) -> bytes:
        """The next OOB payload received (oldest first), at most ``bufsize`` bytes of it (the
        rest is discarded, as a datagram socket's ``recv`` does). Blocks until one arrives,
        within the socket timeout (``TimeoutError``; ``BlockingIOError`` when non-blocking);
        ``OSError(EBADF)`` once closed, the session's error once it died. At most 128 wait;
        more are dropped (:attr:`oob_dropped`). With a handler set (:meth:`set_oob_handler`)
        payloads go there instead."""
        if bufsize < 0:
            raise ValueError("negative buffersize in recv_oob")
        return self._blocking_call(self._try_recv_oob, bufsize,  # type: ignore[attr-defined]
                                   self._rd, self._deadline(),  # type: ignore[attr-defined]
                                   take_turn=False)

    @locked
    def set_oob_handler(self, handler: Optional[Callable[[bytes], None]]) -> None:
        """Call ``handler(payload)`` for every OOB payload received from now on (and for those
        already waiting), instead of queueing them for :meth:`recv_oob`; ``None`` goes back to
        queueing (kcp-go latest ``SetOOBHandler``). It runs in the thread that handles the
        session's input (the I/O thread, or the hub's), under the stack lock: it must return
        quickly and must not block (as kcp-go asks of its callback). An exception it raises is
        logged to ``kcpgo.socket`` and the payload dropped."""
        self._oob_handler = handler
        self._deliver_oob()

    def _deliver_oob(self) -> None:
        """Hand the waiting OOB payloads to the handler, if one is set (channel updates)."""
        handler = self._oob_handler
        if handler is None:
            return
        conn = self._conn  # type: ignore[attr-defined]
        while True:
            data = conn.recv_oob()
            if data is None:
                return
            try:
                handler(data)
            except Exception:
                log.exception("OOB handler failed")
