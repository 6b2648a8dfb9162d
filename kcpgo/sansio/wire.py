"""The KCP segment on the wire (docs/protocol.md §1.1, §1.2, §2.2): one definition for everyone.

A KCP datagram is one or more segments back to back, each a 24-byte little-endian header
followed by ``len`` bytes of data::

    conv u32 | cmd u8 | frg u8 | wnd u16 | ts u32 | sn u32 | una u32 | len u32 | data

The state machine (``kcp.py``), the listener's demultiplexer (``demux.py``), the fuzzer and
the flood tool all read segments through this module; nothing else spells the layout out.
Pure code: no I/O, no clock.
"""
from __future__ import annotations

import struct
from typing import List, NamedTuple

__all__ = ["Segment", "encode_segment", "decode_segments", "check_conv", "HEADER",
           "OVERHEAD", "SN_OFFSET", "CMD_PUSH", "CMD_ACK", "CMD_WASK", "CMD_WINS", "MTU_LIMIT"]

#: §1.1 commands.
CMD_PUSH = 81     # data
CMD_ACK = 82      # acknowledgement of one sn
CMD_WASK = 83     # window probe: "tell me your window"
CMD_WINS = 84     # window size announcement
#: §1.2: the segment header struct (conv cmd frg wnd ts sn una len).
HEADER = struct.Struct("<IBBHIIII")
#: §1.1 IKCP_OVERHEAD: header size in bytes.
OVERHEAD = HEADER.size
#: §1.2: offset of sn inside a segment header.
SN_OFFSET = 12
#: §2.1 mtuLimit: kcp-go's receive buffers are 1500 bytes; nothing larger is ever sent.
MTU_LIMIT = 1500

_unpack_from = HEADER.unpack_from


class Segment(NamedTuple):
    """One decoded KCP segment (§1.2). Numbers are the wire's u32/u16/u8 values."""
    conv: int
    cmd: int
    frg: int
    wnd: int
    ts: int
    sn: int
    una: int
    data: bytes


def encode_segment(seg: Segment) -> bytes:
    """Wire bytes of one segment: the 24-byte header then its data."""
    return HEADER.pack(seg.conv, seg.cmd, seg.frg, seg.wnd, seg.ts, seg.sn, seg.una,
                       len(seg.data)) + seg.data


def decode_segments(data: bytes) -> List[Segment]:
    """Split a KCP datagram into segments; ``ValueError`` if a length field overruns it.

    For inspection and tests; ``KCP.input`` parses on its own hot path. A trailing fragment
    shorter than a header is ignored, as KCP input does (§1.6).
    """
    segs = []
    off = 0
    end = len(data)
    while end - off >= OVERHEAD:
        conv, cmd, frg, wnd, ts, sn, una, ln = _unpack_from(data, off)
        off += OVERHEAD
        if end - off < ln:
            raise ValueError(f"segment length {ln} overruns the datagram at offset {off}")
        segs.append(Segment(conv, cmd, frg, wnd, ts, sn, una, bytes(data[off:off + ln])))
        off += ln
    return segs


def check_conv(conv: object) -> int:
    """``conv`` if it is a u32 (an int, not a bool, in 0..2^32-1), else ``ValueError``."""
    if isinstance(conv, bool) or not isinstance(conv, int) or not 0 <= conv <= 0xFFFFFFFF:
        raise ValueError(f"conv must be a u32 (0..4294967295), got {conv!r}")
    return conv
