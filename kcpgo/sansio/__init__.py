"""kcp-go's protocol without I/O: drive kcp-go-compatible KCP from your own event loop.

Everything here is pure: bytes and an explicit integer-millisecond ``now`` in, bytes and state
out; nothing reads a clock, touches a socket or imports gevent (as h11 and aioquic do). The
layers, bottom up (docs/protocol.md):

* codecs: :class:`BlockCrypt` / :func:`new_crypt` (§4), :class:`ReedSolomon` (§3);
* the wire: :class:`Segment`, :func:`encode_segment`, :func:`decode_segments`, ``CMD_*`` (§1.2);
* :class:`KCP`: the ARQ state machine (§1): ``send``/``write``, ``recv``, ``input``,
  ``flush``/``update``, ``check``;
* :class:`FECEncoder` / :class:`FECDecoder` (§2) and :class:`PacketCodec`, the datagram
  pipeline (crypt + FEC + KCP, §2.3);
* :class:`Connection`: one session, the object a driver talks to;
* :class:`Demux` / :class:`Backlog`: the listener's rules (§5.2);
* :class:`SmuxSession`: smux v1/v2 streams over one KCP byte stream, as kcptun speaks it
  (docs/kcptun.md §4; frames and the strict parser in ``smux_frames``);
* :class:`LinkProfile` (what a link does to datagrams: loss, delay, reordering, ...; shared with
  the UDP relay of :mod:`kcpgo.testing`) and :class:`Network`, an in-memory network of two
  connections with a fake clock.

A minimal driver::

    from kcpgo.sansio import Connection
    a, b = Connection(1, mode="fast3"), Connection(1, mode="fast3")
    a.send(b"hello")
    for d in a.datagrams_to_send(now=0):
        b.receive_datagram(d, now=1)
    assert b.recv() == b"hello"
    # then: send b.datagrams_to_send(now) back, and call datagrams_to_send again at
    # next_deadline(now) (None: nothing to do until the next input or send).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any, Dict

#: Public name -> the module that defines it. Loaded on first use, so that ``import kcpgo``
#: (which needs only the connection and its options) does not build every codec table.
_WHERE: Dict[str, str] = {
    "BlockCrypt": "..codec.crypt", "new_crypt": "..codec.crypt", "derive_key": "..codec.crypt",
    "CIPHER_NAMES": "..codec.crypt", "ReedSolomon": "..codec.reedsolomon",
    "Snmp": "..snmp", "DEFAULT_SNMP": "..snmp",
    "Connection": ".connection", "MODES": ".connection", "MTU_DEFAULT": ".connection",
    "Demux": ".demux", "Route": ".demux", "Backlog": ".demux", "ACCEPT_BACKLOG": ".demux",
    "FECEncoder": ".fec", "FECDecoder": ".fec", "KCP": ".kcp",
    "FLUSH_NONE": ".kcpdefs", "FLUSH_ACK_ONLY": ".kcpdefs", "FLUSH_FULL": ".kcpdefs",
    "Network": ".memnet", "LinkProfile": ".memnet", "LinkCounters": ".memnet",
    "LinkModel": ".memnet",
    "PacketCodec": ".packet",
    "SmuxSession": ".smux", "SmuxError": ".smux_frames", "SmuxProtocolError": ".smux_frames",
    "SmuxSessionClosed": ".smux", "SmuxStreamError": ".smux",
    "CMD_ACK": ".wire", "CMD_PUSH": ".wire", "CMD_WASK": ".wire", "CMD_WINS": ".wire",
    "MTU_LIMIT": ".wire", "OVERHEAD": ".wire", "Segment": ".wire",
    "decode_segments": ".wire", "encode_segment": ".wire",
}
_RENAMED = {"new_crypt": "new"}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'kcpgo.sansio' has no attribute {name!r}")
    value = getattr(import_module(where, __name__), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
