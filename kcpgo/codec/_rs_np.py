"""Reed-Solomon parity on numpy arrays (the ``fast`` extra), same bytes as
:meth:`kcpgo.codec.reedsolomon.ReedSolomon.encode_ints` (docs/protocol.md §3).

Parity row j is the XOR over data shards i of ``c[j][i] * shard_i`` in GF(2^8). Each data shard
gets a 256-entry table whose entry for a byte x packs the products of x with all m coefficients
of that shard (byte j of the entry for parity row j). One ``take`` over every byte of every
shard and one XOR reduction then give all m parity rows at once. For 10/3 and 1,378-byte
shards streaming through (260 distinct groups): 38-60 µs per group against 72-126 µs for the
pure-Python int path, whose per-byte work is 30 ``translate`` + ``int.from_bytes`` per group
(``tools/bench_rs.py --compare``, 2-core machine, numpy 2.4; the ranges are this machine's
noise, the two paths alternating).

Measured and rejected: tables indexed by two-byte words (half the gathers, 512 KiB per shard):
slower with data streaming through, 63-91 µs per group, as every lookup misses the L2 cache.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

#: A table entry holds the m products in one unsigned int of at most 8 bytes.
_MAX_PARITY = 8


class NumpyParity:
    """Parity encoder for one (k, m) parity matrix; tables are built on the first call."""

    __slots__ = ("k", "m", "_rows", "_table", "_offsets", "_entry")

    def __init__(self, parity_matrix: Sequence[Sequence[int]], mul_tables: Sequence[bytes]) -> None:
        m = len(parity_matrix)
        k = len(parity_matrix[0])
        if m > _MAX_PARITY:
            raise ValueError(f"{m} parity shards: at most {_MAX_PARITY} fit a table entry")
        self.k = k
        self.m = m
        # per row j, per shard i: the 256-entry product table of c[j][i]
        self._rows = [[mul_tables[c] for c in row] for row in parity_matrix]
        self._table: Optional[np.ndarray] = None
        self._offsets: Optional[np.ndarray] = None
        #: table entry size in bytes: the smallest unsigned int that holds m products
        self._entry = next(n for n in (1, 2, 4, 8) if n >= m)

    def _build(self) -> None:
        """Build the tables. A codec is shared by every session of the process, so another
        thread may make its first call meanwhile: it sees ``_table`` only once ``_offsets``
        is there too (at worst it builds the same tables again)."""
        k = self.k
        dtype = np.dtype(f"<u{self._entry}")
        table = np.zeros((k, 256), dtype=dtype)
        for j, row in enumerate(self._rows):
            for i in range(k):
                products = np.frombuffer(row[i], dtype=np.uint8).astype(dtype)
                table[i] |= products << dtype.type(8 * j)
        # u16 indices (k <= 255): 20 % faster than intp ones, and within the table by
        # construction, so ``take`` need not check them (mode="clip")
        self._offsets = (np.arange(k, dtype=np.uint16) * 256)[:, None]
        self._table = table.reshape(-1)

    def encode(self, packets: Sequence[bytes], offset: int, size: int) -> List[bytes]:
        """The m parity shards (``size`` bytes each) of the k shards ``packet[offset:]``, each
        zero-padded to ``size`` (no packet may be longer than ``offset + size``)."""
        return self.encode_many([packets], offset, [size])[0]

    def encode_many(self, groups: Sequence[Sequence[bytes]], offset: int,
                    sizes: Sequence[int]) -> List[List[bytes]]:
        """:meth:`encode` for several groups (a flush's) in one pass: numpy's fixed cost per
        call is paid once. Every group is padded to the largest size and its parity cut back
        to its own (zero padding adds zeros to parity, nothing else)."""
        if self._table is None:
            self._build()
        width = max(sizes)
        packets = [p for group in groups for p in group]
        if all(len(p) == offset + width for p in packets):
            # the common case (full-size segments): one join, the headers sliced off in numpy
            data = np.frombuffer(b"".join(packets), dtype=np.uint8)
            data = data.reshape(len(groups), self.k, offset + width)[:, :, offset:]
        else:
            joined = b"".join([p[offset:].ljust(width, b"\0") for p in packets])
            data = np.frombuffer(joined, dtype=np.uint8).reshape(len(groups), self.k, width)
        products = self._table.take(np.add(data, self._offsets, dtype=np.uint16), mode="clip")
        acc = np.bitwise_xor.reduce(products, axis=1).view(np.uint8)
        # rows in wire order (group, parity row, byte) in one copy, then cut as bytes: cheaper
        # than a strided tobytes() per row
        rows = acc.reshape(len(groups), width, self._entry).transpose(0, 2, 1).tobytes()
        entry, m = self._entry, self.m
        return [[rows[(g * entry + j) * width:(g * entry + j) * width + size] for j in range(m)]
                for g, size in enumerate(sizes)]
