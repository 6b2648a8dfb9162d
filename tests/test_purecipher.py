"""TEA, XTEA and Twofish CFB (kcpgo.codec._purecfb): every path gives kcp-go's bytes.

The golden vectors (tests/vectors/crypt.json) run through each of the engine's paths — scalar,
Python-int lanes, numpy — and, through ``crypt.new``, with numpy switched off; property tests
check that the paths agree on random keys, lengths and batches (including empty datagrams and
lengths that are not a multiple of the block size).
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kcpgo import crypt
from kcpgo.codec import _purecfb, _purecipher
from tests.support.vectors import h, load

CRYPT = load("crypt.json")
PASS = h(CRYPT["derived_key"])
CIPHERS = {c["kcptun_name"]: c for c in CRYPT["ciphers"]}
NAMES = ("tea", "xtea", "twofish")
GEOMETRY = {"tea": (_purecipher.tea_encryptor, 8, "big"),
            "xtea": (_purecipher.xtea_encryptor, 8, "big"),
            "twofish": (_purecipher.twofish_encryptor, 16, "little")}
HAS_NUMPY = _purecfb._purecipher_np is not None
PATHS = ("scalar", "lanes", "numpy")


def engine(name: str, key: bytes, path: str) -> _purecfb.CFBEngine:
    """An engine forced onto one path (every call, whatever its size)."""
    encryptor, bs, order = GEOMETRY[name]
    e = _purecfb.CFBEngine(name, key, encryptor(key), bs, order, crypt.INITIAL_VECTOR,
                           use_numpy=path == "numpy")
    if path == "scalar":
        e._lanes = None
    elif path == "lanes":
        if e._lanes is None:
            pytest.skip(f"{name} has no lanes path")
    else:
        if not HAS_NUMPY:
            pytest.skip("numpy is not installed")
        e._lanes = None
        e._np_decrypt_min = 0
    return e


def encrypt_many(e: _purecfb.CFBEngine, path: str, datagrams: list) -> list:
    if path == "scalar":
        return [e.encrypt(d) for d in datagrams]
    if path == "lanes":
        return _purecipher.cfb_encrypt_lanes(datagrams, e._lanes, e._iv)
    return e._np.encrypt_many(datagrams)


@pytest.mark.parametrize("name,path", [(n, p) for n in NAMES for p in PATHS
                                       if not (n == "twofish" and p == "lanes")])
def test_golden_vectors_on_every_path(name, path):
    c = CIPHERS[name]
    e = engine(name, h(c["key"]), path)
    plains = [h(v["plaintext"]) for v in c["vectors"]]
    wires = [h(v["ciphertext"]) for v in c["vectors"]]
    assert e.decrypt_many(wires) == plains
    assert [e.decrypt_many([w])[0] for w in wires] == plains
    assert encrypt_many(e, path, plains) == wires
    ex = c["packet_example"]
    assert e.decrypt_many([h(ex["ciphertext"])]) == [h(ex["plaintext"])]


@pytest.mark.parametrize("name", NAMES)
def test_block_crypt_without_numpy(name, monkeypatch):
    """crypt.new's cipher with numpy off: the vectors, seal/open and their batch forms."""
    monkeypatch.setattr(_purecfb, "USE_NUMPY", False)
    b = crypt.new(name, PASS)
    assert b._engine._np is None
    for v in CIPHERS[name]["vectors"]:
        assert b.encrypt(h(v["plaintext"])) == h(v["ciphertext"])
        assert b.decrypt(h(v["ciphertext"])) == h(v["plaintext"])
    payloads = [bytes([i]) * (i * 37 % 1500) for i in range(12)]
    wires = b.seal_many(payloads)
    assert b.open_many(wires) == payloads
    assert [b.open(w) for w in wires] == payloads
    bad = bytearray(wires[3])
    bad[-1] ^= 1
    assert b.open_many([wires[0], bytes(bad)]) == [payloads[0], None]


@pytest.mark.skipif(not HAS_NUMPY, reason="numpy is not installed")
@pytest.mark.parametrize("name", NAMES)
def test_block_crypt_with_numpy(name):
    b = crypt.new(name, PASS)
    assert b._engine._np is not None
    payloads = [bytes([i]) * (i * 53 % 1500) for i in range(40)]
    wires = b.seal_many(payloads)
    assert b.open_many(wires) == payloads
    assert [b.open(w) for w in wires] == payloads
    assert b.open_many([]) == [] and b.seal_many([]) == []


KEYS = {"tea": st.binary(min_size=16, max_size=16), "xtea": st.binary(min_size=16, max_size=16),
        "twofish": st.sampled_from((16, 24, 32)).flatmap(
            lambda n: st.binary(min_size=n, max_size=n))}
BATCH = st.lists(st.binary(max_size=300), max_size=12)


@pytest.mark.parametrize("name", NAMES)
def test_property_paths_agree(name):
    paths = [p for p in PATHS if (p != "lanes" or name != "twofish")
             and (p != "numpy" or HAS_NUMPY)]

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(KEYS[name], BATCH)
    def check(key, datagrams):
        engines = {p: engine(name, key, p) for p in paths}
        ref = engines["scalar"]
        wires = [ref.encrypt(d) for d in datagrams]
        assert [len(w) for w in wires] == [len(d) for d in datagrams]
        for p, e in engines.items():
            assert encrypt_many(e, p, datagrams) == wires, p
            assert e.decrypt_many(wires) == datagrams, p
            assert e.decrypt_many(datagrams) == [ref.decrypt(d) for d in datagrams], p

    check()


def test_lanes_chunking_and_buckets():
    """More blocks than one lane int holds, and lane counts off the bucket size."""
    key = bytes(range(16))
    e = engine("xtea", key, "lanes")
    ref = engine("xtea", key, "scalar")
    big = [bytes(range(256)) * 9, b"x" * 8, b"", b"y" * 17]      # 2304 bytes = 288 blocks
    assert e.decrypt_many(big) == [ref.decrypt(d) for d in big]
    many = [bytes([i % 256]) * (i % 20) for i in range(_purecipher.LANE_CHUNK + 3)]
    assert _purecipher.cfb_encrypt_lanes(many, e._lanes, e._iv) == [ref.encrypt(d) for d in many]


def test_twofish_schedule_matches_encryptor():
    """The refactored key schedule still gives the Twofish paper's known answer."""
    sboxes, subkeys = _purecipher.twofish_schedule(bytes(16))
    assert len(sboxes) == 4 and all(len(s) == 256 for s in sboxes) and len(subkeys) == 40
    out = _purecipher.twofish_encryptor(bytes(16))(0)
    assert out.to_bytes(16, "little").hex() == "9f589f5cf6122c32b6bfec2f2ae8c35a"


def test_import_without_numpy():
    """With numpy missing the module imports and the ciphers fall back to pure Python."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['numpy'] = None\n"
            "from kcpgo import crypt\n"
            "from kcpgo.codec import _purecfb\n"
            "assert _purecfb._purecipher_np is None and not _purecfb.USE_NUMPY\n"
            "b = crypt.new('twofish', bytes(32))\n"
            "assert b.open_many(b.seal_many([b'abc', b''])) == [b'abc', b'']\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
