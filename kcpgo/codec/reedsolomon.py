"""Reed-Solomon erasure code, byte-identical to klauspost/reedsolomon ``New(k, m)`` (docs/protocol.md §3).

GF(2^8) with polynomial 0x11D and generator 2 (§3.1); systematic Vandermonde encoding matrix
``V * inverse(top k x k of V)`` with ``V[r][c] = r^c`` (§3.2). This is *not* the zfec / reedsolo
construction, so neither library can be used.

Speed notes (CPython 3.11, the 2-core CI-class machine, 10+3 shards of 1400 bytes; figures from
``tools/bench_rs.py``):

* A whole shard is multiplied by a constant with ``bytes.translate`` and one of 256 precomputed
  256-byte tables (~0.84 µs per 1400 B), then turned into a Python int (``int.from_bytes``,
  ~0.82 µs) so that shards can be XORed as big integers (~0.29 µs). Those conversions are the
  whole cost: encode 10/3 = 30 of them, ~56 µs, plus 3 ``to_bytes``: 58-60 µs per call, i.e.
  ~235-240 MB/s of data (target >= 200 MB/s). Reconstruct costs k terms per missing data shard
  (22 / 41 / 62 µs for 1 / 2 / 3 missing).
  Measured and rejected: bit-plane multiplication on ints (8 shifts/masks per shard: ~3x slower),
  folding one concatenated int per parity row (the shifts cost more than the XORs they save),
  ``int(hex, 16)`` instead of ``from_bytes`` (4.7x slower), a syndrome-based reconstruct (same
  number of terms), ``map``/``reduce`` instead of the Python loop (no measurable difference).
* Little-endian ints make zero-padding free: a shorter shard is the same integer as its
  zero-padded form. The FEC layer relies on this (``encode_ints`` / ``reconstruct_ints`` accept
  unequal lengths) and never materialises padded copies.
* Coefficient 1 skips the translate; coefficient 0 skips the term.
* With numpy installed (the ``fast`` extra), :meth:`ReedSolomon.encode_parity` (the FEC
  layer's call) uses :mod:`._rs_np` instead: one table lookup per data byte gives all parity
  rows' products (about half the time of this int path for 10/3; ``encode_ints`` and
  reconstruction stay on ints, reconstruction only runs on loss).
* The inverted decode matrix is cached per erasure pattern (bounded cache); matrix inversion
  works on whole rows as bytes (see ``_mat_inv``).
"""
from __future__ import annotations

import functools
from typing import Dict, List, Optional, Sequence, Tuple

try:  # numpy is an optional extra (``pip install kcpgo[fast]``): parity in one gather
    from . import _rs_np
except ImportError:  # pragma: no cover - depends on the environment
    _rs_np = None  # type: ignore[assignment]

#: Whether new codecs encode parity with numpy (tests set it to False for the int path).
USE_NUMPY = _rs_np is not None

__all__ = ["ReedSolomon", "shared_codec", "gf_mul", "gf_exp", "gf_inv", "mul_tables"]

#: §3.1: reducing polynomial x^8 + x^4 + x^3 + x^2 + 1 (klauspost ``generatingPolynomial = 29``).
GF_POLY = 0x11D
#: §3: klauspost 1.9.13 refuses more than 256 shards in total (ErrMaxShardNum).
MAX_TOTAL_SHARDS = 256
#: Bound on the decode-plan cache, counted in (shard, coefficient) terms: 10/3 needs at most
#: 377 patterns x <= 30 terms; large codecs under hostile erasure patterns must not grow memory.
_DECODE_CACHE_TERMS = 1 << 16


def _build_tables() -> Tuple[List[int], List[int]]:
    exp = [0] * 510  # doubled so exp[log a + log b] needs no "% 255"
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= GF_POLY
    for i in range(255, 510):
        exp[i] = exp[i - 255]
    return exp, log


_EXP, _LOG = _build_tables()


def gf_mul(a: int, b: int) -> int:
    """Product of two field elements."""
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def gf_inv(a: int) -> int:
    """Multiplicative inverse of a non-zero field element."""
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return _EXP[255 - _LOG[a]]


def gf_exp(a: int, n: int) -> int:
    """``a`` to the power ``n``, with klauspost's convention 0^0 = 1 (§3.1)."""
    if n == 0:
        return 1
    if a == 0:
        return 0
    return _EXP[(_LOG[a] * n) % 255]


_MUL_TABLES: List[bytes] = []


def mul_tables() -> List[bytes]:
    """``MUL_TABLES[c]`` maps every byte x to gf_mul(c, x): ``shard.translate(tables[c])``.
    Built on first use (64 KiB; a codec needs them only while it is being set up)."""
    if not _MUL_TABLES:
        _MUL_TABLES.extend([bytes(256)] + [
            bytes([0] + [_EXP[lc + _LOG[x]] for x in range(1, 256)])
            for lc in (_LOG[c] for c in range(1, 256))])
    return _MUL_TABLES


def __getattr__(name: str) -> List[bytes]:
    if name == "MUL_TABLES":
        return mul_tables()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")


def _mat_inv(square: List[List[int]]) -> List[bytes]:
    """Gauss-Jordan inverse over GF(2^8); rows returned as bytes. ValueError if singular.

    Rows are kept as bytes so that "row ^= f * pivot_row" is one translate and one int XOR:
    O(k^2) Python operations instead of O(k^3) (10x10: ~50 µs; 200x200: ~60 ms instead of
    seconds), which matters because autotune may build large codecs at run time."""
    size = len(square)
    mul = mul_tables()
    # [square | identity]
    work = [bytes(row) + bytes(i) + b"\x01" + bytes(size - i - 1) for i, row in enumerate(square)]
    for col in range(size):
        pivot = next((r for r in range(col, size) if work[r][col]), None)
        if pivot is None:
            raise ValueError("matrix is singular")
        work[col], work[pivot] = work[pivot], work[col]
        prow = work[col]
        if prow[col] != 1:
            prow = work[col] = prow.translate(mul[gf_inv(prow[col])])
        for r in range(size):
            factor = work[r][col]
            if factor and r != col:
                work[r] = _xor(work[r], prow.translate(mul[factor]))
    return [row[size:] for row in work]


def _encoding_matrix(k: int, m: int) -> List[List[int]]:
    """§3.2: V * inverse(top k x k of V) with V[r][c] = r^c; the top k rows come out as I."""
    inv_top = _mat_inv([[gf_exp(r, c) for c in range(k)] for r in range(k)])
    mul = mul_tables()
    matrix = [[1 if r == c else 0 for c in range(k)] for r in range(k)]
    for r in range(k, k + m):
        acc = 0
        for t in range(k):
            coef = gf_exp(r, t)
            if coef:
                acc ^= int.from_bytes(inv_top[t].translate(mul[coef]), "little")
        matrix.append(list(acc.to_bytes(k, "little")))
    return matrix


def _term(coef: int):
    """How to multiply a shard by ``coef``: None = term vanishes, b"" = identity, else a table."""
    if coef == 0:
        return None
    if coef == 1:
        return b""
    return mul_tables()[coef]


class ReedSolomon:
    """klauspost/reedsolomon default codec for ``data_shards`` + ``parity_shards`` shards."""

    def __init__(self, data_shards: int, parity_shards: int) -> None:
        if (not isinstance(data_shards, int) or not isinstance(parity_shards, int)
                or data_shards < 1 or parity_shards < 1
                or data_shards + parity_shards > MAX_TOTAL_SHARDS):
            raise ValueError(f"invalid shard configuration ({data_shards}, {parity_shards})")
        k, m = data_shards, parity_shards
        self.data_shards: int = k
        self.parity_shards: int = m
        self.total_shards: int = k + m
        matrix = _encoding_matrix(k, m)
        #: Full (k+m) x k encoding matrix; the top k rows are the identity.
        self.matrix: List[List[int]] = matrix
        self.parity_matrix: List[List[int]] = [list(row) for row in matrix[k:]]
        # Encode plan, per data shard: [(parity index, table or b"")] for its non-zero coefficients.
        self._enc_plan: List[List[Tuple[int, bytes]]] = [
            [(j, _term(row[i])) for j, row in enumerate(self.parity_matrix) if row[i]]
            for i in range(k)
        ]
        self._decode_cache: Dict[Tuple[int, ...], List[Tuple[int, list]]] = {}
        self._decode_cache_terms = 0
        self._np_parity = None
        if USE_NUMPY and m <= _rs_np._MAX_PARITY:
            self._np_parity = _rs_np.NumpyParity(self.parity_matrix, mul_tables())

    # ------------------------------------------------------------------ int-level core
    def encode_ints(self, data: Sequence[bytes]) -> List[int]:
        """Parity shards as little-endian ints. ``data`` = k bytes objects of ANY lengths:
        each is taken as zero-padded to the longest, so callers need not pad."""
        acc = [0] * self.parity_shards
        from_bytes = int.from_bytes
        for d, plan in zip(data, self._enc_plan):
            plain = None
            for j, table in plan:
                if table:
                    acc[j] ^= from_bytes(d.translate(table), "little")
                else:  # coefficient 1: the shard itself
                    if plain is None:
                        plain = from_bytes(d, "little")
                    acc[j] ^= plain
        return acc

    def encode_parity(self, packets: Sequence[bytes], offset: int, size: int) -> List[bytes]:
        """The m parity shards, ``size`` bytes each, of the k data shards ``packet[offset:]``
        (each taken as zero-padded to ``size``; none may be longer). The FEC layer's call: it
        passes whole packets, so no shard is sliced out. Uses numpy when installed
        (:mod:`._rs_np`), else :meth:`encode_ints`."""
        if len(packets) != self.data_shards:
            raise ValueError(f"expected {self.data_shards} data shards, got {len(packets)}")
        if self._np_parity is not None:
            return self._np_parity.encode(packets, offset, size)
        return [v.to_bytes(size, "little")
                for v in self.encode_ints([p[offset:] for p in packets])]

    def encode_parity_many(self, groups: Sequence[Sequence[bytes]], offset: int,
                           sizes: Sequence[int]) -> List[List[bytes]]:
        """:meth:`encode_parity` for several groups (``sizes[g]`` bytes of parity for group g):
        one numpy pass for all of them when numpy is installed."""
        if any(len(group) != self.data_shards for group in groups):
            raise ValueError(f"expected {self.data_shards} data shards per group")
        if not groups:
            return []
        if self._np_parity is not None:
            return self._np_parity.encode_many(groups, offset, sizes)
        return [self.encode_parity(group, offset, size) for group, size in zip(groups, sizes)]

    def _decode_plan(self, valid: Tuple[int, ...], missing: Tuple[int, ...]) -> list:
        key = valid + (-1,) + missing
        plan = self._decode_cache.get(key)
        if plan is None:
            inv = _mat_inv([self.matrix[r] for r in valid])
            plan = [(i, [(t, _term(coef)) for t, coef in enumerate(inv[i]) if coef])
                    for i in missing]
            terms = sum(len(row) for _, row in plan)
            if self._decode_cache_terms + terms > _DECODE_CACHE_TERMS:
                self._decode_cache.clear()  # crude but bounded; patterns repeat in practice
                self._decode_cache_terms = 0
            self._decode_cache[key] = plan
            self._decode_cache_terms += terms
        return plan

    def reconstruct_ints(self, shards: Sequence[Optional[bytes]]) -> List[Tuple[int, int]]:
        """Rebuild the missing data shards as (index, little-endian int) pairs.

        ``shards`` has k+m slots, None or b"" = missing; present shards may differ in length
        (implicitly zero-padded, as kcp-go pads to the longest). Like klauspost
        ``ReconstructData``, the first k present shards in index order are used and missing parity
        is not rebuilt. ValueError when fewer than k shards are present.
        """
        k = self.data_shards
        valid = []
        missing = []
        for idx, s in enumerate(shards):
            if s:
                if len(valid) < k:
                    valid.append(idx)
            elif idx < k:
                missing.append(idx)
        if not missing:
            return []
        if len(valid) < k:
            raise ValueError("too few shards to reconstruct")
        valid_t = tuple(valid)
        plan = self._decode_plan(valid_t, tuple(missing))
        from_bytes = int.from_bytes
        sub = [shards[r] for r in valid_t]
        plain: Dict[int, int] = {}
        out = []
        for i, terms in plan:
            acc = 0
            for t, table in terms:
                if table:
                    acc ^= from_bytes(sub[t].translate(table), "little")
                else:
                    v = plain.get(t)
                    if v is None:
                        v = plain[t] = from_bytes(sub[t], "little")
                    acc ^= v
            out.append((i, acc))
        return out

    # ------------------------------------------------------------------ public API
    def encode(self, data: List[bytes]) -> List[bytes]:
        """Return the m parity shards of k equal-length data shards (klauspost ``Encode``)."""
        if len(data) != self.data_shards:
            raise ValueError(f"expected {self.data_shards} data shards, got {len(data)}")
        data = [d if type(d) is bytes else bytes(d) for d in data]
        size = len(data[0])
        if any(len(d) != size for d in data):
            raise ValueError("data shards differ in length")
        return self.encode_parity(data, 0, size)

    def reconstruct(self, shards: List[Optional[bytes]]) -> List[bytes]:
        """Return the k data shards, rebuilding missing ones (klauspost ``ReconstructData``).

        ``shards`` has k+m slots; None (or b"") marks a missing shard. Present shards are
        returned as given. ValueError on a wrong slot count, unequal lengths or fewer than k
        present shards.
        """
        if len(shards) != self.total_shards:
            raise ValueError(f"expected {self.total_shards} shard slots, got {len(shards)}")
        shards = [s if (not s or type(s) is bytes) else bytes(s) for s in shards]
        sizes = {len(s) for s in shards if s}
        if len(sizes) > 1:
            raise ValueError("shards differ in length")
        out = list(shards[: self.data_shards])
        if sizes:
            size = sizes.pop()
            for i, value in self.reconstruct_ints(shards):
                out[i] = value.to_bytes(size, "little")
        else:
            raise ValueError("too few shards to reconstruct")
        return out


@functools.lru_cache(maxsize=32)
def shared_codec(data_shards: int, parity_shards: int) -> ReedSolomon:
    """One codec per (k, m) for the whole process (codecs are stateless apart from caches), so
    thousands of sessions do not each build the same matrix. ValueError as ReedSolomon()."""
    return ReedSolomon(data_shards, parity_shards)
