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

from ..codec.crypt import CIPHER_NAMES, BlockCrypt, derive_key
from ..codec.crypt import new as new_crypt
from ..codec.reedsolomon import ReedSolomon
from ..snmp import DEFAULT_SNMP, Snmp
from .connection import MODES, MTU_DEFAULT, Connection
from .demux import ACCEPT_BACKLOG, Backlog, Demux, Route
from .fec import FECDecoder, FECEncoder
from .kcp import KCP
from .kcpdefs import FLUSH_ACK_ONLY, FLUSH_FULL, FLUSH_NONE
from .memnet import LinkCounters, LinkModel, LinkProfile, Network
from .packet import PacketCodec
from .wire import (CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS, MTU_LIMIT, OVERHEAD, Segment,
                   decode_segments, encode_segment)

__all__ = ["KCP", "Connection", "Segment", "encode_segment", "decode_segments",
           "CMD_PUSH", "CMD_ACK", "CMD_WASK", "CMD_WINS", "OVERHEAD", "MTU_LIMIT", "MTU_DEFAULT",
           "MODES", "FLUSH_NONE", "FLUSH_ACK_ONLY", "FLUSH_FULL",
           "FECEncoder", "FECDecoder", "PacketCodec", "ReedSolomon",
           "BlockCrypt", "new_crypt", "derive_key", "CIPHER_NAMES",
           "Demux", "Route", "Backlog", "ACCEPT_BACKLOG",
           "Snmp", "DEFAULT_SNMP", "Network", "LinkProfile", "LinkModel",
           "LinkCounters"]
