"""kcpgo.codec.snappy: the snappy framing format as kcptun uses it (docs/kcptun.md §3.1, 3.2).

Known answers are Go's writer's bytes from docs/kcptun.md §2 and 3.1; the encoder is also
checked against a reference written from Go's ``snappy/encode.go`` (cramjam's block codec + the
pure-Python CRC-32C); the decoder against Go's reader rules, with arbitrary piece boundaries,
and fuzzed with garbage and mutated streams (only ``SnappyFramingError``, bounded buffering).
"""
from __future__ import annotations

import os
import random

import cramjam
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kcpgo.codec.snappy import (ERR_CORRUPT, ERR_UNSUPPORTED, MAX_BLOCK_SIZE, MAX_CHUNK,
                                MAX_CHUNK_BODY, STREAM_IDENTIFIER, SnappyDecoder,
                                SnappyEncoder, SnappyFramingError, crc32c, masked_crc32c)

H = bytes.fromhex
# docs/kcptun.md §2: a client's first KCP bytes (v1, compression on), Go's writer
SYN3 = H("0100000003000000")
PSH_HELLO = H("010205000300000068656c6c6f")
PSH_256A = H("0102000103000000") + b"A" * 256
GO_SYN3 = H("ff060000734e61507059") + H("010c00004439ac2f") + SYN3
GO_HELLO = H("0111000028beb005") + PSH_HELLO
GO_256A = H("001c000075902789") + H("880220010200010300000041fe0100fe0100fe0100fa0100")
TEXT = (b"The quick brown fox jumps over the lazy dog. " * 2000)


def chunk(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "little") + body


def crc_le(data: bytes) -> bytes:
    return masked_crc32c(data).to_bytes(4, "little")


def go_reference(data: bytes, first: bool) -> bytes:
    """Go's ``Writer.Write`` + ``Flush`` (encode.go:176-262), from cramjam's block codec."""
    out = [STREAM_IDENTIFIER] if first and data else []
    for i in range(0, len(data), MAX_BLOCK_SIZE):
        block = data[i:i + MAX_BLOCK_SIZE]
        compressed = bytes(cramjam.snappy.compress_raw(block))
        if len(compressed) >= len(block) - len(block) // 8:
            out.append(chunk(1, crc_le(block) + block))
        else:
            out.append(chunk(0, crc_le(block) + compressed))
    return b"".join(out)


def feed_pieces(dec: SnappyDecoder, data: bytes, rnd: random.Random, top: int = 3000) -> bytes:
    out, i = [], 0
    while i < len(data):
        k = rnd.randint(1, top)
        out.append(dec.feed(data[i:i + k]))
        assert dec.buffered < MAX_CHUNK
        i += k
    return b"".join(out)


# -- known answers ---------------------------------------------------------------------------

def test_crc32c_and_mask_known_answers():
    # docs/kcptun.md §3.1: crc32c(0100000003000000) = 0xa7364694, masked 4439ac2f
    assert crc32c(SYN3) == 0xA7364694
    assert masked_crc32c(SYN3).to_bytes(4, "little") == H("4439ac2f")
    assert crc32c(b"123456789") == 0xE3069283          # the standard CRC-32C check value
    assert crc32c(b"") == 0 and crc32c(b"6789", crc32c(b"12345")) == 0xE3069283


def test_encoder_reproduces_gos_bytes():
    enc = SnappyEncoder()
    assert not enc.started
    assert enc.encode(SYN3) == GO_SYN3
    assert enc.started
    assert enc.encode(PSH_HELLO) == GO_HELLO
    assert enc.encode(PSH_256A) == GO_256A
    assert enc.encode(b"") == b""


def test_empty_write_produces_nothing_not_even_the_identifier():
    enc = SnappyEncoder()
    assert enc.encode(b"") == b"" and not enc.started
    assert enc.encode(bytearray(SYN3)) == GO_SYN3


def test_decoder_reads_gos_bytes():
    stream = GO_SYN3 + GO_HELLO + GO_256A
    assert SnappyDecoder().feed(stream) == SYN3 + PSH_HELLO + PSH_256A
    dec = SnappyDecoder()
    assert b"".join(dec.feed(stream[i:i + 1]) for i in range(len(stream))) == \
        SYN3 + PSH_HELLO + PSH_256A
    assert dec.at_boundary and dec.identified and dec.buffered == 0
    dec.close()


@pytest.mark.parametrize("size", [1, 37, 4096, 32776, 65536, 65537, 100000, 3 * 65536 + 5])
@pytest.mark.parametrize("kind", ["random", "text", "zeros"])
def test_encoder_matches_go_writer_logic(size, kind):
    data = {"random": os.urandom(size), "text": (TEXT * 4)[:size], "zeros": bytes(size)}[kind]
    enc = SnappyEncoder()
    first = enc.encode(data)
    assert first == go_reference(data, True)
    assert enc.encode(data) == go_reference(data, False)
    # one chunk per 65536-byte block (docs/kcptun.md §3.2)
    assert SnappyDecoder().feed(first) == data
    nchunks, pos = 0, len(STREAM_IDENTIFIER)
    while pos < len(first):
        pos += 4 + int.from_bytes(first[pos + 1:pos + 4], "little")
        nchunks += 1
    assert nchunks == -(-size // MAX_BLOCK_SIZE)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=300),
                          st.builds(lambda n, b: b * n, st.integers(1, 5000),
                                    st.binary(min_size=1, max_size=8))), max_size=12),
       st.integers(0, 2**32))
def test_round_trip_in_any_pieces(frames, seed):
    enc = SnappyEncoder()
    wire = b"".join(enc.encode(f) for f in frames)
    for f in frames[:3]:
        assert go_reference(f, False) == SnappyEncoder().encode(f)[len(STREAM_IDENTIFIER):] \
            or not f
    dec = SnappyDecoder()
    assert feed_pieces(dec, wire, random.Random(seed), top=700) == b"".join(frames)
    assert dec.at_boundary
    dec.close()


# -- decoder rules (Go's snappy/decode.go) ---------------------------------------------------

def fails(stream: bytes, verdict: str, match: str, pieces: int = 0) -> SnappyFramingError:
    dec = SnappyDecoder()
    with pytest.raises(SnappyFramingError, match=match) as info:
        if pieces:
            for i in range(0, len(stream), pieces):
                dec.feed(stream[i:i + pieces])
        else:
            dec.feed(stream)
        dec.close()
    assert info.value.go_error == verdict
    with pytest.raises(SnappyFramingError):           # sticky
        dec.feed(b"")
    return info.value


@pytest.mark.parametrize("pieces", [0, 1, 3, 7])
def test_stream_identifier_must_come_first(pieces):
    e = fails(SYN3, ERR_CORRUPT, "not the stream identifier.*nocomp", pieces)
    assert isinstance(e, ValueError)
    fails(GO_HELLO, ERR_CORRUPT, "first chunk has type 0x01", pieces)
    fails(chunk(0xFE, b"pad") + GO_SYN3, ERR_CORRUPT, "first chunk", pieces)


@pytest.mark.parametrize("pieces", [0, 1, 5])
def test_identifier_repeats_are_checked_and_skipped(pieces):
    dec = SnappyDecoder()
    stream = GO_SYN3 + STREAM_IDENTIFIER + GO_HELLO + STREAM_IDENTIFIER
    assert feed_pieces(dec, stream, random.Random(pieces), top=max(pieces, 1)) == \
        SYN3 + PSH_HELLO
    fails(GO_SYN3 + b"\xff\x06\x00\x00sNaPpX", ERR_CORRUPT, "sNaPp", pieces)
    fails(GO_SYN3 + chunk(0xFF, b"sNaPpY!"), ERR_CORRUPT, "identifier chunk of length 7",
          pieces)
    fails(chunk(0xFF, b"sNaPp"), ERR_CORRUPT, "length 5", pieces)


def test_chunk_length_limit_checked_before_the_type():
    big = (MAX_CHUNK_BODY + 1).to_bytes(3, "little")
    for kind in (0x00, 0x01, 0x80, 0xFE, 0x02):
        dec = SnappyDecoder()
        dec.feed(STREAM_IDENTIFIER)
        with pytest.raises(SnappyFramingError, match="exceeds 76494") as info:
            dec.feed(bytes([kind]) + big)        # the header alone is enough to reject
        assert info.value.go_error == ERR_UNSUPPORTED
        assert dec.buffered == 0


def test_reserved_unskippable_and_skippable_types():
    for kind in (0x02, 0x10, 0x7F):
        fails(STREAM_IDENTIFIER + chunk(kind, b"x"), ERR_UNSUPPORTED, f"0x{kind:02x}")
    body = os.urandom(MAX_CHUNK_BODY)
    for kind in (0x80, 0xC3, 0xFD, 0xFE):
        stream = GO_SYN3 + chunk(kind, body) + chunk(kind, b"") + GO_HELLO
        assert SnappyDecoder().feed(stream) == SYN3 + PSH_HELLO
        dec = SnappyDecoder()
        assert feed_pieces(dec, stream, random.Random(kind), top=1298) == SYN3 + PSH_HELLO
        dec = SnappyDecoder()          # a skippable chunk is dropped as it arrives
        dec.feed(stream[:len(GO_SYN3) + 1000])
        assert dec.buffered == 0 and not dec.at_boundary
        with pytest.raises(SnappyFramingError, match="inside a chunk"):
            dec.close()


def test_uncompressed_chunk_limits():
    block = os.urandom(MAX_BLOCK_SIZE)
    assert SnappyDecoder().feed(STREAM_IDENTIFIER + chunk(1, crc_le(block) + block)) == block
    assert SnappyDecoder().feed(STREAM_IDENTIFIER + chunk(1, crc_le(b""))) == b""
    over = block + b"x"
    e = fails(STREAM_IDENTIFIER + chunk(1, crc_le(over) + over), ERR_CORRUPT, "65537 bytes")
    assert e.decoded == b""
    fails(STREAM_IDENTIFIER + chunk(1, b"abc"), ERR_CORRUPT, "shorter than its 4-byte")
    fails(STREAM_IDENTIFIER + chunk(0, b""), ERR_CORRUPT, "shorter than its 4-byte")


def test_compressed_chunk_limits():
    zeros = bytes(MAX_BLOCK_SIZE + 1)
    body = crc_le(zeros) + bytes(cramjam.snappy.compress_raw(zeros))
    assert len(body) < MAX_CHUNK_BODY
    fails(STREAM_IDENTIFIER + chunk(0, body), ERR_CORRUPT, "decodes to 65537 bytes")
    fails(STREAM_IDENTIFIER + chunk(0, crc_le(b"") + b"\xff\xff\xff\xff\xff\xff"),
          ERR_CORRUPT, "bad length header")
    empty = bytes(cramjam.snappy.compress_raw(b""))
    assert SnappyDecoder().feed(STREAM_IDENTIFIER + chunk(0, crc_le(b"") + empty)) == b""


@pytest.mark.parametrize("frame", [SYN3, PSH_256A, TEXT[:40000]], ids=["syn", "256A", "text"])
def test_checksum_and_block_corruption(frame):
    good = SnappyEncoder().encode(frame)
    bad = bytearray(good)
    bad[14] ^= 0x01                           # first checksum byte
    e = fails(GO_SYN3 + bytes(bad[10:]), ERR_CORRUPT, "checksum mismatch")
    assert e.decoded == SYN3                  # the good chunk before the bad one
    if good[10] == 0:                         # compressed: break the block itself
        bad = bytearray(good)
        bad[18 + 3:] = b"\xff" * (len(bad) - 18 - 3)    # keep the varint length
        fails(bytes(bad), ERR_CORRUPT, "corrupt block|checksum")


def test_good_chunks_before_a_bad_header_are_delivered():
    e = fails(GO_SYN3 + GO_HELLO + chunk(0x05, b""), ERR_UNSUPPORTED, "0x05")
    assert e.decoded == SYN3 + PSH_HELLO


def test_close_and_truncation():
    dec = SnappyDecoder()
    dec.close()                               # empty stream: fine
    dec.feed(GO_SYN3[:12])
    assert dec.buffered == 2
    with pytest.raises(SnappyFramingError, match="inside a chunk") as info:
        dec.close()
    assert info.value.go_error == "unexpected EOF"


# -- fuzz ------------------------------------------------------------------------------------

def run_garbage(stream: bytes, rnd: random.Random) -> None:
    dec = SnappyDecoder()
    try:
        feed_pieces(dec, stream, rnd, top=rnd.choice((1, 17, 1298, 100000)))
        dec.close()
    except SnappyFramingError:
        pass
    assert dec.buffered < MAX_CHUNK


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.booleans(), st.integers(0, 2**32))
def test_garbage_raises_only_the_named_error(data, identified, seed):
    run_garbage((STREAM_IDENTIFIER if identified else b"") + data, random.Random(seed))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1,
                max_size=6), st.integers(0, 2**32))
def test_mutated_streams_raise_only_the_named_error(flips, seed):
    enc = SnappyEncoder()
    wire = bytearray(b"".join(enc.encode(f) for f in (SYN3, PSH_HELLO, PSH_256A, TEXT[:9000],
                                                       os.urandom(3000))))
    for at, value in flips:
        wire[at % len(wire)] = value
    run_garbage(bytes(wire), random.Random(seed))


def test_headers_claiming_huge_chunks_never_buffer_beyond_the_limit():
    rnd = random.Random(1)
    for _ in range(200):
        header = bytes([rnd.choice((0, 1, 0x80, 0xFE))]) + rnd.randbytes(3)
        dec = SnappyDecoder()
        dec.feed(STREAM_IDENTIFIER)
        try:
            for _ in range(60):
                dec.feed(header + rnd.randbytes(4000))
                assert dec.buffered < MAX_CHUNK
        except SnappyFramingError:
            pass
        assert dec.buffered < MAX_CHUNK


def test_every_split_point_and_input_type():
    stream = GO_SYN3 + chunk(0xFE, b"pad") + GO_HELLO + GO_256A
    want = SYN3 + PSH_HELLO + PSH_256A
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1, 7):
            dec = SnappyDecoder()
            got = dec.feed(stream[:i]) + dec.feed(bytearray(stream[i:j])) + \
                dec.feed(memoryview(stream)[j:])
            assert got == want and dec.at_boundary, (i, j)
    words = memoryview(bytearray(stream + b"\0" * (-len(stream) % 4))).cast("I")
    assert SnappyDecoder().feed(words)[:len(want)] == want
    enc = SnappyEncoder()
    assert enc.encode(memoryview(SYN3)) == GO_SYN3


def test_bench_tool_runs(capsys):
    from tools import bench_snappy
    bench_snappy.bench("text", 4096, 4, 0.001)
    assert "kcpgo SnappyDecoder.feed" in capsys.readouterr().out
