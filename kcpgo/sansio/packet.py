"""The datagram pipeline between KCP and the wire (docs/protocol.md §2.2, §2.3, §2.6.3, §4.1, §9).

Send:    KCP datagram -> FEC framing (+ parity) -> nonce + CRC32 + encrypt -> wire datagrams.
Receive: wire datagram -> decrypt + CRC check -> FEC demux/recovery -> KCP ``input``.

Pure code: bytes and an explicit millisecond clock in, bytes and KCP input out. Every malformed
datagram is counted in the SNMP counters (kcp-go's names) and dropped; nothing here raises on
wire input.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Deque, List, Optional

from .fec import (FEC_HEADER_SIZE_PLUS2, TYPE_DATA, TYPE_OOB, TYPE_PARITY, FECDecoder,
                  FECEncoder, encode_oob, is_oob, parse_oob)
from ..codec.reedsolomon import MAX_TOTAL_SHARDS
from ..snmp import DEFAULT_SNMP, Snmp
from .wire import MTU_LIMIT, OVERHEAD

if TYPE_CHECKING:  # pragma: no cover
    from ..codec.crypt import BlockCrypt
    from .kcp import KCP

__all__ = ["PacketCodec", "MTU_LIMIT", "MIN_PAYLOAD", "fec_enabled", "pipeline_overhead",
           "OOB_QUEUE_MAX", "OPEN_FAILED"]

#: §4.1 [5.6.1]: after the crypto header, a datagram must hold at least one KCP header.
MIN_PAYLOAD = OVERHEAD
#: OOB payloads received and not yet taken (``Connection.recv_oob``) a session keeps at most;
#: more are dropped and counted (:attr:`PacketCodec.oob_dropped`): memory stays bounded
#: whatever a peer sends (128 datagrams of at most ~1.4 KB).
OOB_QUEUE_MAX = 128
#: :meth:`PacketCodec.open_many`'s entry for a datagram that failed the crypto check (an
#: opened payload is never empty: it holds at least a KCP or OOB header).
OPEN_FAILED = b""
#: §2.2: the u16 at offset 4 of a decrypted payload that marks FEC data / parity.
_FEC_DATA_FLAG = TYPE_DATA
_FEC_PARITY_FLAG = TYPE_PARITY


def fec_enabled(data_shards: int, parity_shards: int) -> bool:
    """Whether FEC framing is sent (§2.3: both counts > 0). ``ValueError`` for a negative count
    or more than 256 shards in total (§3)."""
    if data_shards < 0 or parity_shards < 0:
        raise ValueError("shard counts must be >= 0")
    fec = data_shards > 0 and parity_shards > 0
    if fec and data_shards + parity_shards > MAX_TOTAL_SHARDS:
        raise ValueError(f"data_shards + parity_shards must be <= {MAX_TOTAL_SHARDS} (§3), "
                         f"got {data_shards} + {parity_shards}")
    return fec


def pipeline_overhead(crypt: Optional["BlockCrypt"], fec: bool) -> int:
    """Bytes the pipeline adds to a KCP datagram: the crypto header (and AEAD tag) plus the
    FEC data header (§2.2)."""
    return (crypt.overhead if crypt is not None else 0) + (FEC_HEADER_SIZE_PLUS2 if fec else 0)


class PacketCodec:
    """Encodes KCP output for the wire and feeds wire input to a KCP object.

    ``crypt`` is a :class:`kcpgo.crypt.BlockCrypt` or ``None`` (no crypto header at all, which
    differs from the ``"none"`` cipher). FEC framing is sent only when both shard counts are > 0
    (and their sum <= 256, §3); a peer's FEC framing is always decoded, with a decoder created
    on first use that autotunes to the peer's shard counts (§2.7).
    """

    def __init__(self, crypt: Optional["BlockCrypt"] = None, data_shards: int = 0,
                 parity_shards: int = 0, snmp: Optional[Snmp] = None) -> None:
        fec = fec_enabled(data_shards, parity_shards)
        self.crypt = crypt
        self.snmp = snmp if snmp is not None else DEFAULT_SNMP
        self.data_shards = data_shards if fec else 0
        self.parity_shards = parity_shards if fec else 0
        self.fec_encoder: Optional[FECEncoder] = FECEncoder(data_shards, parity_shards) if fec else None
        self.fec_decoder: Optional[FECDecoder] = (
            FECDecoder(data_shards, parity_shards, self.snmp) if fec else None)
        #: Bytes in front of the KCP data in every data datagram (crypto header + FEC header).
        self.header_size = (crypt.header_size if crypt is not None else 0) + \
            (FEC_HEADER_SIZE_PLUS2 if fec else 0)
        #: Total bytes the pipeline adds to a KCP datagram (an AEAD tag included).
        self.overhead = pipeline_overhead(crypt, fec)
        #: This codec's share of InCsumErrors and KCPInErrors (counted on the failure paths
        #: only): a session that never heard its peer names them (docs/deviations.md D33).
        self.csum_errors = 0
        self.input_errors = 0
        #: [latest] OOB payloads received for this conv, oldest first (§2.2(e)), at most
        #: :data:`OOB_QUEUE_MAX`; those that did not fit, and those of another conv.
        self.oob: Deque[bytes] = deque()
        self.oob_dropped = 0
        self.oob_mismatched = 0

    # ------------------------------------------------------------------ send

    def encode_many(self, kcp_datagrams: List[bytes], now: Optional[int] = None) -> List[bytes]:
        """Wire datagrams for a whole flush's KCP datagrams: each framed for FEC (with parity
        after every k) and sealed, in order. ``now`` (ms clock) lets the FEC encoder skip the
        parity of a sparse group ([latest] §2.5, ``FECEncoder.encode``)."""
        enc = self.fec_encoder
        crypt = self.crypt
        if enc is None:
            if crypt is None:
                return kcp_datagrams
            return crypt.seal_many(kcp_datagrams)
        packets = enc.encode_many(kcp_datagrams, now)
        if crypt is None:
            return packets
        return crypt.seal_many(packets)

    def encode_oob(self, conv: int, payload: bytes) -> bytes:
        """The wire datagram of one [latest] OOB packet (§2.2(e)): FEC-style header, conv,
        payload, sealed like any datagram; it takes no FEC seqid and has no parity. The caller
        checks that FEC is on and the size fits (``Connection.oob_datagram``)."""
        packet = encode_oob(conv, payload)
        crypt = self.crypt
        return packet if crypt is None else crypt.seal_many([packet])[0]

    # ------------------------------------------------------------------ receive

    def open(self, wire: bytes) -> Optional[bytes]:
        """Strip the crypto layer: the plaintext after the crypto header, or ``None`` (dropped).

        Too short: dropped silently (kcp-go does not count it). Bad CRC / failed AEAD:
        ``InCsumErrors``. A plaintext shorter than one KCP header is dropped silently (§4.1),
        unless it is a [latest] OOB packet (12 bytes at least, §2.2(e)).
        """
        payload = self._open(wire)
        return payload or None

    def _open(self, wire: bytes) -> Optional[bytes]:
        """:meth:`open`, with :data:`OPEN_FAILED` for a failed crypto check."""
        crypt = self.crypt
        if crypt is not None:
            if len(wire) < crypt.overhead:
                return None
            payload = crypt.open(wire)
            if payload is None:
                self.snmp.InCsumErrors += 1
                self.csum_errors += 1
                return OPEN_FAILED
        else:
            payload = wire
        if len(payload) < MIN_PAYLOAD and not is_oob(payload):
            return None
        return payload

    def open_many(self, wires: List[bytes]) -> List[Optional[bytes]]:
        """:meth:`open` for a batch, counted the same way, with one cipher call for all of
        them where the cipher allows it (``BlockCrypt.open_many``: one OpenSSL update, or
        every block of the batch at once for the pure-Python ciphers, docs/protocol.md §4).
        Each entry: the payload; ``None`` (too short, dropped silently); or
        :data:`OPEN_FAILED` (failed the crypto check, counted in ``InCsumErrors``)."""
        crypt = self.crypt
        if crypt is None or len(wires) < 2:
            return [self._open(w) for w in wires]
        over = crypt.overhead
        whole = [w for w in wires if len(w) >= over]
        opened = iter(crypt.open_many(whole))
        out: List[Optional[bytes]] = []
        append = out.append
        failed = 0
        for w in wires:
            if len(w) < over:
                append(None)
                continue
            payload = next(opened)
            if payload is None:
                failed += 1
                append(OPEN_FAILED)
            elif len(payload) < MIN_PAYLOAD and not is_oob(payload):
                append(None)
            else:
                append(payload)
        if failed:
            self.snmp.InCsumErrors += failed
            self.csum_errors += failed
        return out

    def feed(self, payload: bytes, kcp: "KCP", now: int) -> None:
        """Give one opened payload (see :meth:`open`) to ``kcp``, through FEC if it is framed.

        FEC data shards go to KCP as regular input after the decoder saw them (5.6.1 order);
        recovered shards follow as non-regular input (§2.6.3).
        """
        snmp = self.snmp
        snmp.InPkts += 1
        snmp.InBytes += len(payload)
        flag = payload[4] | (payload[5] << 8)
        if flag != _FEC_DATA_FLAG and flag != _FEC_PARITY_FLAG:
            if flag == TYPE_OOB and is_oob(payload):
                self._oob_received(payload, kcp.conv)
                return
            if kcp.input(payload, now, True):
                snmp.KCPInErrors += 1
                self.input_errors += 1
            return
        dec = self.fec_decoder
        if dec is None:
            # §2.7: a session without FEC still decodes a peer that uses it.
            dec = self.fec_decoder = FECDecoder(1, 1, snmp)
        recovered = dec.decode(payload, now)
        if flag == _FEC_DATA_FLAG:
            if kcp.input(payload[FEC_HEADER_SIZE_PLUS2:], now, True):
                snmp.KCPInErrors += 1
                self.input_errors += 1
        for r in recovered:
            if kcp.input(r, now, False):
                snmp.KCPInErrors += 1
                self.input_errors += 1
            else:
                snmp.FECRecovered += 1

    def _oob_received(self, payload: bytes, conv: int) -> None:
        """A [latest] OOB packet (§2.2(e)): never KCP input, whatever this session's FEC
        setting (kcp-go latest hands it to the session's OOB handler). Counted in
        ``OOBPackets``; queued for ``Connection.recv_oob`` if it is of this conv and the
        queue has room, else dropped and counted."""
        self.snmp.OOBPackets += 1
        oob_conv, data = parse_oob(payload)
        if oob_conv != conv:
            self.oob_mismatched += 1
        elif len(self.oob) >= OOB_QUEUE_MAX:
            self.oob_dropped += 1
        else:
            self.oob.append(data)

    def receive(self, wire: bytes, kcp: "KCP", now: int,
                parity: Optional[List[bytes]] = None) -> bool:
        """:meth:`open` then :meth:`feed`. Returns whether the datagram passed the crypto
        check (and reached KCP, the OOB queue, or ``parity``).

        ``parity``: a list to append an opened FEC parity packet to instead of feeding it;
        the caller feeds it later (:meth:`feed`), e.g. after telling its owner of the data
        of the same batch (``Channel.on_batch``)."""
        payload = self.open(wire)
        if payload is None:
            return False
        if parity is not None and payload[4] == TYPE_PARITY and payload[5] == 0:
            parity.append(payload)
            return True
        self.feed(payload, kcp, now)
        return True

    def receive_many(self, wires: List[bytes], kcp: "KCP", now: int,
                     parity: Optional[List[bytes]] = None) -> bool:
        """:meth:`receive` for several datagrams of one peer, in order, opened at once
        (:meth:`open_many`). Returns whether any passed the crypto check."""
        feed = self.feed
        ok = False
        for payload in self.open_many(wires):
            if not payload:
                continue
            ok = True
            if parity is not None and payload[4] == TYPE_PARITY and payload[5] == 0:
                parity.append(payload)
                continue
            feed(payload, kcp, now)
        return ok
