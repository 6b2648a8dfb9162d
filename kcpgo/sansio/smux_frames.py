"""smux frames on the wire (docs/kcptun.md §4.1-4.3): encoder and strict incremental parser.

Every smux frame is an 8-byte little-endian header then ``length`` payload bytes::

    ver u8 | cmd u8 | length u16 | sid u32 | payload(length)

``ver`` is the session's configured version (1 or 2), ``cmd`` one of ``CMD_SYN`` (0),
``CMD_FIN`` (1), ``CMD_PSH`` (2), ``CMD_NOP`` (3), ``CMD_UPD`` (4, v2 only). The parser is as
strict as smux >= 1.5.56 (kcptun.md §4.2): wrong version, unknown command, a non-zero length on
SYN/FIN/NOP, UPD in a v1 session or with a length other than 8 raise
:class:`SmuxProtocolError`. Pure code: stdlib only, no I/O, no clock.
"""
from __future__ import annotations

import struct
from typing import List, NamedTuple, Optional, Tuple

__all__ = ["CMD_SYN", "CMD_FIN", "CMD_PSH", "CMD_NOP", "CMD_UPD", "CMD_NAMES", "VERSIONS",
           "HEADER", "HEADER_SIZE", "MAX_PAYLOAD", "UPD_SIZE", "Frame", "SmuxError",
           "SmuxProtocolError", "encode_frame", "encode_upd", "decode_upd", "FrameParser",
           "u32", "s32"]

#: kcptun.md §4.1 commands.
CMD_SYN = 0       # open a stream
CMD_FIN = 1       # the sender has finished writing (1.5.16: and closed) the stream
CMD_PSH = 2       # stream data
CMD_NOP = 3       # keepalive, sid 0
CMD_UPD = 4       # v2 window update: consumed u32 | window u32
CMD_NAMES = {CMD_SYN: "SYN", CMD_FIN: "FIN", CMD_PSH: "PSH", CMD_NOP: "NOP", CMD_UPD: "UPD"}
#: kcptun.md §4.1: the protocol versions smux knows.
VERSIONS = (1, 2)
#: kcptun.md §4.1 header: ver u8 | cmd u8 | length u16 | sid u32, little-endian.
HEADER = struct.Struct("<BBHI")
HEADER_SIZE = HEADER.size
#: kcptun.md §4.1: the largest payload the u16 length field can carry.
MAX_PAYLOAD = 0xFFFF
#: kcptun.md §4.8: UPD payload, consumed u32 | window u32.
UPD = struct.Struct("<II")
UPD_SIZE = UPD.size
_MASK = 0xFFFFFFFF


def u32(x: int) -> int:
    """``x`` modulo 2**32 (Go's uint32 arithmetic, kcptun.md §4.8)."""
    return x & _MASK


def s32(x: int) -> int:
    """The u32 ``x`` read as a signed int32 (Go's ``int32(uint32)``, kcptun.md §4.8)."""
    x &= _MASK
    return x - 0x100000000 if x & 0x80000000 else x


class SmuxError(Exception):
    """Base class of smux errors: a dead session, a misuse of the API, a protocol error."""


class SmuxProtocolError(SmuxError, ValueError):
    """The peer broke the smux protocol (kcptun.md §4.2, 4.9); fatal for the session.

    ``reason`` names the rule: ``"version"``, ``"command"``, ``"length"``, ``"upd-in-v1"``,
    ``"consumed"`` (v2: the peer acknowledged more than was sent). ``frame`` is the offending
    8-byte header when there is one. ``frames``: the good frames that :meth:`FrameParser.feed`
    completed in the same call before the violation (deliver them, then fail).
    """

    def __init__(self, message: str, reason: str, frame: bytes = b"") -> None:
        super().__init__(message)
        self.reason = reason
        self.frame = frame
        self.frames: List["Frame"] = []


class Frame(NamedTuple):
    """One decoded frame (kcptun.md §4.1): header fields and the payload (``b""`` for
    SYN/FIN/NOP)."""
    ver: int
    cmd: int
    sid: int
    data: bytes

    def __repr__(self) -> str:
        name = CMD_NAMES.get(self.cmd, str(self.cmd))
        return f"Frame(v{self.ver} {name} sid={self.sid} len={len(self.data)})"


def encode_frame(ver: int, cmd: int, sid: int, data: bytes = b"") -> bytes:
    """Wire bytes of one frame (kcptun.md §4.1, 4.3): header then payload.

    ``ValueError`` for an unknown version or command, a sid outside u32, a payload longer
    than 65535 bytes, a payload on SYN/FIN/NOP, UPD in v1 or a UPD payload that is not 8 bytes.
    """
    if ver not in VERSIONS:
        raise ValueError(f"smux version {ver!r}: must be 1 or 2")
    if cmd not in CMD_NAMES:
        raise ValueError(f"smux command {cmd!r}: must be 0..4")
    if not 0 <= sid <= _MASK:
        raise ValueError(f"smux sid {sid!r} is not a u32")
    n = len(data)
    if n > MAX_PAYLOAD:
        raise ValueError(f"smux payload of {n} bytes: at most {MAX_PAYLOAD}")
    if cmd in (CMD_SYN, CMD_FIN, CMD_NOP) and n:
        raise ValueError(f"smux {CMD_NAMES[cmd]} carries no payload, got {n} bytes")
    if cmd == CMD_UPD:
        if ver == 1:
            raise ValueError("smux UPD exists only in version 2")
        if n != UPD_SIZE:
            raise ValueError(f"smux UPD payload must be {UPD_SIZE} bytes, got {n}")
    return HEADER.pack(ver, cmd, n, sid) + bytes(data)


def encode_upd(ver: int, sid: int, consumed: int, window: int) -> bytes:
    """A v2 UPD frame (kcptun.md §4.8): ``consumed`` and ``window`` are u32 (taken modulo
    2**32)."""
    return encode_frame(ver, CMD_UPD, sid, UPD.pack(u32(consumed), u32(window)))


def decode_upd(payload: bytes) -> Tuple[int, int]:
    """``(consumed, window)`` of a UPD payload (kcptun.md §4.8); exactly 8 bytes."""
    return UPD.unpack(payload)


class FrameParser:
    """Incremental, strict smux frame parser for one direction of one session (kcptun.md §4.2).

    ``feed(data)`` accepts any piece of the byte stream (the KCP stream has no boundaries)
    and returns the frames completed so far; a partial frame waits for the next piece. The
    first violation raises :class:`SmuxProtocolError`; the parser then stays failed (every
    later ``feed`` raises the same error), as smux's receive loop stops for good.
    """

    def __init__(self, version: int) -> None:
        if version not in VERSIONS:
            raise ValueError(f"smux version {version!r}: must be 1 or 2")
        self.version = version
        self._buf = bytearray()
        self.error: Optional[SmuxProtocolError] = None
        #: frames and payload bytes parsed so far (diagnostics).
        self.frames = 0
        self.first_byte: Optional[int] = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def _fail(self, message: str, reason: str, header: bytes,
              frames: List[Frame]) -> SmuxProtocolError:
        self.error = SmuxProtocolError(message, reason, bytes(header))
        self.frames += len(frames)
        err = SmuxProtocolError(message, reason, bytes(header))
        err.frames = frames
        return err

    def feed(self, data: bytes) -> List[Frame]:
        """Frames completed by ``data`` (in order); raises :class:`SmuxProtocolError` (its
        ``frames`` holds the frames completed before the violation)."""
        if self.error is not None:
            raise self.error
        if data and self.first_byte is None:
            self.first_byte = data[0]
        buf = self._buf
        buf += data
        out: List[Frame] = []
        pos, end, version = 0, len(buf), self.version
        unpack = HEADER.unpack_from
        while end - pos >= HEADER_SIZE:
            ver, cmd, length, sid = unpack(buf, pos)
            if ver != version:
                del buf[:pos]
                raise self._fail(f"smux version {ver}, expected {version}", "version",
                                 buf[:HEADER_SIZE], out)
            if cmd == CMD_PSH:
                if end - pos - HEADER_SIZE < length:
                    break
                start = pos + HEADER_SIZE
                out.append(Frame(ver, cmd, sid, bytes(buf[start:start + length])))
                pos = start + length
                continue
            if cmd > CMD_UPD:
                del buf[:pos]
                raise self._fail(f"smux command {cmd} unknown", "command", buf[:HEADER_SIZE], out)
            if cmd == CMD_UPD:
                if version == 1:
                    del buf[:pos]
                    raise self._fail("smux UPD in a version 1 session", "upd-in-v1",
                                     buf[:HEADER_SIZE], out)
                want = UPD_SIZE
            else:
                want = 0
            if length != want:
                del buf[:pos]
                raise self._fail(f"smux {CMD_NAMES[cmd]} with length {length}, must be {want}",
                                 "length", buf[:HEADER_SIZE], out)
            if end - pos - HEADER_SIZE < want:
                break
            start = pos + HEADER_SIZE
            out.append(Frame(ver, cmd, sid, bytes(buf[start:start + want])))
            pos = start + want
        if pos:
            del buf[:pos]
        self.frames += len(out)
        return out
