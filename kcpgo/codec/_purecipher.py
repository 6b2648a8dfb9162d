"""Pure-Python block ciphers kcp-go offers but no installed library has: TEA-16, XTEA, Twofish.

Each ``*_encryptor(key)`` returns a function mapping one block, given as an int, to the
encrypted block as an int. The int is the block's bytes read in ``BYTEORDER[cipher]`` order
(big-endian for TEA/XTEA, little-endian for Twofish), which is the order the cipher itself reads
its words in, so the block function needs no byte shuffling. Only the encrypt direction exists:
kcp-go's CFB never uses a block cipher's decrypt (docs/protocol.md §4.2).

``cfb_encrypt`` / ``cfb_decrypt`` run full-block CFB over such a block function.

The lanes section runs TEA/XTEA on many blocks per big-int operation, and
:mod:`._purecfb` picks the fastest way per call (with :mod:`._purecipher_np` when numpy is
installed).

All arithmetic is u32; intermediate values are left unmasked where only ``+``, ``^`` and ``<<``
follow (their low 32 bits do not depend on higher bits) and masked before any ``>>``.
"""
from __future__ import annotations

import struct
from typing import Callable

BlockFn = Callable[[int], int]

_M32 = 0xFFFFFFFF

# TEA and XTEA key schedule constant (docs/protocol.md §4.3).
TEA_DELTA = 0x9E3779B9
# kcp-go calls x/crypto tea.NewCipherWithRounds(key, 16): 16 rounds = 8 cycles
# (docs/protocol.md §4.3).
TEA_CYCLES = 8
# Standard XTEA: 64 rounds = 32 cycles (docs/protocol.md §4.3).
XTEA_CYCLES = 32


# --------------------------------------------------------------------------------------------
# TEA (big-endian, 8 cycles)

def _tea_constants(key: bytes) -> tuple:
    """``(k0, k1, k2, k3, sum_1, ..., sum_8)``: TEA's key words and per-cycle sums."""
    if len(key) != 16:
        raise ValueError("TEA needs a 16-byte key")
    return struct.unpack(">4I", key) + tuple((TEA_DELTA * (i + 1)) & _M32
                                             for i in range(TEA_CYCLES))


def tea_encryptor(key: bytes) -> BlockFn:
    """Block function of TEA with kcp-go's 16 rounds; key: 16 bytes = four big-endian u32."""
    c = _tea_constants(key)
    k0, k1, k2, k3 = c[:4]
    sums = c[4:]

    def encrypt_block(x: int) -> int:
        v0 = x >> 32
        v1 = x & _M32
        for s in sums:
            v0 = (v0 + ((((v1 << 4) + k0) ^ (v1 + s) ^ ((v1 >> 5) + k1)))) & _M32
            v1 = (v1 + ((((v0 << 4) + k2) ^ (v0 + s) ^ ((v0 >> 5) + k3)))) & _M32
        return (v0 << 32) | v1

    return encrypt_block


def _tea_rounds(v0: int, v1: int, m: int, c: tuple) -> tuple:
    """TEA on lanes (see the lanes section): ``c`` = the constants replicated, ``m`` the mask."""
    k0, k1, k2, k3 = c[:4]
    for s in c[4:]:
        v0 = (v0 + ((((v1 << 4) + k0) ^ (v1 + s) ^ ((v1 >> 5) + k1)))) & m
        v1 = (v1 + ((((v0 << 4) + k2) ^ (v0 + s) ^ ((v0 >> 5) + k3)))) & m
    return v0, v1


def tea_lanes(key: bytes) -> "LaneFn":
    """TEA (kcp-go's 16 rounds) on many blocks at once (see :func:`lane_encryptor`)."""
    return lane_encryptor(_tea_constants(key), _tea_rounds)


# --------------------------------------------------------------------------------------------
# XTEA (big-endian, 32 cycles)

def _xtea_schedule(key: bytes) -> tuple:
    """XTEA's per-half-round "sum + key word" values, as (a, b) pairs: they depend only on
    the key."""
    if len(key) != 16:
        raise ValueError("XTEA needs a 16-byte key")
    k = struct.unpack(">4I", key)
    schedule = []
    s = 0
    for _ in range(XTEA_CYCLES):
        a = (s + k[s & 3]) & _M32
        s = (s + TEA_DELTA) & _M32
        schedule.append((a, (s + k[(s >> 11) & 3]) & _M32))
    return tuple(schedule)


def xtea_encryptor(key: bytes) -> BlockFn:
    """Block function of standard XTEA; key: 16 bytes = four big-endian u32."""
    schedule = _xtea_schedule(key)

    def encrypt_block(x: int) -> int:
        v0 = x >> 32
        v1 = x & _M32
        for a, b in schedule:
            v0 = (v0 + ((((v1 << 4) ^ (v1 >> 5)) + v1) ^ a)) & _M32
            v1 = (v1 + ((((v0 << 4) ^ (v0 >> 5)) + v0) ^ b)) & _M32
        return (v0 << 32) | v1

    return encrypt_block


def _xtea_rounds(v0: int, v1: int, m: int, c: tuple) -> tuple:
    """XTEA on lanes: ``c`` = the schedule's a0, b0, a1, b1, ... replicated."""
    it = iter(c)
    for a, b in zip(it, it):
        v0 = (v0 + ((((v1 << 4) ^ (v1 >> 5)) + v1) ^ a)) & m
        v1 = (v1 + ((((v0 << 4) ^ (v0 >> 5)) + v0) ^ b)) & m
    return v0, v1


def xtea_lanes(key: bytes) -> "LaneFn":
    """XTEA on many blocks at once (see :func:`lane_encryptor`)."""
    return lane_encryptor(tuple(w for pair in _xtea_schedule(key) for w in pair), _xtea_rounds)


# --------------------------------------------------------------------------------------------
# Twofish (Schneier et al., 1998), 128/192/256-bit keys, 16 rounds, little-endian words

def _gf_mul(a: int, b: int, poly: int) -> int:
    """Multiply in GF(2^8) modulo the 9-bit polynomial ``poly``."""
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        if a & 0x100:
            a ^= poly
        b >>= 1
    return r


# The 4-bit tables t0..t3 that build the fixed permutations q0 and q1 (Twofish paper §4.3.5).
_Q_NIBBLES = (
    (  # q0
        (0x8, 0x1, 0x7, 0xD, 0x6, 0xF, 0x3, 0x2, 0x0, 0xB, 0x5, 0x9, 0xE, 0xC, 0xA, 0x4),
        (0xE, 0xC, 0xB, 0x8, 0x1, 0x2, 0x3, 0x5, 0xF, 0x4, 0xA, 0x6, 0x7, 0x0, 0x9, 0xD),
        (0xB, 0xA, 0x5, 0xE, 0x6, 0xD, 0x9, 0x0, 0xC, 0x8, 0xF, 0x3, 0x2, 0x4, 0x7, 0x1),
        (0xD, 0x7, 0xF, 0x4, 0x1, 0x2, 0x6, 0xE, 0x9, 0xB, 0x3, 0x0, 0x8, 0x5, 0xC, 0xA),
    ),
    (  # q1
        (0x2, 0x8, 0xB, 0xD, 0xF, 0x7, 0x6, 0xE, 0x3, 0x1, 0x9, 0x4, 0x0, 0xA, 0xC, 0x5),
        (0x1, 0xE, 0x2, 0xB, 0x4, 0xC, 0x3, 0x7, 0x6, 0xD, 0xA, 0x5, 0xF, 0x9, 0x0, 0x8),
        (0x4, 0xC, 0x7, 0x5, 0x1, 0x6, 0x9, 0xA, 0x0, 0xE, 0xD, 0x8, 0x2, 0xB, 0x3, 0xF),
        (0xB, 0x9, 0x5, 0x1, 0xC, 0x3, 0xD, 0xE, 0x6, 0x4, 0x7, 0xF, 0x2, 0x0, 0x8, 0xA),
    ),
)


def _make_q(t: tuple) -> tuple:
    def ror4(x: int) -> int:
        return ((x >> 1) | (x << 3)) & 0xF

    out = []
    for x in range(256):
        a, b = x >> 4, x & 0xF
        a, b = a ^ b, (a ^ ror4(b) ^ (a << 3)) & 0xF
        a, b = t[0][a], t[1][b]
        a, b = a ^ b, (a ^ ror4(b) ^ (a << 3)) & 0xF
        a, b = t[2][a], t[3][b]
        out.append((b << 4) | a)
    return tuple(out)


_Q0 = _make_q(_Q_NIBBLES[0])
_Q1 = _make_q(_Q_NIBBLES[1])

# MDS matrix over GF(2^8) mod x^8+x^6+x^5+x^3+1, and the RS matrix mod x^8+x^6+x^3+x^2+1.
_MDS_POLY = 0x169
_MDS = ((0x01, 0xEF, 0x5B, 0x5B), (0x5B, 0xEF, 0xEF, 0x01),
        (0xEF, 0x5B, 0x01, 0xEF), (0xEF, 0x01, 0xEF, 0x5B))
_RS_POLY = 0x14D
_RS = ((0x01, 0xA4, 0x55, 0x87, 0x5A, 0x58, 0xDB, 0x9E),
       (0xA4, 0x56, 0x82, 0xF3, 0x1E, 0xC6, 0x68, 0xE5),
       (0x02, 0xA1, 0xFC, 0xC1, 0x47, 0xAE, 0x3D, 0x19),
       (0xA4, 0x55, 0x87, 0x5A, 0x58, 0xDB, 0x9E, 0x03))

# _MDS_COL[j][y] = column j of MDS times byte y, packed as a little-endian u32, so that
# MDS * (y0, y1, y2, y3) = _MDS_COL[0][y0] ^ ... ^ _MDS_COL[3][y3].
_MDS_COL = tuple(
    tuple(sum(_gf_mul(_MDS[i][j], y, _MDS_POLY) << (8 * i) for i in range(4)) for y in range(256))
    for j in range(4)
)

# The q-box each byte position j passes through in h(), per key-word level (Twofish paper
# §4.3.5): level i is followed by "xor byte j of L_i"; level 0 is then followed by _H_FINAL.
_H_LEVELS = (
    (_Q0, _Q0, _Q1, _Q1),  # before xor with L0
    (_Q0, _Q1, _Q0, _Q1),  # before xor with L1
    (_Q1, _Q1, _Q0, _Q0),  # before xor with L2 (192/256-bit keys)
    (_Q1, _Q0, _Q0, _Q1),  # before xor with L3 (256-bit keys)
)
_H_FINAL = (_Q1, _Q0, _Q1, _Q0)


def _h_byte(x: int, j: int, words: tuple) -> int:
    """Byte j of h()'s q/key chain (before MDS) for input byte x and key words L_0..L_{k-1}."""
    for level in range(len(words) - 1, -1, -1):
        x = _H_LEVELS[level][j][x] ^ ((words[level] >> (8 * j)) & 0xFF)
    return _H_FINAL[j][x]


def _h(x: int, words: tuple) -> int:
    return (_MDS_COL[0][_h_byte(x & 0xFF, 0, words)]
            ^ _MDS_COL[1][_h_byte((x >> 8) & 0xFF, 1, words)]
            ^ _MDS_COL[2][_h_byte((x >> 16) & 0xFF, 2, words)]
            ^ _MDS_COL[3][_h_byte(x >> 24, 3, words)])


def _rol(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & _M32


def twofish_schedule(key: bytes) -> tuple:
    """``(sboxes, subkeys)`` of Twofish for a 16, 24 or 32-byte key: the four key-dependent
    S-boxes fused with the MDS (256 u32 each: g(X) = s0[X0] ^ s1[X1] ^ s2[X2] ^ s3[X3]) and
    the 40 round subkeys (Twofish paper §4.3)."""
    if len(key) not in (16, 24, 32):
        raise ValueError("Twofish needs a 16, 24 or 32-byte key")
    k = len(key) // 8
    m = struct.unpack("<%dI" % (2 * k), key)
    even, odd = m[0::2], m[1::2]
    # S-box key words: RS times each 8-byte key chunk, used in reverse order (S_{k-1} first).
    s_words = []
    for i in range(k):
        chunk = key[8 * i:8 * i + 8]
        s_words.append(sum(
            (_reduce_xor(_gf_mul(_RS[r][c], chunk[c], _RS_POLY) for c in range(8))) << (8 * r)
            for r in range(4)))
    s_words = tuple(reversed(s_words))

    # 40 round subkeys (Twofish paper §4.3.7).
    rho = 0x01010101
    subkeys = []
    for i in range(20):
        a = _h(2 * i * rho, even)
        b = _rol(_h((2 * i + 1) * rho, odd), 8)
        subkeys.append((a + b) & _M32)
        subkeys.append(_rol((a + 2 * b) & _M32, 9))
    sboxes = tuple(tuple(_MDS_COL[j][_h_byte(x, j, s_words)] for x in range(256))
                   for j in range(4))
    return sboxes, tuple(subkeys)


def twofish_encryptor(key: bytes) -> BlockFn:
    """Block function of standard Twofish; key: 16, 24 or 32 bytes. Blocks are 128-bit ints
    read little-endian (word i = bits 32i..32i+31)."""
    (s0, s1, s2, s3), kw = twofish_schedule(key)
    w0, w1, w2, w3, w4, w5, w6, w7 = kw[:8]
    # One tuple of four subkeys per pair of rounds, so the round loop unpacks once per pair.
    rounds = tuple(tuple(kw[8 + 4 * r:12 + 4 * r]) for r in range(8))

    def encrypt_block(x: int) -> int:
        r0 = (x & _M32) ^ w0
        r1 = ((x >> 32) & _M32) ^ w1
        r2 = ((x >> 64) & _M32) ^ w2
        r3 = (x >> 96) ^ w3
        for ka, kb, kc, kd in rounds:
            # Round with (r0, r1) feeding (r2, r3); g(rol8(r1)) is indexed by rotated bytes.
            t0 = s0[r0 & 0xFF] ^ s1[(r0 >> 8) & 0xFF] ^ s2[(r0 >> 16) & 0xFF] ^ s3[r0 >> 24]
            t1 = s0[r1 >> 24] ^ s1[r1 & 0xFF] ^ s2[(r1 >> 8) & 0xFF] ^ s3[(r1 >> 16) & 0xFF]
            r2 ^= (t0 + t1 + ka) & _M32
            r2 = (r2 >> 1) | ((r2 & 1) << 31)
            r3 = (((r3 << 1) & _M32) | (r3 >> 31)) ^ ((t0 + 2 * t1 + kb) & _M32)
            # The next round, with the halves' roles swapped (no explicit swap).
            t0 = s0[r2 & 0xFF] ^ s1[(r2 >> 8) & 0xFF] ^ s2[(r2 >> 16) & 0xFF] ^ s3[r2 >> 24]
            t1 = s0[r3 >> 24] ^ s1[r3 & 0xFF] ^ s2[(r3 >> 8) & 0xFF] ^ s3[(r3 >> 16) & 0xFF]
            r0 ^= (t0 + t1 + kc) & _M32
            r0 = (r0 >> 1) | ((r0 & 1) << 31)
            r1 = (((r1 << 1) & _M32) | (r1 >> 31)) ^ ((t0 + 2 * t1 + kd) & _M32)
        # Output whitening; the final "undo swap" puts (r2, r3) first.
        return ((r2 ^ w4) | ((r3 ^ w5) << 32) | ((r0 ^ w6) << 64) | ((r1 ^ w7) << 96))

    return encrypt_block


def _reduce_xor(values) -> int:
    r = 0
    for v in values:
        r ^= v
    return r


# --------------------------------------------------------------------------------------------
# Full-block CFB over a block function (docs/protocol.md §4.2)

def cfb_encrypt(data: bytes, encrypt_block: BlockFn, block_size: int, byteorder: str,
                iv: int) -> bytes:
    """CFB encryption: C_i = P_i ^ E(C_{i-1}), C_{-1} = iv; a final partial block is truncated."""
    from_bytes = int.from_bytes
    n = len(data)
    full = n - n % block_size
    out = []
    append = out.append
    reg = iv
    for i in range(0, full, block_size):
        reg = encrypt_block(reg) ^ from_bytes(data[i:i + block_size], byteorder)
        append(reg.to_bytes(block_size, byteorder))
    if full != n:
        append(_xor_tail(data[full:], encrypt_block(reg), block_size, byteorder))
    return b"".join(out)


def cfb_decrypt(data: bytes, encrypt_block: BlockFn, block_size: int, byteorder: str,
                iv: int) -> bytes:
    """CFB decryption: P_i = C_i ^ E(C_{i-1}), C_{-1} = iv; a final partial block is truncated."""
    from_bytes = int.from_bytes
    n = len(data)
    full = n - n % block_size
    out = []
    append = out.append
    reg = iv
    for i in range(0, full, block_size):
        c = from_bytes(data[i:i + block_size], byteorder)
        append((c ^ encrypt_block(reg)).to_bytes(block_size, byteorder))
        reg = c
    if full != n:
        append(_xor_tail(data[full:], encrypt_block(reg), block_size, byteorder))
    return b"".join(out)


def _xor_tail(tail: bytes, keystream: int, block_size: int, byteorder: str) -> bytes:
    """XOR a partial block with the first len(tail) bytes of the keystream block."""
    ks = keystream.to_bytes(block_size, byteorder)
    return bytes(a ^ b for a, b in zip(tail, ks))


# --------------------------------------------------------------------------------------------
# TEA/XTEA on many 8-byte blocks at once: "lanes" (SIMD within one Python int)
#
# The blocks are read as ONE big-endian int: 64 bits per block ("lane"), block 0 on top. The
# left words of all lanes are ``(x >> 32) & mask`` and the right words ``x & mask``, where
# ``mask`` has the low 32 bits of every lane set; so every lane keeps 32 zero bits above its
# word. A round is then the same few big-int operations as for one block, with the key
# constants replicated into every lane, and no lane disturbs another: sums stay below 2^38
# in their lane, and ``w >> 5`` of a masked ``w`` moves a lane's low 5 bits into the top (the
# zero bits) of the lane below, where the carries of this round do not reach and the next
# mask clears them. A big-int operation costs about as much per 64-bit lane as per limb, so
# one datagram's ~175 blocks take one pass of ~150 (TEA) / ~450 (XTEA) operations.

LaneFn = Callable[[int, int], int]
#: Most lanes per int a caller passes (``LANE_CHUNK`` blocks of 8 bytes): costs are linear in
#: the size, and the bound keeps each key's replicated constants small.
LANE_CHUNK = 256
_LANE_BUCKET = 16           # replicated constants exist for multiples of this many lanes
_LANE_ONE = b"\0\0\0\0\0\0\0\1"


def lane_encryptor(constants: tuple, rounds: Callable) -> LaneFn:
    """``encrypt_lanes(x, n)``: the n blocks of the big-endian int ``x`` encrypted, as such an
    int; ``rounds(left, right, mask, replicated constants)`` is the cipher on lanes."""
    cache: dict = {}

    def encrypt_lanes(x: int, n: int) -> int:
        size = -(-n // _LANE_BUCKET) * _LANE_BUCKET
        c = cache.get(size)
        if c is None:
            one = int.from_bytes(_LANE_ONE * size, "big")
            c = cache[size] = (one * _M32, tuple(v * one for v in constants))
        mask, reps = c
        v0, v1 = rounds((x >> 32) & mask, x & mask, mask, reps)
        x = (v0 << 32) | v1
        # The lanes above n (zero in, garbage out) are dropped.
        return x if size == n else x & ((1 << (64 * n)) - 1)

    return encrypt_lanes


def cfb_decrypt_lanes(datagrams: list, encrypt_lanes: LaneFn, iv: bytes) -> list:
    """:func:`cfb_decrypt` of every datagram (8-byte blocks, big-endian), all blocks at once:
    the keystream block i is E(C_{i-1}), so the registers of the whole batch are known."""
    regs = []
    for d in datagrams:
        if d:
            regs += (iv, d[:(len(d) - 1) & ~7])     # IV, then every block but the last
    reg = b"".join(regs)
    step = 8 * LANE_CHUNK
    ks = b"".join([encrypt_lanes(int.from_bytes(reg[i:i + step], "big"),
                                 len(reg[i:i + step]) >> 3).to_bytes(len(reg[i:i + step]), "big")
                   for i in range(0, len(reg), step)])
    out = []
    pos = 0
    for d in datagrams:
        n = len(d)
        out.append((int.from_bytes(d, "big") ^ int.from_bytes(ks[pos:pos + n], "big"))
                   .to_bytes(n, "big"))
        pos += (n + 7) & ~7
    return out


def cfb_encrypt_lanes(datagrams: list, encrypt_lanes: LaneFn, iv: bytes) -> list:
    """:func:`cfb_encrypt` of every datagram (8-byte blocks, big-endian), one lane per
    datagram: step i encrypts block i of all of them (CFB encryption is sequential within a
    datagram). Datagrams are zero-padded to the longest; the padding's output is dropped."""
    out: list = []
    for first in range(0, len(datagrams), LANE_CHUNK):
        group = datagrams[first:first + LANE_CHUNK]
        n = len(group)
        blocks = (max(len(d) for d in group) + 7) >> 3
        stride = 8 * blocks
        src = memoryview(b"".join([bytes(d).ljust(stride, b"\0") for d in group])).cast("Q")
        buf = bytearray(stride * n)
        dst = memoryview(buf).cast("Q")
        reg = int.from_bytes(iv * n, "big")
        for i in range(blocks):
            reg = encrypt_lanes(reg, n) ^ int.from_bytes(src[i::blocks], "big")
            dst[i::blocks] = memoryview(reg.to_bytes(8 * n, "big")).cast("Q")
        out += [bytes(buf[j * stride:j * stride + len(d)]) for j, d in enumerate(group)]
    return out
