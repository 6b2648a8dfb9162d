"""kcpgo.reedsolomon against klauspost/reedsolomon 1.9.13 (docs/protocol.md §3, tests/vectors/fec_rs.json)."""
import itertools
import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from kcpgo.codec import reedsolomon
from kcpgo.codec.reedsolomon import MUL_TABLES, ReedSolomon, gf_exp, gf_inv, gf_mul

VECTORS = json.loads((Path(__file__).parent / "vectors" / "fec_rs.json").read_text())
GROUPS = VECTORS["groups"]

# docs/protocol.md §3.2, verified against the Debian Go library
PARITY_ROWS = {
    (1, 1): [[1]],
    (1, 2): [[1], [1]],
    (2, 1): [[3, 2]],
    (3, 1): [[1, 1, 1]],
    (4, 1): [[27, 28, 18, 20]],
    (5, 1): [[7, 7, 6, 6, 1]],
    (2, 2): [[3, 2], [2, 3]],
    (3, 2): [[1, 1, 1], [15, 8, 6]],
    (4, 2): [[27, 28, 18, 20], [28, 27, 20, 18]],
    (5, 2): [[7, 7, 6, 6, 1], [9, 8, 9, 8, 1]],
    (6, 3): [[7, 6, 5, 4, 3, 2], [6, 7, 4, 5, 2, 3], [160, 223, 223, 183, 254, 232]],
    (8, 2): [[26, 132, 186, 51, 231, 16, 198, 39], [132, 26, 51, 186, 16, 231, 39, 198]],
    (10, 3): [[129, 150, 175, 184, 210, 196, 254, 232, 3, 2],
              [150, 129, 184, 175, 196, 210, 232, 254, 2, 3],
              [191, 214, 98, 10, 6, 111, 223, 183, 5, 4]],
}


def test_field_basics():
    # §3.1: exp table starts 1, 2, 4, ..., 0x80, 0x1D, 0x3A
    assert [gf_exp(2, i) for i in range(10)] == [1, 2, 4, 8, 16, 32, 64, 128, 0x1D, 0x3A]
    assert gf_exp(0, 0) == 1 and gf_exp(0, 5) == 0
    for a in range(1, 256):
        assert gf_mul(a, gf_inv(a)) == 1
    assert all(MUL_TABLES[c][x] == gf_mul(c, x) for c in (0, 1, 2, 29, 255) for x in range(256))


@pytest.mark.parametrize("group", GROUPS, ids=[g["name"] for g in GROUPS])
def test_golden_group(group):
    k, m = group["data_shards"], group["parity_shards"]
    rs = ReedSolomon(k, m)
    assert rs.parity_matrix == group["parity_matrix"]
    data = [bytes.fromhex(h) for h in group["data"]]
    padded = [bytes.fromhex(h) for h in group["data_padded"]]
    parity = [bytes.fromhex(h) for h in group["parity"]]
    assert [d.ljust(group["shard_size"], b"\0") for d in data] == padded
    assert rs.encode(padded) == parity
    # the int core accepts the unpadded shards (implicit zero padding)
    assert [v.to_bytes(group["shard_size"], "little") for v in rs.encode_ints(data)] == parity
    shards = padded + parity
    for i in group["reconstruct"]["missing_shards"]:
        shards[i] = None
    assert rs.reconstruct(shards) == padded


@pytest.mark.parametrize("km", sorted(PARITY_ROWS))
def test_parity_rows_table(km):
    rs = ReedSolomon(*km)
    assert rs.parity_matrix == PARITY_ROWS[km]
    assert (rs.data_shards, rs.parity_shards, rs.total_shards) == (km[0], km[1], sum(km))


@pytest.mark.parametrize("k,m", [(0, 1), (1, 0), (-1, 3), (200, 57), (256, 1), (1, 256)])
def test_bad_config(k, m):
    with pytest.raises(ValueError):
        ReedSolomon(k, m)


def test_largest_config():
    rs = ReedSolomon(128, 128)
    data = [bytes([i]) * 3 for i in range(128)]
    parity = rs.encode(data)
    shards = [None] * 128 + parity
    assert rs.reconstruct(shards) == data


def test_bad_arguments():
    rs = ReedSolomon(3, 2)
    with pytest.raises(ValueError):
        rs.encode([b"ab", b"cd"])              # wrong count
    with pytest.raises(ValueError):
        rs.encode([b"ab", b"cd", b"e"])        # unequal lengths
    with pytest.raises(ValueError):
        rs.reconstruct([b"ab", None, None, b"cd"])   # wrong slot count
    with pytest.raises(ValueError):
        rs.reconstruct([b"ab", None, None, b"cd", b"e"])   # unequal lengths
    with pytest.raises(ValueError):
        rs.reconstruct([None] * 5)


def test_reconstruct_nothing_missing_returns_given_objects():
    rs = ReedSolomon(3, 2)
    data = [b"abc", b"def", b"ghi"]
    out = rs.reconstruct(data + [None, None])
    assert out == data and all(a is b for a, b in zip(out, data))


def test_every_erasure_pattern_10_3():
    rs = ReedSolomon(10, 3)
    rnd = random.Random(7)
    data = [bytes(rnd.getrandbits(8) for _ in range(40)) for _ in range(10)]
    full = data + rs.encode(data)
    for lost in range(1, 4):
        for missing in itertools.combinations(range(13), lost):
            shards = [None if i in missing else s for i, s in enumerate(full)]
            assert rs.reconstruct(shards) == data
    # every pattern is cached, within the bound
    assert 13 + 78 + 286 >= len(rs._decode_cache) > 0 and rs._decode_cache_terms <= 1 << 16


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_erasures_up_to_m(draw):
    k = draw.draw(st.integers(1, 30), label="k")
    m = draw.draw(st.integers(1, 40 - k), label="m")
    size = draw.draw(st.integers(1, 64), label="size")
    seed = draw.draw(st.integers(0, 2 ** 32), label="seed")
    rnd = random.Random(seed)
    data = [rnd.randbytes(size) for _ in range(k)]
    rs = ReedSolomon(k, m)
    parity = rs.encode(data)
    assert len(parity) == m and all(len(p) == size for p in parity)
    full = data + parity
    lost = draw.draw(st.integers(0, m), label="lost")
    missing = set(rnd.sample(range(k + m), lost))
    shards = [None if i in missing else s for i, s in enumerate(full)]
    assert rs.reconstruct(shards) == data
    # one erasure too many always fails
    extra = set(rnd.sample(range(k + m), m + 1))
    with pytest.raises(ValueError):
        rs.reconstruct([None if i in extra else s for i, s in enumerate(full)])


def test_linear_in_gf():
    """parity(a ^ b) == parity(a) ^ parity(b): the code is linear over GF(2^8)."""
    rs = ReedSolomon(5, 3)
    a = [os.urandom(17) for _ in range(5)]
    b = [os.urandom(17) for _ in range(5)]
    ab = [bytes(x ^ y for x, y in zip(p, q)) for p, q in zip(a, b)]
    pa, pb, pab = rs.encode(a), rs.encode(b), rs.encode(ab)
    assert pab == [bytes(x ^ y for x, y in zip(p, q)) for p, q in zip(pa, pb)]


@pytest.fixture(params=[True, False], ids=["numpy", "ints"])
def parity_engine(request, monkeypatch):
    """New codecs encode parity with numpy (the ``fast`` extra) or with Python ints."""
    if request.param:
        pytest.importorskip("numpy")
    monkeypatch.setattr(reedsolomon, "USE_NUMPY", request.param)
    return request.param


@pytest.mark.parametrize("group", GROUPS, ids=[g["name"] for g in GROUPS])
def test_golden_parity_both_engines(group, parity_engine):
    # the golden groups come from kcp-go (tests/vectors/README.md); the unpadded data shards
    # behind a 6-byte header, as the FEC layer passes whole packets
    rs = ReedSolomon(group["data_shards"], group["parity_shards"])
    assert (rs._np_parity is not None) == (parity_engine and rs.parity_shards <= 8)
    data = [bytes(6) + bytes.fromhex(h) for h in group["data"]]
    parity = [bytes.fromhex(h) for h in group["parity"]]
    assert rs.encode_parity(data, 6, group["shard_size"]) == parity


# (k, m) covering every numpy table entry size (1, 2, 4 and 8 bytes: the smallest that holds
# m products) and the int fallback past 8 parity shards
@pytest.mark.parametrize("k,m", [(1, 1), (3, 2), (10, 3), (16, 4), (17, 4), (10, 5), (20, 8),
                                 (4, 9)])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_encode_parity_equals_encode_ints(k, m, data):
    """Property: the numpy engine gives :meth:`encode_ints`'s bytes (the int path is pinned by
    the golden vectors) for unequal, odd and empty shard lengths at odd and even offsets."""
    from kcpgo.codec import reedsolomon as module
    if module._rs_np is None:
        pytest.skip("numpy is not installed")
    offset = data.draw(st.integers(0, 7))
    shards = data.draw(st.lists(st.binary(max_size=64), min_size=k, max_size=k))
    size = max(map(len, shards)) + data.draw(st.integers(0, 3))
    packets = [bytes(range(offset)) + s for s in shards]
    rs = ReedSolomon(k, m)
    expect = [v.to_bytes(size, "little") for v in rs.encode_ints(shards)]
    if m <= 8:
        assert module._rs_np.NumpyParity(rs.parity_matrix, MUL_TABLES).encode(
            packets, offset, size) == expect
    assert rs.encode_parity(packets, offset, size) == expect


def test_encode_parity_checks_the_shard_count():
    with pytest.raises(ValueError, match="expected 3 data shards"):
        ReedSolomon(3, 2).encode_parity([b"a", b"b"], 0, 1)


def test_empty_shards_have_empty_parity():
    # zero-length shards give zero-length parity, as the int path always did (numpy: no
    # reshape of an empty buffer by inference)
    assert ReedSolomon(3, 2).encode([b"", b"", b""]) == [b"", b""]


def test_parity_tables_are_published_whole(monkeypatch):
    """Codecs are shared by every session (``shared_codec``): a second thread whose first
    parity call comes while the first thread builds the numpy tables must get the right
    parity, not half-built tables (a reviewer's reproducer: ``_table`` was set before
    ``_offsets``, and the other thread's call failed with a UFuncTypeError)."""
    import threading
    np = pytest.importorskip("numpy")
    from kcpgo.codec import _rs_np
    rs = ReedSolomon(4, 2)
    engine = rs._np_parity
    packets = [bytes([i + 1]) * 10 for i in range(4)]
    expect = [v.to_bytes(10, "little") for v in rs.encode_ints(packets)]
    other = []
    real_arange = np.arange

    def arange(*args, **kwargs):    # inside the first build: the other thread's first call
        if not other:
            other.append(None)
            t = threading.Thread(target=lambda: other.append(engine.encode(packets, 0, 10)))
            t.start()
            t.join()
        return real_arange(*args, **kwargs)
    monkeypatch.setattr(_rs_np.np, "arange", arange)
    assert engine.encode(packets, 0, 10) == expect
    assert other == [None, expect]
