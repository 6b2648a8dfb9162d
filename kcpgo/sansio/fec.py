"""kcp-go's FEC framing: encoder, 5.6.1 decoder and autotune (docs/protocol.md §2.2(c), 2.4, 2.6.1, 2.7).

Sans-IO: packets in, packets out, the caller passes the ms clock. Packets here start at the FEC
header (seqid); the crypto header (nonce + CRC) is the caller's business.

Data packet:   seqid u32 LE | F1 00 | size u16 LE (= 2 + len(kcp)) | kcp datagram
Parity packet: seqid u32 LE | F2 00 | RS parity of the group's [size | kcp] shards, zero-padded
               to the longest data packet of the group (so a parity packet is exactly that long).
OOB packet:    FF FF FF FF | F3 00 | size u16 LE (= 2 + 4 + n) | conv u32 LE | payload n
               ([latest] §2.2(e): takes no seqid, no parity; :func:`encode_oob`, :func:`parse_oob`)
"""
from __future__ import annotations

import struct
from typing import Dict, List, Optional, Sequence, Tuple

from ..codec.reedsolomon import ReedSolomon, shared_codec
from ..snmp import DEFAULT_SNMP, Snmp

__all__ = [
    "FEC_HEADER_SIZE", "FEC_HEADER_SIZE_PLUS2", "TYPE_DATA", "TYPE_PARITY",
    "FEC_EXPIRE", "PARITY_SKIP_GAP", "RX_FEC_MULTI", "FINISHED_MEMORY", "AUTOTUNE_SAMPLES",
    "FECEncoder", "FECDecoder", "parse_header",
    "TYPE_OOB", "OOB_HEADER_SIZE", "encode_oob", "parse_oob", "is_oob",
]

# §2.1 constants
FEC_HEADER_SIZE = 6          # seqid u32 + type u16
FEC_HEADER_SIZE_PLUS2 = 8    # plus the u16 size field of data shards
TYPE_DATA = 0xF1
TYPE_PARITY = 0xF2
#: [latest] §2.2(e): an out-of-band packet, seqid 0xFFFFFFFF, then the size, conv, payload.
TYPE_OOB = 0xF3
OOB_HEADER_SIZE = FEC_HEADER_SIZE_PLUS2 + 4      # ... and the conv: the payload starts here
FEC_EXPIRE = 60000           # ms, [5.6.1] decoder entry lifetime
#: [latest] §2.5: a group whose last data shard follows the previous data shard by at least
#: this many ms gets no parity (kcp-go's maxFECEncodeLatency; D52).
PARITY_SKIP_GAP = 500
RX_FEC_MULTI = 3             # [5.6.1] decoder keeps at most 3 * (k + m) packets
#: Finished groups whose late parity the decoder drops (FECDecoder): more than a batch of
#: datagrams holds (256, about 20 groups of 10 + 3), whose parity a driver may feed last.
FINISHED_MEMORY = 64
# §2.7: autotune sample buffer size, indexed by seqid % 258 in 5.6.1
AUTOTUNE_SAMPLES = 258
# §2.7 [5.6.1]: each autotuned period must be below this
_MAX_PERIOD = 256

_U32 = 0xFFFFFFFF
_HALF = 0x80000000
_DATA_HDR = struct.Struct("<IHH")   # seqid, type, size
_FEC_HDR = struct.Struct("<IH")     # seqid, type
_unpack_fec_hdr = _FEC_HDR.unpack_from
_OOB_HDR = struct.Struct("<IHHI")   # seqid, type, size, conv
_u32 = struct.Struct("<I").unpack_from


def parse_header(packet: bytes) -> Tuple[int, int, Optional[int]]:
    """(seqid, type, size) of a FEC packet; size is None for anything but a data packet.
    The packet must hold at least 6 bytes (8 for a data packet)."""
    seqid, flag = _FEC_HDR.unpack_from(packet)
    size = None
    if flag == TYPE_DATA:
        size = packet[6] | packet[7] << 8
    return seqid, flag, size


def is_oob(packet: bytes) -> bool:
    """Whether an opened datagram is an OOB packet: type F3 at offset 4 and room for the conv
    (§2.2(e); a KCP segment there has cmd 81..84, so the test cannot misfire)."""
    return len(packet) >= OOB_HEADER_SIZE and packet[4] == TYPE_OOB and packet[5] == 0


def encode_oob(conv: int, payload: bytes) -> bytes:
    """The plaintext of an OOB packet for ``conv`` (§2.2(e); the caller seals it)."""
    return _OOB_HDR.pack(_U32, TYPE_OOB, 6 + len(payload), conv) + payload


def parse_oob(packet: bytes) -> Tuple[int, bytes]:
    """``(conv, payload)`` of an OOB packet (:func:`is_oob` true). The payload is everything
    after the conv, as kcp-go latest hands it to its handler (it does not read the size)."""
    return _u32(packet, FEC_HEADER_SIZE_PLUS2)[0], packet[OOB_HEADER_SIZE:]


def _paws(n: int) -> int:
    """Seqid wrap point: the largest multiple of n not above 0xFFFFFFFF (§2.4)."""
    return (_U32 // n) * n


class FECEncoder:
    """Adds FEC headers to outgoing KCP datagrams and emits parity after every k of them (§2.4)."""

    __slots__ = ("data_shards", "parity_shards", "shard_size", "paws", "next_seqid",
                 "parity_skip_gap", "_codec", "_group", "_maxlen", "_last_ms")

    def __init__(self, data_shards: int, parity_shards: int) -> None:
        # ValueError for k < 1, m < 1 or k + m > 256, where kcp-go 5.6.1 gets no encoder at all
        self._codec = shared_codec(data_shards, parity_shards)
        self.data_shards = data_shards
        self.parity_shards = parity_shards
        self.shard_size = data_shards + parity_shards
        self.paws = _paws(self.shard_size)
        #: seqid of the next packet; starts at 0 for every session (settable, e.g. for tests)
        self.next_seqid = 0
        #: [latest] §2.5 parity skipping (D52): a group whose last data shard comes at least
        #: this many ms after the previous data shard is sent without parity, its parity
        #: seqids skipped. ``None``: always send parity (5.6.1).
        self.parity_skip_gap: Optional[int] = PARITY_SKIP_GAP
        self._group: List[bytes] = []   # data packets of the group being filled
        self._maxlen = 0                # longest data packet of that group
        self._last_ms: Optional[int] = None   # ms clock of the previous data packet

    def encode(self, kcp_payload: bytes, now: Optional[int] = None) -> List[bytes]:
        """Frame one KCP datagram: [data_packet] or, when it completes a group,
        [data_packet, parity_1, ..., parity_m].

        ``now`` is the caller's ms clock (int, may wrap at 2^32). With it, a group whose last
        data packet comes :attr:`parity_skip_gap` ms or more after the previous data packet
        gets no parity, and the next group still starts at a multiple of k + m ([latest]
        §2.5; the first packet ever counts as after a gap). Without it parity is always sent.
        """
        return self.encode_many((kcp_payload,), now)

    def encode_many(self, kcp_payloads: Sequence[bytes], now: Optional[int] = None) -> List[bytes]:
        """:meth:`encode` for a whole flush, sent at one ``now``: the packets in wire order
        (each data packet, and a group's parity right after its last data packet)."""
        out: List[bytes] = []
        if not kcp_payloads:
            return out
        group = self._group
        k = self.data_shards
        pack = _DATA_HDR.pack
        seqid = self.next_seqid
        maxlen = self._maxlen
        # the previous data packet's time, as seen by each packet: only the first of a batch
        # can come after a gap
        last = self._last_ms
        if now is not None:
            self._last_ms = now
        # groups completed in this flush: (index in out after the group, first parity seqid,
        # parity size, data packets); their parity is computed together at the end
        closed: List[Tuple[int, int, int, List[bytes]]] = []
        for payload in kcp_payloads:
            # [5.6.1] data seqids advance without the modulo (wraps happen on parity positions);
            # size is u16 on the wire: kcp-go truncates, which only matters for absurd payloads
            packet = pack(seqid, TYPE_DATA, (len(payload) + 2) & 0xFFFF) + payload
            seqid = (seqid + 1) & _U32
            out.append(packet)
            group.append(packet)
            if len(packet) > maxlen:
                maxlen = len(packet)
            if len(group) == k:
                if not self._skips_parity(now, last):
                    # The RS shards are the packets from the size field on, zero-padded to the
                    # longest.
                    closed.append((len(out), seqid, maxlen - FEC_HEADER_SIZE, list(group)))
                seqid = (seqid + self.parity_shards) % self.paws
                group.clear()
                maxlen = 0
            last = now
        self.next_seqid = seqid
        self._maxlen = maxlen
        if closed:
            self._insert_parity(out, closed)
        return out

    def _skips_parity(self, now: Optional[int], last: Optional[int]) -> bool:
        """A group completed at ``now`` whose previous data packet went at ``last`` gets no
        parity (sparse traffic: parity that would come after a retransmission anyway)."""
        gap = self.parity_skip_gap
        return now is not None and gap is not None and (
            last is None or ((now - last + _HALF) & _U32) - _HALF >= gap)

    def _insert_parity(self, out: List[bytes], closed: List[Tuple[int, int, int, List[bytes]]]
                       ) -> None:
        """Put each closed group's parity packets right after its last data packet."""
        parities = self._codec.encode_parity_many(
            [c[3] for c in closed], FEC_HEADER_SIZE, [c[2] for c in closed])
        paws = self.paws
        pack = _FEC_HDR.pack
        for (index, seqid, _, _), shards in zip(reversed(closed), reversed(parities)):
            packets = []
            for shard in shards:
                packets.append(pack(seqid, TYPE_PARITY) + shard)
                seqid = (seqid + 1) % paws
            out[index:index] = packets


class _Group:
    """Packets received for one FEC group (seqids base .. base+n-1)."""

    __slots__ = ("base", "slots", "stamps", "present", "ndata", "lo")

    def __init__(self, base: int, n: int) -> None:
        self.base = base
        self.slots: List[Optional[bytes]] = [None] * n   # packet by position (seqid % n)
        self.stamps: List[int] = [0] * n                  # arrival ms by position
        self.present = 0                                  # packets held
        self.ndata = 0                                    # of which flagged F1
        self.lo = n                                       # lowest occupied position


def _is_data(packet: bytes) -> bool:
    return packet[4] == TYPE_DATA and packet[5] == 0


class FECDecoder:
    """kcp-go 5.6.1's FEC receiver (§2.6.1) with autotune (§2.7).

    Entries are bucketed per group instead of 5.6.1's sorted slice, but the observable behaviour
    is the same: dedup by seqid, recovery as soon as a group holds >= k packets of which fewer
    than k are data, the group is then dropped, at most 3*(k+m) entries (the lowest seqid is
    evicted first), entries older than 60 s at the low end expire.

    Deliberate differences from 5.6.1:

    * No recovery while the shape is known to be wrong (as kcp-go latest, §2.6.2): a packet whose
      type contradicts its position under the current (k, m) starts "tuning"; until the samples
      yield a valid (k, m) pair (retried on every packet meanwhile), groups are still handled
      and dropped as in 5.6.1 but nothing is returned. 5.6.1 returns what it rebuilds with the
      wrong shape, and that is not harmless: every parity row of this code sums to 1, so the
      parity of KCP datagrams with equal conv/cmd/frg/wnd/una/len fields carries those same
      fields and passes KCP's checks with a mixed-up sn and garbage data. A lazy (1, 1) decoder
      facing a 10/3 peer then feeds parity to KCP as data and corrupts the stream. With a
      correctly configured decoder no mismatch ever occurs, so nothing changes there.
    * [latest] PAWS drop (§2.6.2, D53): a packet with seqid >= paws (under the current shape)
      is sampled for autotune, then dropped, counted in :attr:`paws_dropped` (kcp-go counts
      it nowhere; a data packet still reaches KCP, as in kcp-go). No encoder sends one: they
      wrap at paws. 5.6.1 stores them, and its wrapped range comparison mixes them with
      seqids 0..n-2.
    * A parity packet of a finished group (all k data shards arrived, or it was recovered;
      the last :data:`FINISHED_MEMORY` such groups are remembered) is dropped right after
      the type/position check: it cannot add anything.
      5.6.1 stores it as a new partial group, which only takes room among the 3*(k+m)
      entries until it is evicted; the latest kcp-go drops every shard of a finished set
      too. Counters keep their meaning: FECParityShards still counts it (5.6.1 counts every
      parity packet received), nothing else changes; FECFullShardSet counts a full set when
      its last data shard arrives, as before.
    * Only reachable with bogus input: autotuned periods summing to more than 256 disable
      recovery instead of panicking (5.6.1 indexes past its shard cache).
    """

    __slots__ = ("data_shards", "parity_shards", "snmp", "paws_dropped", "_n", "_paws",
                 "_rxlimit", "_codec", "_groups", "_order", "_count", "_floor", "_pbits",
                 "_pseqs", "_tuning", "_finished")

    def __init__(self, data_shards: int, parity_shards: int, snmp: Optional[Snmp] = None) -> None:
        codec = shared_codec(data_shards, parity_shards)  # ValueError on a bad configuration
        self.snmp = DEFAULT_SNMP if snmp is None else snmp
        self._groups: Dict[int, _Group] = {}   # base seqid -> group
        self._order: List[int] = []            # group bases, ascending (diff-wise)
        self._count = 0                        # packets held in all groups
        # Arrival ms of the oldest held packet, or older: while now - floor <= FEC_EXPIRE nothing
        # can expire. It may go stale (older) when packets leave; _expire then refreshes it.
        self._floor = 0
        self._pbits = [False] * AUTOTUNE_SAMPLES
        self._pseqs = [0] * AUTOTUNE_SAMPLES
        # True from a type/position mismatch until the samples confirm a (k, m): recovery is
        # withheld meanwhile (see the class docstring)
        self._tuning = False
        #: Packets dropped because their seqid is >= paws ([latest] §2.6.2; not in the SNMP).
        self.paws_dropped = 0
        self._set_shape(data_shards, parity_shards, codec)

    # ------------------------------------------------------------------ hot path
    def decode(self, packet: bytes, now: int) -> List[bytes]:
        """Feed one received FEC packet (data or parity, starting at its seqid); return the KCP
        payloads of the data packets this recovers (trimmed to the size field).

        ``now`` is the caller's ms clock (int; may wrap at 2^32, ages are compared diff-wise).
        The received data packet itself is NOT returned: the caller feeds it to KCP directly.
        """
        if type(packet) is not bytes:
            packet = bytes(packet)  # we keep a reference, so it must not change under us
        if len(packet) < FEC_HEADER_SIZE:
            return []
        seqid, flag = _unpack_fec_hdr(packet)
        is_data = flag == TYPE_DATA
        if flag == TYPE_PARITY:
            self.snmp.FECParityShards += 1

        # autotune (§2.7): sample every packet, retune on a type/position mismatch
        slot = seqid % AUTOTUNE_SAMPLES
        self._pbits[slot] = is_data
        self._pseqs[slot] = seqid
        if seqid >= self._paws:
            self.paws_dropped += 1               # [latest] PAWS check (D53)
            return []
        n = self._n
        pos = seqid % n
        if (pos < self.data_shards) is not is_data or self._tuning:
            if self._retune():
                return []
            n = self._n
            pos = seqid % n

        base = seqid - pos
        if not is_data and base in self._finished:
            return []  # parity of a finished group: nothing to add (class docstring)
        group = self._groups.get(base)
        if group is None:
            group = self._new_group(base)
        elif group.slots[pos] is not None:
            return []  # duplicate seqid
        group.slots[pos] = packet
        group.stamps[pos] = now
        group.present += 1
        if is_data:
            group.ndata += 1
        if pos < group.lo:
            group.lo = pos
        self._count += 1

        recovered: List[bytes] = []
        k = self.data_shards
        if group.ndata == k:
            self.snmp.FECFullShardSet += 1       # [latest] counter: a full shard set
            self._drop_group(group)              # nothing lost
            self._finish(base)
        elif group.present >= k:
            if not self._tuning:
                recovered = self._recover(group)
            self._drop_group(group)              # whether or not recovery worked
            self._finish(base)

        if self._count > self._rxlimit:
            self._evict_lowest(True)
        # cheap test against the oldest arrival; the exact walk only runs when it may expire
        if ((now - self._floor) & _U32) > FEC_EXPIRE:
            self._expire(now)
        return recovered

    # ------------------------------------------------------------------ group bookkeeping
    def _new_group(self, base: int) -> _Group:
        group = _Group(base, self._n)
        self._groups[base] = group
        order = self._order
        if not order or 0 < ((base - order[-1]) & _U32) < _HALF:
            order.append(base)  # the usual case: a newer group
            # [latest] gauge (kcpgo.snmp): its "newestShardId", the newest group's shard-set id
            self.snmp.FECShardMin = base // self._n
        else:
            # 5.6.1 inserts scanning from the newest end, diff-wise
            i = len(order) - 1
            while i >= 0 and not (0 < ((base - order[i]) & _U32) < _HALF):
                i -= 1
            order.insert(i + 1, base)
        self.snmp.FECShardSet = len(self._groups)   # [latest] gauge: groups held
        return group

    def _finish(self, base: int) -> None:
        finished = self._finished
        finished[base] = None
        if len(finished) > FINISHED_MEMORY:
            del finished[next(iter(finished))]

    def _drop_group(self, group: _Group) -> None:
        del self._groups[group.base]
        self._order.remove(group.base)
        self._count -= group.present
        self.snmp.FECShardSet = len(self._groups)

    def _evict_lowest(self, count_short: bool) -> None:
        """Remove the held packet with the lowest seqid (5.6.1 ``rx[0]``)."""
        base = self._order[0]
        group = self._groups[base]
        pos = group.lo
        slots = group.slots
        packet = slots[pos]
        slots[pos] = None
        group.present -= 1
        self._count -= 1
        if _is_data(packet):
            group.ndata -= 1
            if count_short:
                self.snmp.FECShortShards += 1
        if group.present == 0:
            del self._groups[base]
            self._order.pop(0)
            self.snmp.FECShardSet = len(self._groups)
        else:
            pos += 1
            while slots[pos] is None:
                pos += 1
            group.lo = pos

    def _expire(self, now: int) -> None:
        """Drop leading (lowest-seqid) packets that arrived more than FEC_EXPIRE ms ago, then
        recompute the floor (the oldest arrival still held)."""
        groups = self._groups
        order = self._order
        while order:
            group = groups[order[0]]
            age = (now - group.stamps[group.lo]) & _U32
            if FEC_EXPIRE < age < _HALF:
                self._evict_lowest(False)
            else:
                break
        oldest_age = None
        floor = now
        # O(held packets); runs at most once per FEC_EXPIRE ms unless a packet older than that
        # sits behind a newer lower seqid (only with very late or bogus seqids)
        for group in groups.values():
            for packet, stamp in zip(group.slots, group.stamps):
                if packet is not None:
                    age = (now - stamp) & _U32
                    if age >= _HALF:
                        age -= 1 << 32  # arrived "after" now: the clock went backwards
                    if oldest_age is None or age > oldest_age:
                        oldest_age = age
                        floor = stamp
        self._floor = floor

    # ------------------------------------------------------------------ recovery
    def _recover(self, group: _Group) -> List[bytes]:
        codec = self._codec
        if codec is None:
            return []
        shards: List[Optional[bytes]] = []
        maxlen = 0
        for packet in group.slots:
            if packet is None:
                shards.append(None)
            else:
                # an empty shard is zero padding once padded to maxlen: keep it "present"
                shard = packet[FEC_HEADER_SIZE:] or b"\x00"
                shards.append(shard)
                if len(packet) - FEC_HEADER_SIZE > maxlen:
                    maxlen = len(packet) - FEC_HEADER_SIZE
        if maxlen == 0:
            return []  # klauspost rejects zero-length shards
        try:
            rebuilt = codec.reconstruct_ints(shards)
        except ValueError:
            return []
        out: List[bytes] = []
        for _, value in rebuilt:
            # §2.6.3: r[0:2] is the size field; valid if 2 <= size <= len(r)
            size = value & 0xFFFF
            if maxlen >= 2 and 2 <= size <= maxlen:
                out.append(value.to_bytes(maxlen, "little")[2:size])
            else:
                self.snmp.FECErrs += 1
        return out

    # ------------------------------------------------------------------ autotune (§2.7)
    def _set_shape(self, k: int, m: int, codec: Optional[ReedSolomon]) -> None:
        self.data_shards = k
        self.parity_shards = m
        self._n = k + m
        self._paws = _paws(k + m)
        self._rxlimit = RX_FEC_MULTI * (k + m)
        self._codec = codec
        #: Base seqids of the groups finished last under this shape, oldest first (a dict
        #: as an ordered set): their late parity is dropped (class docstring).
        self._finished: Dict[int, None] = {}

    def _find_period(self, bit: bool) -> int:
        """5.6.1 FindPeriod over the seqid % 258 indexed samples; <= 0 or -1 = not found."""
        bits = self._pbits
        seqs = self._pseqs
        left = 0
        last_bit = bits[0]
        last_seq = seqs[0]
        for idx in range(1, AUTOTUNE_SAMPLES):
            b = bits[idx]
            s = seqs[idx]
            # an edge only counts when the two samples are consecutive seqids
            if last_bit is not bit and b is bit and ((last_seq + 1) & _U32) == s:
                left = idx
                break
            last_bit = b
            last_seq = s
        # if no left edge was found, 5.6.1 scans for the right edge from index 0
        last_bit = bits[left]
        last_seq = seqs[left]
        for idx in range(left + 1, AUTOTUNE_SAMPLES):
            b = bits[idx]
            s = seqs[idx]
            if ((last_seq + 1) & _U32) != s:
                return -1
            if last_bit is bit and b is not bit:
                return idx - left
            last_bit = b
            last_seq = s
        return -left  # no right edge: 5.6.1 returns 0 - leftEdge

    def _retune(self) -> bool:
        """Adopt the periods seen in the samples if valid and new. True = stop decoding this
        packet (5.6.1 returns nothing when it cannot build the new codec)."""
        ds = self._find_period(True)
        ps = self._find_period(False)
        if not (0 < ds < _MAX_PERIOD and 0 < ps < _MAX_PERIOD):
            self._tuning = True
            return False
        self._tuning = False
        if ds == self.data_shards and ps == self.parity_shards:
            return False
        try:
            codec: Optional[ReedSolomon] = shared_codec(ds, ps)
        except ValueError:
            # k + m > 256: 5.6.1 keeps the new shape with the old codec and would index out of
            # range (panic) on the next packet; we keep the shape and never recover instead.
            codec = None
        # held packets stay; re-bucket them under the new group size
        held = []
        for base in self._order:
            group = self._groups[base]
            for pos, packet in enumerate(group.slots):
                if packet is not None:
                    held.append((base + pos, packet, group.stamps[pos]))
        self._set_shape(ds, ps, codec)
        self._groups = {}
        self._order = []
        n = self._n
        paws = self._paws
        for seqid, packet, stamp in held:
            if seqid >= paws:
                self.paws_dropped += 1           # beyond the new shape's wrap point
                self._count -= 1
                continue
            pos = seqid % n
            base = seqid - pos
            group = self._groups.get(base) or self._new_group(base)
            group.slots[pos] = packet
            group.stamps[pos] = stamp
            group.present += 1
            if _is_data(packet):
                group.ndata += 1
            if pos < group.lo:
                group.lo = pos
        return codec is None
