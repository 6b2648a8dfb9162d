"""What a kcptun peer speaks, from the first bytes of its KCP stream.

See docs/kcptun.md §3.3 (snappy framing, ``--nocomp``) and kcptun.md §4.9 (version mismatch).

kcptun negotiates nothing: compression (``--nocomp``) and the smux version (``--smuxver``) must
match on both sides, and a mismatch is silent (the server closes the session; the client hears
nothing until a keepalive). The first bytes say everything, though: a snappy stream starts with
its stream identifier (first byte ``0xff``), a bare smux stream with the version byte of its
first frame (``0x01`` or ``0x02``); inside snappy, the first decoded byte is that version.

:func:`detect` reads that prefix, so that a server can follow each client (beyond kcptun) and a
client can name a mismatch from the peer's first bytes. Pure: bytes in, a verdict out.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from ..codec.snappy import STREAM_IDENTIFIER, SnappyDecoder, SnappyFramingError
from .smux_frames import VERSIONS

__all__ = ["Framing", "detect", "describe", "DetectError"]


class Framing(NamedTuple):
    """What the peer's stream is: snappy-framed or not, and its smux version (1 or 2)."""

    compression: bool
    smux_version: int


class DetectError(ValueError):
    """The first bytes are neither a snappy stream nor a smux frame: most likely the peer's
    key or cipher differs (they decrypt to garbage), or it is not kcptun at all."""


def detect(prefix: bytes) -> Optional[Framing]:
    """The framing of a KCP stream that starts with ``prefix``, or ``None`` if more bytes are
    needed (at most the first snappy chunk: about 10 + 8 + a few bytes of a compressed SYN).

    Raises :class:`DetectError` when the prefix can be neither (first byte not ``0xff``,
    ``0x01``, ``0x02``; a snappy stream that does not begin with the stream identifier, or
    whose first decoded byte is not a smux version).
    """
    if not prefix:
        return None
    first = prefix[0]
    if first in VERSIONS:
        return Framing(False, first)
    if first != STREAM_IDENTIFIER[0]:
        raise DetectError(f"first byte {first:#04x} is neither snappy (0xff) nor a smux version "
                          f"(0x01, 0x02): check key/crypt, or the peer is not kcptun")
    n = min(len(prefix), len(STREAM_IDENTIFIER))
    if prefix[:n] != STREAM_IDENTIFIER[:n]:
        raise DetectError("starts like snappy (0xff) but not with its stream identifier")
    try:
        decoded = SnappyDecoder().feed(prefix)
    except SnappyFramingError as e:
        if not e.decoded:
            raise DetectError(f"snappy stream, but its first chunk is bad: {e}") from None
        decoded = e.decoded
    if not decoded:
        return None
    if decoded[0] not in VERSIONS:
        raise DetectError(f"snappy stream whose first byte {decoded[0]:#04x} is not a smux "
                          f"version (0x01, 0x02)")
    return Framing(True, decoded[0])


def describe(framing: Framing) -> str:
    """kcptun's flags for ``framing``, for messages: e.g. ``"--smuxver 2 --nocomp"``."""
    return f"--smuxver {framing.smux_version}" + ("" if framing.compression else " --nocomp")
