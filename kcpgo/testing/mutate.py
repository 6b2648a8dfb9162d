"""Hostile datagrams for fuzzing a kcp-go receive path: :class:`Mutator`.

Mutations of captured kcp-go datagrams (a :class:`Corpus`, e.g. kcpgo's
``tests/vectors/packets.json`` via :func:`load_corpus`): bit flips, byte overwrites,
truncations, extensions, huge KCP length fields, bad cmd/frg/wnd/una/sn, wrong or the target's
conv, bad FEC types, seqids and size fields, spliced datagrams, plus pure random datagrams of
0..1500 bytes. Against a target with a cipher, a mutated plaintext is either re-sealed with the
target's key (a valid CRC, so it reaches FEC and KCP: "authenticated garbage") or the
ciphertext itself is mutated ("garbage", which the CRC must reject). Seeded: the same seed and
corpus give the same datagrams. Pure code: no I/O but reading the corpus file.
"""
from __future__ import annotations

import functools
import json
import random
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..sansio.fec import FEC_HEADER_SIZE, FEC_HEADER_SIZE_PLUS2, TYPE_DATA, TYPE_PARITY
from ..sansio.wire import HEADER, OVERHEAD, SN_OFFSET, Segment

__all__ = ["Corpus", "Mutator", "load_corpus"]


def _field_offsets() -> Dict[str, int]:
    """Offset of each KCP header field, read off the one header definition (wire.HEADER)."""
    names = Segment._fields[:-1] + ("len",)          # conv cmd frg wnd ts sn una, then len
    offsets, off = {}, 0
    for name, code in zip(names, HEADER.format.lstrip("<")):
        offsets[name] = off
        off += struct.calcsize("<" + code)
    assert off == OVERHEAD and offsets["sn"] == SN_OFFSET
    return offsets


_OFF = _field_offsets()
_CONV, _CMD, _FRG, _WND, _TS, _SN, _UNA, _LEN = (_OFF[n] for n in (
    "conv", "cmd", "frg", "wnd", "ts", "sn", "una", "len"))
#: FEC header (§2.1): seqid u32 | type u16 | size u16 (data shards only).
_FEC_SEQID, _FEC_TYPE, _FEC_SIZE = 0, FEC_HEADER_SIZE - 2, FEC_HEADER_SIZE
_INTERESTING_U32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 24, 1376, 1500, 65535)
_INTERESTING_U16 = (0, 1, 0xF0, TYPE_DATA, TYPE_PARITY, 0xF3, 0x7FFF, 0xFFFF)


@dataclass
class Corpus:
    """Captured datagrams to mutate: ``plain``, each KCP datagram (FEC framing included) after
    the crypto header, with whether it is FEC framed; ``wires``, whole datagrams as sent."""

    plain: List[Tuple[bytes, bool]]
    wires: List[bytes]


@functools.lru_cache(maxsize=8)
def load_corpus(path: str) -> Corpus:
    """Every datagram of a capture file in the format of kcpgo's ``tests/vectors/packets.json``
    (``{"captures": [{"data_shards": n, "datagrams": [{"wire": hex, "crypt":
    {"decrypted": hex}?}]}]}``). Cached per path."""
    with open(path) as f:
        caps = json.load(f)["captures"]
    plain, wires = [], []
    for cap in caps:
        fec = bool(cap["data_shards"])
        for d in cap["datagrams"]:
            wires.append(bytes.fromhex(d["wire"]))
            if d.get("crypt"):
                plain.append((bytes.fromhex(d["crypt"]["decrypted"])[20:], fec))
            else:
                plain.append((bytes.fromhex(d["wire"]), fec))
    return Corpus(plain, wires)


class Mutator:
    """Seeded generator of hostile datagrams from ``corpus`` for a target with ``crypt`` (a
    :class:`kcpgo.codec.crypt.BlockCrypt`, or none).

    ``conv`` (optional): the target session's conv, used by a share of the mutations so they
    get past KCP's conv check. ``sealed_share``: with a cipher, the share of datagrams sealed
    with it (the rest is mutated ciphertext). Each call of :meth:`next` returns ``(datagram,
    kind)`` where kind is ``"sealed"`` (valid crypto framing around garbage), ``"garbage"``
    (must fail the crypto check) or ``"plain"`` (no cipher on the target); ``counts`` counts
    the kinds.
    """

    def __init__(self, seed: int, crypt: Optional[Any] = None,
                 conv: Optional[int] = None, sealed_share: float = 0.5, *,
                 corpus: Corpus) -> None:
        self.rng = random.Random(seed)
        self.crypt = crypt
        self.conv = conv
        self.sealed_share = sealed_share
        self.plain = corpus.plain
        self.wires = corpus.wires
        self.counts: Dict[str, int] = {}

    # ---------------------------------------------------------------- field mutations

    def _kcp_off(self, p: bytearray, fec: bool) -> int:
        return FEC_HEADER_SIZE_PLUS2 if fec and len(p) >= FEC_HEADER_SIZE_PLUS2 and \
            p[_FEC_TYPE] == TYPE_DATA else 0

    def _put32(self, p: bytearray, off: int, value: int) -> None:
        if off + 4 <= len(p):
            struct.pack_into("<I", p, off, value & 0xFFFFFFFF)

    def _put16(self, p: bytearray, off: int, value: int) -> None:
        if off + 2 <= len(p):
            struct.pack_into("<H", p, off, value & 0xFFFF)

    def _u32(self) -> int:
        r = self.rng
        return r.choice(_INTERESTING_U32) if r.random() < 0.5 else r.getrandbits(32)

    def _u16(self) -> int:
        r = self.rng
        return r.choice(_INTERESTING_U16) if r.random() < 0.5 else r.getrandbits(16)

    def _segment_offsets(self, p: bytearray, base: int) -> List[int]:
        offs = []
        off = base
        while off + OVERHEAD <= len(p) and len(offs) < 8:
            offs.append(off)
            ln = struct.unpack_from("<I", p, off + _LEN)[0]
            off += OVERHEAD + ln
        return offs or [base]

    def mutate(self, p: bytearray, fec: bool) -> str:
        r = self.rng
        op = r.randrange(16)
        base = self._kcp_off(p, fec)
        seg = r.choice(self._segment_offsets(p, base))
        if op == 0:                                 # bit flips
            for _ in range(r.randint(1, 8)):
                if p:
                    i = r.randrange(len(p))
                    p[i] ^= 1 << r.randrange(8)
            return "bitflip"
        if op == 1:                                 # random bytes
            for _ in range(r.randint(1, 4)):
                if p:
                    p[r.randrange(len(p))] = r.getrandbits(8)
            return "byteset"
        if op == 2:                                 # truncation
            del p[r.randrange(len(p) + 1):]
            return "truncate"
        if op == 3:                                 # extension
            p.extend(r.randbytes(r.randint(1, max(1, 1500 - len(p)))))
            return "extend"
        if op == 4:                                 # huge or off-by-one length field
            v = r.choice((0xFFFFFFFF, 0x7FFFFFFF, len(p), len(p) - seg - 23, r.getrandbits(32)))
            self._put32(p, seg + _LEN, v)
            return "len"
        if op == 5:
            if seg + _CMD < len(p):
                p[seg + _CMD] = r.choice((0, 80, 85, 0xF1, 0xF2, 0xFF, r.getrandbits(8)))
            return "cmd"
        if op == 6:
            if seg + _FRG < len(p):
                p[seg + _FRG] = r.getrandbits(8)
            return "frg"
        if op == 7:
            self._put16(p, seg + _WND, self._u16())
            return "wnd"
        if op == 8:
            self._put32(p, seg + _CONV, self.conv if self.conv is not None and
                        r.random() < 0.7 else self._u32())
            return "conv"
        if op == 9:
            self._put32(p, seg + r.choice((_SN, _UNA, _TS)), self._u32())
            return "sn_una_ts"
        if op == 10:                                # FEC type
            self._put16(p, _FEC_TYPE, r.choice((TYPE_DATA, TYPE_PARITY, 0xF3, self._u16())))
            return "fec_type"
        if op == 11:                                # FEC seqid
            self._put32(p, _FEC_SEQID, self._u32())
            return "fec_seqid"
        if op == 12:                                # FEC size field
            self._put16(p, _FEC_SIZE, self._u16())
            return "fec_size"
        if op == 13:                                # splice two captured datagrams
            other = r.choice(self.plain)[0]
            cut = r.randrange(len(p) + 1)
            p[cut:] = other[r.randrange(len(other) + 1):]
            return "splice"
        if op == 14:                                # duplicate the segments
            p.extend(p[base:])
            return "repeat"
        # op 15: zero-length-data segment with a bogus cmd after a valid one
        p.extend(HEADER.pack(self.conv if self.conv is not None else r.getrandbits(32),
                             r.getrandbits(8), r.getrandbits(8), 0, 0, 0, 0,
                             r.choice((0, 1, 0xFFFFFFFF))))
        return "append_seg"

    # ---------------------------------------------------------------- datagrams

    def next(self) -> Tuple[bytes, str]:
        r = self.rng
        crypt = self.crypt
        x = r.random()
        if x < 0.08:                                # pure random, any length (0 included)
            n = r.choice((0, 1, 7, 8, 19, 20, 23, 24, 25, 43, 44, r.randrange(1501)))
            kind = "random"
            d = r.randbytes(n)
            if crypt is not None and r.random() < self.sealed_share:
                d, kind = crypt.seal(d), "sealed"
            return self._count(d, kind if crypt is not None or kind == "sealed" else "plain")
        if crypt is not None and x < 0.08 + (1 - self.sealed_share) * 0.92:
            # garbage ciphertext: a mutated captured wire datagram (any cipher, any key)
            orig = r.choice(self.wires)
            p = bytearray(orig)
            for _ in range(r.randint(1, 3)):
                self.mutate(p, False)
            if p == orig and p:
                p[r.randrange(len(p))] ^= 1 << r.randrange(8)   # a replay is not garbage
            return self._count(bytes(p[:1500]), "garbage")
        plain, fec = r.choice(self.plain)
        p = bytearray(plain)
        if self.conv is not None and r.random() < 0.5:
            base = self._kcp_off(p, fec)
            for off in self._segment_offsets(p, base):
                self._put32(p, off, self.conv)
        for _ in range(r.randint(1, 3)):
            self.mutate(p, fec)
        d = bytes(p[:1500 - (crypt.overhead if crypt is not None else 0)])
        if crypt is not None:
            return self._count(crypt.seal(d), "sealed")
        return self._count(d, "plain")

    def _count(self, d: bytes, kind: str) -> Tuple[bytes, str]:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return d, kind
