"""kcp-go's full-block CFB (docs/protocol.md §4.2) over TEA-16, XTEA and Twofish, choosing per
call the fastest of three implementations of the same bytes:

* scalar: one block at a time, Python ints (:mod:`._purecipher`); the only way to encrypt a
  single datagram, since CFB encryption is sequential;
* lanes (TEA/XTEA): many 8-byte blocks in one Python int (:func:`._purecipher.lane_encryptor`),
  pure Python: decryption of all blocks at once (every keystream block is E(the previous
  ciphertext block)), encryption of a batch one block of each datagram per step;
* numpy (when installed, ``pip install kcpgo[fast]``; :mod:`._purecipher_np`): the same on
  u32 arrays, which pays from a few hundred blocks per operation.

Thresholds come from ``tools/bench_crypt.py --batch`` on a 2-core machine (CPython 3.11,
numpy 2.4): see the comments next to them.
"""
from __future__ import annotations

from typing import Callable, List, Optional

from . import _purecipher

try:  # numpy is an optional extra: without it the pure-Python paths serve every call.
    from . import _purecipher_np
except ImportError:  # pragma: no cover - depends on the environment
    _purecipher_np = None  # type: ignore[assignment]

#: Whether new engines use numpy (tests set it to False to check the pure-Python paths).
USE_NUMPY = _purecipher_np is not None

_LANES = {"tea": _purecipher.tea_lanes, "xtea": _purecipher.xtea_lanes}

# Decryption with numpy from this many blocks per call (lanes below: TEA 1 datagram of 175
# blocks 60-90 µs with lanes, 125 µs with numpy; 4 datagrams 32 µs each with numpy). Twofish
# has no lanes path (its S-boxes are table look-ups): numpy from one block up.
_NUMPY_DECRYPT_MIN = {"tea": 300, "xtea": 300, "twofish": 1}
# Batch encryption with lanes from this many datagrams (TEA, 1400 B: 4 of them 640 µs each,
# scalar ~900 µs); numpy's per-step cost makes it slower than lanes at every batch size.
_LANES_ENCRYPT_MIN = 4
# Twofish batch encryption with numpy from this many datagrams (per step ~0.8 ms of fixed
# cost against ~30 µs per block in Python).
_NUMPY_ENCRYPT_MIN = 32


class CFBEngine:
    """CFB with kcp-go's fixed IV over cipher ``name`` (tea, xtea or twofish).

    ``encrypt_block``: the scalar block function of :mod:`._purecipher` for ``key`` (ints in
    ``byteorder``), ``block_size`` 8 or 16. ``use_numpy=None`` follows :data:`USE_NUMPY`.
    """

    def __init__(self, name: str, key: bytes, encrypt_block: Callable[[int], int],
                 block_size: int, byteorder: str, iv: bytes,
                 use_numpy: Optional[bool] = None) -> None:
        self.name = name
        iv = iv[:block_size]
        self._scalar = (encrypt_block, block_size, byteorder, int.from_bytes(iv, byteorder))
        self._iv = iv
        lanes = _LANES.get(name)
        self._lanes = lanes(key) if lanes is not None else None
        if use_numpy is None:
            use_numpy = USE_NUMPY
        self._np = None
        if use_numpy and _purecipher_np is not None:
            self._np = _purecipher_np.NumpyCFB(_purecipher_np.words_fn(name, key), block_size,
                                               byteorder, iv)
        self._np_decrypt_min = _NUMPY_DECRYPT_MIN.get(name, 1) * block_size

    def encrypt(self, data: bytes) -> bytes:
        return _purecipher.cfb_encrypt(data, *self._scalar)

    def decrypt(self, data: bytes) -> bytes:
        return self.decrypt_many([data])[0]

    def decrypt_many(self, datagrams: List[bytes]) -> List[bytes]:
        """Every datagram decrypted, all blocks of all of them at once where that is faster."""
        if self._np is not None and sum(map(len, datagrams)) >= self._np_decrypt_min:
            return self._np.decrypt_many(datagrams)
        if self._lanes is not None:
            return _purecipher.cfb_decrypt_lanes(datagrams, self._lanes, self._iv)
        return [_purecipher.cfb_decrypt(d, *self._scalar) for d in datagrams]

    def encrypt_many(self, datagrams: List[bytes]) -> List[bytes]:
        """Every datagram encrypted; a batch runs one block of each datagram per step."""
        n = len(datagrams)
        if self._lanes is not None and n >= _LANES_ENCRYPT_MIN:
            return _purecipher.cfb_encrypt_lanes(datagrams, self._lanes, self._iv)
        if self._np is not None and self._lanes is None and n >= _NUMPY_ENCRYPT_MIN:
            return self._np.encrypt_many(datagrams)
        return [_purecipher.cfb_encrypt(d, *self._scalar) for d in datagrams]
