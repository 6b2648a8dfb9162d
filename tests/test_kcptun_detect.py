"""kcpgo.sansio.kcptun_detect: what a kcptun peer speaks, from its first bytes
(docs/kcptun.md §3.3: a snappy stream starts with the stream identifier 0xff; a bare smux
stream with its version byte; kcptun.md §4.9: nothing is negotiated, a mismatch is silent)."""
from __future__ import annotations

import pytest

from kcpgo.codec.snappy import SnappyEncoder
from kcpgo.sansio.kcptun_detect import DetectError, Framing, describe, detect
from kcpgo.sansio.smux_frames import CMD_SYN, encode_frame


def first_bytes(compression: bool, version: int) -> bytes:
    """What a kcptun client sends first: the SYN of stream 3 (docs/kcptun.md §2)."""
    syn = encode_frame(version, CMD_SYN, 3)
    return SnappyEncoder().encode(syn) if compression else syn


@pytest.mark.parametrize("compression", [True, False])
@pytest.mark.parametrize("version", [1, 2])
def test_each_framing_is_recognised_from_the_first_frame(compression, version):
    """Expected: exactly the (compression, version) the stream was written with."""
    data = first_bytes(compression, version)
    assert detect(data) == Framing(compression, version)
    assert detect(data + b"more bytes after it") == Framing(compression, version)


@pytest.mark.parametrize("compression", [True, False])
def test_a_short_prefix_asks_for_more_never_guesses(compression):
    """Every proper prefix of a snappy first chunk gives None (more bytes needed); a bare smux
    stream is known from its first byte."""
    data = first_bytes(compression, 2)
    if not compression:
        assert detect(data[:1]) == Framing(False, 2)
        return
    assert detect(b"") is None
    for cut in range(1, len(data)):
        assert detect(data[:cut]) is None, cut


@pytest.mark.parametrize("garbage,words", [
    (b"\x00\x01\x02", "neither snappy"),                  # a wrong key decrypts to garbage
    (b"\x03", "neither snappy"),                          # smux v3 does not exist
    (b"\xff\x06\x00\x00sNaPpX", "stream identifier"),
    (SnappyEncoder().encode(b"\x07\x00\x00\x00\x03\x00\x00\x00"), "not a smux version"),
])
def test_garbage_is_named(garbage, words):
    """Expected: DetectError naming what is wrong (kcptun itself closes silently,
    kcptun.md §4.9)."""
    with pytest.raises(DetectError, match=words):
        detect(garbage)


def test_describe_gives_kcptun_flags():
    assert describe(Framing(False, 2)) == "--smuxver 2 --nocomp"
    assert describe(Framing(True, 1)) == "--smuxver 1"
