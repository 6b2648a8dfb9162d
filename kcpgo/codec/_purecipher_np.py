"""TEA-16, XTEA and Twofish on numpy arrays: many blocks per operation (optional: numpy).

The same ciphers as :mod:`kcpgo.codec._purecipher`, byte for byte, for when numpy is
installed (``pip install kcpgo[fast]``); importing this module raises ImportError otherwise,
and the pure-Python path is used.

A block function here maps an ``(n, w)`` array of u32 words (w = 2 for TEA/XTEA, 4 for
Twofish; native order, already read in the cipher's word order) to the encrypted words. Each
operation then costs ~1 µs plus a few ns per block, so it pays from a few dozen blocks: CFB
decryption of whole datagrams or batches (every keystream block is E(previous ciphertext
block), all known in advance), and CFB encryption of a batch of datagrams, one block of
each per step (docs/protocol.md §4.2).
"""
from __future__ import annotations

from typing import Callable, List

import numpy as np

from . import _purecipher

WordsFn = Callable[[np.ndarray], np.ndarray]

_U32 = np.uint32


def tea_words(key: bytes) -> WordsFn:
    """TEA with kcp-go's 16 rounds on ``(n, 2)`` words (left, right)."""
    c = [_U32(x) for x in _purecipher._tea_constants(key)]
    k0, k1, k2, k3 = c[:4]
    sums = c[4:]

    def encrypt(w: np.ndarray) -> np.ndarray:
        v0 = w[:, 0].copy()
        v1 = w[:, 1].copy()
        for s in sums:
            v0 += ((v1 << 4) + k0) ^ (v1 + s) ^ ((v1 >> 5) + k1)
            v1 += ((v0 << 4) + k2) ^ (v0 + s) ^ ((v0 >> 5) + k3)
        return np.stack((v0, v1), axis=1)

    return encrypt


def xtea_words(key: bytes) -> WordsFn:
    """Standard XTEA on ``(n, 2)`` words (left, right)."""
    schedule = [(_U32(a), _U32(b)) for a, b in _purecipher._xtea_schedule(key)]

    def encrypt(w: np.ndarray) -> np.ndarray:
        v0 = w[:, 0].copy()
        v1 = w[:, 1].copy()
        for a, b in schedule:
            v0 += (((v1 << 4) ^ (v1 >> 5)) + v1) ^ a
            v1 += (((v0 << 4) ^ (v0 >> 5)) + v0) ^ b
        return np.stack((v0, v1), axis=1)

    return encrypt


def twofish_words(key: bytes) -> WordsFn:
    """Standard Twofish on ``(n, 4)`` little-endian words.

    g() is looked up 16 bits at a time: ``g(x) = T01[x & 0xFFFF] ^ T23[x >> 16]`` with
    ``T01[hi << 8 | lo] = s0[lo] ^ s1[hi]`` (the fused S-box/MDS tables of
    :func:`_purecipher.twofish_schedule`), and for ``g(rol8(x))``, whose bytes 0..3 go to
    s1, s2, s3, s0, the tables T12 and T30. Four 256 KiB tables per key, two lookups per g.
    """
    (s0, s1, s2, s3), kw = _purecipher.twofish_schedule(key)
    s0, s1, s2, s3 = (np.array(s, dtype=_U32) for s in (s0, s1, s2, s3))

    def pair(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return (hi[:, None] ^ lo[None, :]).ravel()

    t01, t23, t12, t30 = pair(s0, s1), pair(s2, s3), pair(s1, s2), pair(s3, s0)
    kw = [_U32(k) for k in kw]
    white_in, white_out = kw[:4], kw[4:8]
    rounds = [kw[8 + 4 * r:12 + 4 * r] for r in range(8)]
    low16 = _U32(0xFFFF)

    def encrypt(w: np.ndarray) -> np.ndarray:
        r0, r1, r2, r3 = (w[:, i] ^ white_in[i] for i in range(4))
        for ka, kb, kc, kd in rounds:
            # (r0, r1) feed (r2, r3), then the roles swap (as in _purecipher).
            t0 = t01[r0 & low16] ^ t23[r0 >> 16]
            t1 = t12[r1 & low16] ^ t30[r1 >> 16]
            r2 ^= t0 + t1 + ka
            r2 = (r2 >> 1) | (r2 << 31)
            r3 = ((r3 << 1) | (r3 >> 31)) ^ (t0 + (t1 << 1) + kb)
            t0 = t01[r2 & low16] ^ t23[r2 >> 16]
            t1 = t12[r3 & low16] ^ t30[r3 >> 16]
            r0 ^= t0 + t1 + kc
            r0 = (r0 >> 1) | (r0 << 31)
            r1 = ((r1 << 1) | (r1 >> 31)) ^ (t0 + (t1 << 1) + kd)
        return np.stack((r2 ^ white_out[0], r3 ^ white_out[1],
                         r0 ^ white_out[2], r1 ^ white_out[3]), axis=1)

    return encrypt


def words_fn(name: str, key: bytes) -> WordsFn:
    """The block function of cipher ``name`` (tea, xtea or twofish) for ``key``."""
    return {"tea": tea_words, "xtea": xtea_words, "twofish": twofish_words}[name](key)


# --------------------------------------------------------------------------------------------
# CFB over a words function (docs/protocol.md §4.2)

class NumpyCFB:
    """Full-block CFB with the fixed IV over a words function, for batches of datagrams.

    ``dtype`` is the cipher's word order (">u4" for TEA/XTEA, "<u4" for Twofish); a final
    partial block is truncated, like kcp-go.
    """

    def __init__(self, encrypt_words: WordsFn, block_size: int, byteorder: str,
                 iv: bytes) -> None:
        self._encrypt = encrypt_words
        self._bs = block_size
        self._width = block_size // 4
        self._dtype = np.dtype(">u4" if byteorder == "big" else "<u4")
        self._iv = iv
        self._pads = tuple(bytes(i) for i in range(block_size))

    def _words(self, buf: bytes) -> np.ndarray:
        return np.frombuffer(buf, dtype=self._dtype).reshape(-1, self._width).astype(_U32)

    def decrypt_many(self, datagrams: List[bytes]) -> List[bytes]:
        """Every datagram decrypted; all their blocks go through the cipher at once."""
        bs = self._bs
        iv = self._iv
        pads = self._pads
        regs = []
        data = []
        for d in datagrams:
            n = len(d)
            if n:
                regs += (iv, d[:(n - 1) - (n - 1) % bs])
                data += (d, pads[-n % bs])
        if not regs:
            return [b"" for _ in datagrams]
        keystream = self._encrypt(self._words(b"".join(regs))).astype(self._dtype)
        plain = (np.frombuffer(b"".join(data), dtype=np.uint8)
                 ^ keystream.view(np.uint8).ravel()).tobytes()
        out = []
        pos = 0
        for d in datagrams:
            n = len(d)
            out.append(plain[pos:pos + n])
            pos += n + (-n % bs)
        return out

    def encrypt_many(self, datagrams: List[bytes]) -> List[bytes]:
        """Every datagram encrypted, block i of all of them per step (zero-padded to the
        longest; the padding's output is dropped)."""
        bs = self._bs
        n = len(datagrams)
        blocks = -(-max(len(d) for d in datagrams) // bs) if datagrams else 0
        if blocks == 0:
            return [b"" for _ in datagrams]
        stride = bs * blocks
        plain = self._words(b"".join([bytes(d).ljust(stride, b"\0") for d in datagrams]))
        plain = plain.reshape(n, blocks, self._width)
        out = np.empty_like(plain)
        reg = np.tile(self._words(self._iv), (n, 1))
        encrypt = self._encrypt
        for i in range(blocks):
            reg = encrypt(reg)
            reg ^= plain[:, i]
            out[:, i] = reg
        wire = out.astype(self._dtype).tobytes()
        return [wire[j * stride:j * stride + len(d)] for j, d in enumerate(datagrams)]
