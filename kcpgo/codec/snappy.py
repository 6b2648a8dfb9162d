"""Snappy framing format as kcptun uses it (docs/kcptun.md §3), sans-IO, over ``cramjam``.

Pure: bytes in, bytes out; no sockets, no clock. ``cramjam`` does the snappy block codec and the
masked CRC-32C (it has no public CRC function, so every chunk goes through its *framed* codec,
whose checksum is Go's; docs/kcptun.md §3.1). ``crc32c``/``masked_crc32c`` here are a pure-Python
reference (about 9 MB/s, tools/bench_snappy.py: for tests and tools, not the data path).

* ``SnappyEncoder.encode(data)`` returns exactly what Go's ``snappy.NewBufferedWriter`` writes
  for ``Write(data)`` + ``Flush()`` (kcptun's ``CompStream``, docs/kcptun.md §3.2): the stream
  identifier in front of the first chunk, then one chunk per 65536-byte block; compressed only
  when that saves at least 12.5 %. Hand the result to KCP in one write.
* ``SnappyDecoder.feed(piece)`` accepts the stream in arbitrary pieces and returns the decoded
  bytes of every chunk completed so far, with Go's reader rules (``snappy/decode.go``): stream
  identifier first, chunk body at most 76494 bytes, at most 65536 decoded bytes per chunk, CRC
  checked, reserved 0x02-0x7f rejected, 0x80-0xfe skipped. Errors are ``SnappyFramingError``
  and sticky, as in Go. At most ``MAX_CHUNK - 1`` bytes of a partial chunk are buffered.
"""
from __future__ import annotations

from typing import List, Optional, Union

import cramjam

__all__ = ["SnappyFramingError", "SnappyEncoder", "SnappyDecoder", "STREAM_IDENTIFIER",
           "MAX_BLOCK_SIZE", "MAX_CHUNK_BODY", "MAX_CHUNK", "crc32c", "masked_crc32c",
           "ERR_CORRUPT", "ERR_UNSUPPORTED"]

Bytes = Union[bytes, bytearray, memoryview]

#: The stream identifier chunk: type 0xff, length 6, body "sNaPpY" (docs/kcptun.md §3.1).
STREAM_IDENTIFIER = b"\xff\x06\x00\x00sNaPpY"
#: Most uncompressed bytes in one data chunk (Go ``maxBlockSize``).
MAX_BLOCK_SIZE = 65536
#: Longest chunk body Go's reader accepts: ``maxEncodedLenOfMaxBlockSize`` 76490 + 4-byte CRC.
MAX_CHUNK_BODY = 76494
#: Longest whole chunk (4-byte header + body): the decoder never buffers this much.
MAX_CHUNK = 4 + MAX_CHUNK_BODY

CHUNK_COMPRESSED = 0x00
CHUNK_UNCOMPRESSED = 0x01
CHUNK_PADDING = 0xFE
CHUNK_STREAM_IDENTIFIER = 0xFF

#: Go's error texts (``snappy.ErrCorrupt``, ``snappy.ErrUnsupported``).
ERR_CORRUPT = "snappy: corrupt input"
ERR_UNSUPPORTED = "snappy: unsupported input"


class SnappyFramingError(ValueError):
    """The framed stream is invalid (docs/kcptun.md §3.1). ``go_error`` is the error Go's reader
    returns for the same input (``ERR_CORRUPT``, ``ERR_UNSUPPORTED`` or "unexpected EOF");
    ``decoded`` holds the bytes of the chunks that were complete and valid before the bad one in
    the failing ``feed`` call (Go's reader would have delivered them)."""

    def __init__(self, message: str, go_error: str = ERR_CORRUPT, decoded: bytes = b"") -> None:
        super().__init__(f"{go_error}: {message}")
        self.go_error = go_error
        self.decoded = decoded


# -- CRC-32C (Castagnoli), pure-Python reference --------------------------------------------

def _make_table() -> List[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def crc32c(data: Bytes, crc: int = 0) -> int:
    """CRC-32C (iSCSI; init and final xor 0xffffffff) of ``data`` as an unsigned 32-bit int;
    ``crc`` continues a previous result. Table-driven pure Python, about 10 MB/s."""
    c = crc ^ 0xFFFFFFFF
    table = _TABLE
    for b in bytes(data):
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: Bytes) -> int:
    """The checksum a snappy data chunk carries for its uncompressed ``data``
    (docs/kcptun.md §3.1): ``((c >> 15) | (c << 17)) + 0xa282ead8`` mod 2**32, ``c = crc32c``."""
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# -- encoder -------------------------------------------------------------------------------

class SnappyEncoder:
    """One direction's snappy writer, as kcptun's ``CompStream`` (docs/kcptun.md §3.2)."""

    __slots__ = ("started", "_compressor")

    def __init__(self) -> None:
        #: True once the stream identifier has been produced (with the first non-empty write).
        self.started = False
        # cramjam's framed writer (Rust ``snap``): Go's chunking, 12.5 % rule and CRC, and
        # 35 % cheaper per 4 KiB frame than ``cramjam.snappy.compress`` (no per-call buffers)
        self._compressor = cramjam.snappy.Compressor()

    def encode(self, data: Bytes) -> bytes:
        """Bytes Go's writer puts on the wire for ``Write(data)`` + ``Flush()``: (stream
        identifier, first call only +) one chunk per 65536-byte block of ``data``; ``b""`` for
        empty ``data`` (Go writes nothing, not even the identifier). One smux frame (≤ 65536
        bytes) gives one chunk: hand the result to KCP in one write."""
        if not data:
            return b""
        # Compressor.compress takes bytes only (cramjam 2.14)
        self._compressor.compress(data if type(data) is bytes else bytes(data))
        self.started = True
        return bytes(self._compressor.flush())


# -- decoder -------------------------------------------------------------------------------

class SnappyDecoder:
    """Incremental reader of one direction's framed stream (docs/kcptun.md §3.1).

    ``feed(piece) -> bytes`` any number of times; ``close()`` at end of stream to check that it
    did not end inside a chunk. Memory: at most ``MAX_CHUNK - 1`` bytes of a partial chunk are
    kept (``buffered``); skippable chunks are dropped as they arrive, never buffered."""

    __slots__ = ("_buf", "_need", "_skip", "_identified", "_error")

    def __init__(self) -> None:
        self._buf = bytearray()         # a partial chunk: header (maybe partial) + body so far
        self._need = 0                  # bytes still missing of the partial chunk, once known
        self._skip = 0                  # bytes still to drop of a skippable chunk
        self._identified = False        # the stream identifier chunk has been seen
        self._error: Optional[SnappyFramingError] = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete chunk held, in [0, MAX_CHUNK)."""
        return len(self._buf)

    @property
    def at_boundary(self) -> bool:
        """True when the bytes fed so far end exactly after a chunk (or nothing was fed)."""
        return not self._buf and not self._skip

    @property
    def identified(self) -> bool:
        """True once the stream identifier chunk has arrived."""
        return self._identified

    def close(self) -> None:
        """End of stream: raise ``SnappyFramingError`` (go_error "unexpected EOF") if it ended
        inside a chunk; a stream may end after any whole chunk, or be empty
        (docs/kcptun.md §3.1)."""
        if self._error is not None:
            raise self._error
        if not self.at_boundary:
            self._fail(f"stream ended inside a chunk ({len(self._buf)} bytes held, "
                       f"{self._need or self._skip or 'some'} missing)", "unexpected EOF", [])

    def feed(self, data: Bytes) -> bytes:
        """Decode ``data`` (any slice of the stream, bytes-like; may be empty) and return the
        decoded bytes of every chunk it completes, in order (possibly ``b""``).

        Raises ``SnappyFramingError`` on the first invalid chunk, with Go's verdict in
        ``go_error``; the error is sticky: every later call raises it again."""
        if self._error is not None:
            raise self._error
        need = self._need
        if not need and not self._buf and not self._skip and self._identified:
            n = len(data)
            if n >= 8 and data[0] == CHUNK_UNCOMPRESSED and \
                    data[1] | data[2] << 8 | data[3] << 16 == n - 4 <= MAX_BLOCK_SIZE + 4:
                # The common piece: exactly one whole uncompressed chunk (a small frame,
                # which snappy does not shrink: request/response traffic).
                try:
                    return bytes(cramjam.snappy.decompress(b"".join((STREAM_IDENTIFIER,
                                                                      data))))
                except cramjam.DecompressionError:
                    pass                            # the general path says what is wrong
        if need > len(data):                      # the common piece inside a long chunk
            self._buf += data
            self._need = need - len(data)
            return b""
        out: List[Bytes] = []
        mv = memoryview(data)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        if self._skip:
            k = min(self._skip, len(mv))
            self._skip -= k
            mv = mv[k:]
        buf = self._buf
        if need:                                  # this piece completes the partial chunk
            buf += mv[:need]
            mv = mv[need:]
            self._need = 0
            self._chunk(out)
        elif buf:                                 # a partial header (1-3 bytes)
            k = min(4 - len(buf), len(mv))
            buf += mv[:k]
            mv = mv[k:]
            if len(buf) < 4:
                return b""
            length = self._header(buf, 0, out)
            k = min(length, len(mv))
            if buf[0] >= 0x80 and buf[0] != CHUNK_STREAM_IDENTIFIER:     # skippable
                buf.clear()
                self._skip = length - k
            else:
                buf += mv[:k]
                if k < length:
                    self._need = length - k
                    return b""
                self._chunk(out)
            mv = mv[k:]
        return self._run(mv, out)

    # -- internals --

    def _chunk(self, out: List[Bytes]) -> None:
        """Decode the completed chunk in ``_buf`` (its header is checked) and empty it."""
        chunk = bytes(self._buf)
        self._buf.clear()
        self._data(memoryview(chunk), 0, len(chunk), out)

    def _run(self, mv: memoryview, out: List[Bytes]) -> bytes:
        """Decode the whole chunks of ``mv``; keep a trailing partial chunk."""
        n = len(mv)
        pos = 0
        run = -1                              # start of a run of whole data chunks, or -1
        while n - pos >= 4:
            length = self._header(mv, pos, out, run, pos)
            end = pos + 4 + length
            if mv[pos] >= 0x80 and mv[pos] != CHUNK_STREAM_IDENTIFIER:     # skippable
                if run >= 0:
                    self._data(mv, run, pos, out)
                    run = -1
                if end > n:
                    self._skip = end - n
                    pos = n
                    break
                pos = end
                continue
            if end > n:
                self._need = end - n
                break
            if run < 0:
                run = pos
            pos = end
        if run >= 0:
            self._data(mv, run, pos, out)
        if pos < n:
            self._buf += mv[pos:]
        if not out:
            return b""
        return bytes(out[0]) if len(out) == 1 else b"".join(out)

    def _header(self, mv: Bytes, pos: int, out: List[Bytes], run: int = -1,
                stop: int = 0) -> int:
        """Check a chunk header as Go's reader does before reading the body; return the body
        length. On error, decode the whole chunks before it (``run``..``stop``) first."""
        kind = mv[pos]
        length = mv[pos + 1] | mv[pos + 2] << 8 | mv[pos + 3] << 16
        if kind == CHUNK_UNCOMPRESSED:            # fast path: the two data chunk types
            if self._identified and 4 <= length <= MAX_BLOCK_SIZE + 4:
                return length
        elif kind == CHUNK_COMPRESSED:
            if self._identified and 4 <= length <= MAX_CHUNK_BODY:
                return length
        problem, verdict = "", ERR_CORRUPT
        if not self._identified and kind != CHUNK_STREAM_IDENTIFIER:
            problem = (f"first chunk has type 0x{kind:02x}, not the stream identifier 0xff "
                       "(peer not using snappy framing, e.g. kcptun --nocomp?)")
        elif length > MAX_CHUNK_BODY:
            problem = f"chunk body of {length} bytes exceeds {MAX_CHUNK_BODY}"
            verdict = ERR_UNSUPPORTED
        elif kind == CHUNK_STREAM_IDENTIFIER:
            if length != 6:
                problem = f"stream identifier chunk of length {length}, not 6"
            self._identified = True
        elif kind in (CHUNK_COMPRESSED, CHUNK_UNCOMPRESSED) and length < 4:
            problem = f"data chunk of length {length}, shorter than its 4-byte checksum"
        elif kind == CHUNK_UNCOMPRESSED and length - 4 > MAX_BLOCK_SIZE:
            problem = f"uncompressed chunk of {length - 4} bytes exceeds {MAX_BLOCK_SIZE}"
        elif CHUNK_UNCOMPRESSED < kind < 0x80:
            problem = f"reserved unskippable chunk type 0x{kind:02x}"
            verdict = ERR_UNSUPPORTED
        if problem:
            if run >= 0 and isinstance(mv, memoryview):
                self._data(mv, run, stop, out)      # Go delivers the chunks before this one
            self._fail(problem, verdict, out)
        return length

    def _data(self, mv: memoryview, start: int, stop: int, out: List[Bytes]) -> None:
        """Decode the run of whole, header-checked identifier and data chunks mv[start:stop]."""
        pos = start
        while pos < stop:                   # Go's limit on the decoded length, before decoding
            length = mv[pos + 1] | mv[pos + 2] << 8 | mv[pos + 3] << 16
            if mv[pos] == CHUNK_COMPRESSED:
                try:
                    size = cramjam.snappy.decompress_raw_len(mv[pos + 8:pos + 4 + length])
                except cramjam.DecompressionError as e:
                    self._split(mv, start, pos, out)
                    self._fail(f"compressed chunk with a bad length header ({e})",
                               ERR_CORRUPT, out)
                if size > MAX_BLOCK_SIZE:
                    self._split(mv, start, pos, out)
                    self._fail(f"compressed chunk decodes to {size} bytes, more than "
                               f"{MAX_BLOCK_SIZE}", ERR_CORRUPT, out)
            pos += 4 + length
        try:
            out.append(cramjam.snappy.decompress(b"".join((STREAM_IDENTIFIER, mv[start:stop]))))
        except cramjam.DecompressionError:
            self._split(mv, start, stop, out)       # finds the bad chunk and raises

    def _split(self, mv: memoryview, start: int, stop: int, out: List[Bytes]) -> None:
        """Decode mv[start:stop] chunk by chunk (after a failure of the whole run): keep the
        good prefix in ``out`` and fail precisely on the first bad chunk."""
        pos = start
        while pos < stop:
            length = mv[pos + 1] | mv[pos + 2] << 8 | mv[pos + 3] << 16
            chunk = mv[pos:pos + 4 + length]
            if mv[pos] == CHUNK_STREAM_IDENTIFIER:
                if bytes(chunk) != STREAM_IDENTIFIER:
                    self._fail(f"stream identifier body {bytes(chunk[4:])!r}, not b'sNaPpY'",
                               ERR_CORRUPT, out)
            else:
                try:
                    out.append(cramjam.snappy.decompress(b"".join((STREAM_IDENTIFIER, chunk))))
                except cramjam.DecompressionError as e:
                    what = "checksum mismatch" if "checksum" in str(e) else "corrupt block"
                    self._fail(f"{what} in a chunk of type 0x{mv[pos]:02x}, length {length} "
                               f"({e})", ERR_CORRUPT, out)
            pos += 4 + length

    def _fail(self, message: str, verdict: str, out: List[Bytes]) -> None:
        self._buf = bytearray()
        self._need = self._skip = 0
        self._error = SnappyFramingError(message, verdict, b"".join(out))
        raise self._error
