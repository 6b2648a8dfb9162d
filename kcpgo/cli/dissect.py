"""``python -m kcpgo dissect``: decode kcp-go traffic in a pcap or pcapng capture.

For every UDP datagram (``--port`` narrows them): decrypt with ``--crypt``/``--key`` as
kcptun derives the key (PBKDF2, docs/protocol.md §4.7; ``--crypt null`` for no crypto header
at all) and check the CRC-32 (or the AEAD tag), read the FEC header (docs/protocol.md §2.2:
data or parity shard, seqid, size; with ``--ds``/``--ps`` also its group and shard index),
then every KCP segment's fields (conv, cmd, frg, wnd, ts, sn, una, len; §1.2). With
``--smux``, kcptun's layers above KCP (docs/kcptun.md §3, §4) are decoded too: for each
direction of each conv the PUSH payloads are put back in ``sn`` order (duplicates and
retransmissions dropped, as KCP delivers them), then the snappy framing when the stream
starts with snappy's identifier (compression on; off with kcptun's ``--nocomp``), then smux
frames (version, command, stream id, length), printed after the datagram that completed them.

Output: text, one block per datagram, or ``--json``: one JSON object per line (``datagram``
records, then one ``summary``). A datagram that fails the check is reported and skipped; a
layer that cannot be decoded (a capture started mid-stream, a framing error) is reported
once for its direction. Captures are read with dpkt (the ``cli`` extra: ``pip install
'kcpgo[cli]'``); link types Ethernet, Linux cooked (v1, v2), raw IP and BSD loopback.
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..address import format_address
from ..codec.crypt import BlockCrypt, derive_key, new as new_crypt
from ..codec.snappy import STREAM_IDENTIFIER, SnappyDecoder, SnappyFramingError
from ..sansio.fec import TYPE_DATA, TYPE_OOB, TYPE_PARITY
from ..sansio.smux_frames import CMD_NAMES, CMD_UPD, FrameParser, SmuxProtocolError, decode_upd
from ..sansio.wire import CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS, OVERHEAD, decode_segments
from . import EXIT_INTERRUPTED, HelpFormatter

__all__ = ["main", "Dissector", "read_capture", "KCP_CMDS"]

#: docs/protocol.md §1.1 command names.
KCP_CMDS = {CMD_PUSH: "PUSH", CMD_ACK: "ACK", CMD_WASK: "WASK", CMD_WINS: "WINS"}
#: FEC packet types (§2.2) by their u16 at offset 4 of the decrypted payload.
FEC_TYPES = {TYPE_DATA: "data", TYPE_PARITY: "parity", TYPE_OOB: "oob"}
_FEC_HDR = struct.Struct("<IH")
#: Bytes of stream data shown per smux PSH frame in text output.
PREVIEW = 32
#: pcapng's section header block type (the file's first 4 bytes).
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

_EXAMPLES = """examples:
  python -m kcpgo dissect --crypt aes --key "it's a secrect" --ds 10 --ps 3 capture.pcap
  python -m kcpgo dissect --crypt salsa20 --key s3cret --smux --port 29900 tunnel.pcapng
  python -m kcpgo dissect --crypt null --json capture.pcap | jq .

Record one with 'python -m kcpgo netem ... --pcap capture.pcap' between client and server
(no root needed), or: tcpdump -i lo -w capture.pcap udp port 29900"""

Address = Tuple[str, int]


# ---------------------------------------------------------------------- reading captures


def read_capture(path: str) -> Iterator[Tuple[float, Address, Address, bytes]]:
    """``(time, source, destination, UDP payload)`` of every UDP datagram in the pcap or
    pcapng file ``path``. ``ImportError`` with what to install if dpkt is missing;
    ``OSError`` if the file cannot be read; ``ValueError`` if it is not a capture."""
    try:
        import dpkt
    except ImportError:
        raise ImportError("reading captures needs dpkt: pip install 'kcpgo[cli]' "
                          "(or pip install dpkt)") from None
    with open(path, "rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        try:
            reader = (dpkt.pcapng.Reader(fh) if magic == _PCAPNG_MAGIC
                      else dpkt.pcap.Reader(fh))
        except (ValueError, dpkt.dpkt.Error) as e:
            raise ValueError(f"{path}: not a pcap or pcapng capture ({e})") from None
        linktype = reader.datalink()
        for ts, buf in reader:
            found = _udp(dpkt, linktype, buf)
            if found is not None:
                yield (float(ts),) + found


def _udp(dpkt: Any, linktype: int, buf: bytes) -> Optional[Tuple[Address, Address, bytes]]:
    """The UDP datagram in one captured frame, or None (another protocol, a fragment)."""
    try:
        if linktype == dpkt.pcap.DLT_EN10MB:
            ip = dpkt.ethernet.Ethernet(buf).data
        elif linktype == dpkt.pcap.DLT_LINUX_SLL:
            ip = dpkt.sll.SLL(buf).data
        elif linktype == getattr(dpkt.pcap, "DLT_LINUX_SLL2", 276):
            ip = dpkt.sll2.SLL2(buf).data
        elif linktype in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
            ip = dpkt.loopback.Loopback(buf).data
        elif linktype in (dpkt.pcap.DLT_RAW, 101, 228, 229):
            ip = dpkt.ip6.IP6(buf) if buf[:1] and buf[0] >> 4 == 6 else dpkt.ip.IP(buf)
        else:
            return None
    except (dpkt.dpkt.Error, struct.error, IndexError):
        return None
    if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
        return None
    udp = ip.data
    if not isinstance(udp, dpkt.udp.UDP):
        return None
    import socket
    family = socket.AF_INET6 if isinstance(ip, dpkt.ip6.IP6) else socket.AF_INET
    src = (socket.inet_ntop(family, ip.src), udp.sport)
    dst = (socket.inet_ntop(family, ip.dst), udp.dport)
    return src, dst, bytes(udp.data)


# ---------------------------------------------------------------------- above KCP


class _Direction:
    """One direction of one conv: KCP's in-order delivery, then snappy (if the stream starts
    with its identifier) and smux frames."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.next_sn: Optional[int] = None
        self.pending: Dict[int, bytes] = {}
        self.head = b""                    # the first bytes, until the layers are known
        self.snappy: Optional[SnappyDecoder] = None
        self.parser: Optional[FrameParser] = None
        self.decided = False
        self.error: Optional[str] = None
        self.frames = 0
        self.delivered = 0

    def push(self, sn: int, data: bytes) -> Tuple[List[Dict[str, Any]], List[str]]:
        """One PUSH segment: the smux frames it completes, and notes (layers found, errors
        met for the first time)."""
        notes: List[str] = []
        if self.next_sn is None:
            self.next_sn = sn
            if sn != 0:
                notes.append(f"{self.name}: capture starts at sn {sn}, not 0: the stream "
                             f"above KCP may not decode")
        if sn < self.next_sn or sn in self.pending:
            return [], notes                      # a retransmission or duplicate
        self.pending[sn] = data
        stream = bytearray()
        while self.next_sn in self.pending:
            stream += self.pending.pop(self.next_sn)
            self.next_sn += 1
        self.delivered += len(stream)
        if self.error is not None or not stream:
            return [], notes
        try:
            return self._frames(bytes(stream), notes), notes
        except (SnappyFramingError, SmuxProtocolError, ValueError) as e:
            self.error = str(e)
            notes.append(f"{self.name}: cannot decode the stream above KCP: {e}")
            return [], notes

    def _frames(self, data: bytes, notes: List[str]) -> List[Dict[str, Any]]:
        if not self.decided:
            self.head += data
            if len(self.head) < len(STREAM_IDENTIFIER) and STREAM_IDENTIFIER.startswith(
                    self.head):
                return []
            data, self.head, self.decided = self.head, b"", True
            if data.startswith(STREAM_IDENTIFIER):
                self.snappy = SnappyDecoder()
                notes.append(f"{self.name}: snappy framing (kcptun compression on)")
            else:
                notes.append(f"{self.name}: no snappy framing (kcptun --nocomp)")
        if self.snappy is not None:
            data = self.snappy.feed(data)
        if not data:
            return []
        if self.parser is None:
            if data[0] not in (1, 2):
                raise ValueError(f"the stream starts with byte {data[0]}, not a smux version "
                                 f"(1 or 2): not kcptun's smux, or --nocomp differs")
            self.parser = FrameParser(data[0])
            notes.append(f"{self.name}: smux version {data[0]}")
        frames = []
        for f in self.parser.feed(data):
            rec: Dict[str, Any] = {"dir": self.name, "ver": f.ver, "cmd": CMD_NAMES[f.cmd],
                                   "sid": f.sid, "len": len(f.data)}
            if f.cmd == CMD_UPD:
                rec["consumed"], rec["window"] = decode_upd(f.data)
            elif f.data:
                rec["data"] = f.data[:PREVIEW].hex()
            frames.append(rec)
        self.frames += len(frames)
        return frames


# ---------------------------------------------------------------------- datagrams


class Dissector:
    """Decodes datagrams one by one (:meth:`datagram`) and keeps the totals (:meth:`summary`).
    ``crypt``: the :class:`BlockCrypt` or None (no crypto header); ``shards``: kcptun's
    ``(datashard, parityshard)`` when known, for FEC group numbers; ``smux``: decode kcptun's
    layers above KCP."""

    def __init__(self, crypt: Optional[BlockCrypt], shards: Tuple[int, int] = (0, 0),
                 smux: bool = False) -> None:
        self.crypt = crypt
        self.shards = shards
        self.smux = smux
        self.count: Counter = Counter()
        self.segments: Counter = Counter()
        self.convs: Dict[Tuple[str, str, int], int] = {}
        self.directions: Dict[Tuple[str, str, int], _Direction] = {}
        self.t0: Optional[float] = None

    def datagram(self, when: float, src: Address, dst: Address, data: bytes) -> Dict[str, Any]:
        """The record of one UDP datagram: addresses, check result, FEC header, segments
        and (``smux``) frames; ``error`` says why a part could not be read."""
        if self.t0 is None:
            self.t0 = when
        self.count["datagrams"] += 1
        rec: Dict[str, Any] = {"n": self.count["datagrams"], "time": round(when - self.t0, 6),
                               "src": format_address(src), "dst": format_address(dst),
                               "len": len(data)}
        payload: Optional[bytes] = data
        if self.crypt is None:
            rec["check"] = "none"
        else:
            payload = self.crypt.open(data) if len(data) >= self.crypt.overhead else None
            rec["check"] = "ok" if payload is not None else "FAILED"
            if payload is None:
                self.count["check_failed"] += 1
                rec["error"] = ("CRC/authentication failed: another --crypt or --key, or not "
                                "kcp-go traffic")
                return rec
        assert payload is not None
        kcp = self._fec(payload, rec)
        if kcp is None:
            return rec
        try:
            segs = decode_segments(kcp)
        except ValueError as e:
            self.count["bad_segments"] += 1
            rec["error"] = f"KCP: {e}"
            return rec
        rec["segments"] = []
        frames: List[Dict[str, Any]] = []
        notes: List[str] = []
        for s in segs:
            name = KCP_CMDS.get(s.cmd, str(s.cmd))
            self.segments[name] += 1
            key = (rec["src"], rec["dst"], s.conv)
            self.convs[key] = self.convs.get(key, 0) + 1
            rec["segments"].append({"conv": s.conv, "cmd": name, "frg": s.frg, "wnd": s.wnd,
                                    "ts": s.ts, "sn": s.sn, "una": s.una, "len": len(s.data)})
            if self.smux and s.cmd == CMD_PUSH:
                d = self.directions.get(key)
                if d is None:
                    d = self.directions[key] = _Direction(
                        f"{rec['src']} > {rec['dst']} conv {s.conv:#010x}")
                got, said = d.push(s.sn, s.data)
                frames += got
                notes += said
        if frames:
            rec["smux"] = frames
        if notes:
            rec["notes"] = notes
        return rec

    def _fec(self, payload: bytes, rec: Dict[str, Any]) -> Optional[bytes]:
        """The KCP datagram inside ``payload`` (None for parity and OOB packets), recording
        the FEC header in ``rec``."""
        kind = FEC_TYPES.get(_FEC_HDR.unpack_from(payload)[1]) if len(payload) >= 6 else None
        if kind is None:
            if len(payload) < OVERHEAD:
                rec["error"] = f"{len(payload)} bytes: shorter than a KCP header"
                self.count["short"] += 1
                return None
            return payload
        seqid = _FEC_HDR.unpack_from(payload)[0]
        fec: Dict[str, Any] = {"type": kind, "seqid": seqid}
        k, m = self.shards
        if k > 0 and m > 0 and kind != "oob":
            fec["group"], fec["shard"] = divmod(seqid, k + m)
        rec["fec"] = fec
        self.count[f"fec_{kind}"] += 1
        if kind != "data":
            fec["len"] = len(payload) - 6
            return None
        if len(payload) < 8:
            rec["error"] = "FEC data shard without its size field"
            return None
        size = payload[6] | payload[7] << 8
        fec["size"] = size
        if not 2 <= size <= len(payload) - 6:
            rec["error"] = f"FEC size field {size} does not fit the shard"
            return None
        return payload[8:6 + size]

    def summary(self) -> Dict[str, Any]:
        """Totals: datagrams by outcome, FEC shards, segments by command, segments per
        (source, destination, conv), and per smux direction the bytes and frames decoded."""
        out: Dict[str, Any] = dict(self.count)
        out["segments"] = dict(self.segments)
        out["flows"] = [{"src": s, "dst": d, "conv": c, "segments": n}
                        for (s, d, c), n in self.convs.items()]
        if self.smux:
            out["smux"] = [{"dir": d.name, "stream_bytes": d.delivered, "frames": d.frames,
                            **({"error": d.error} if d.error else {})}
                           for d in self.directions.values()]
        return out


# ---------------------------------------------------------------------- text output


def format_record(rec: Dict[str, Any]) -> List[str]:
    """The text lines of one datagram record."""
    head = (f"#{rec['n']} {rec['time']:.6f} {rec['src']} > {rec['dst']} len {rec['len']} "
            f"check {rec['check']}")
    fec = rec.get("fec")
    if fec is not None:
        head += f" | fec {fec['type']} seqid {fec['seqid']}"
        if "group" in fec:
            head += f" (group {fec['group']} shard {fec['shard']})"
        head += f" size {fec['size']}" if "size" in fec else f" len {fec.get('len', 0)}"
    lines = [head]
    for s in rec.get("segments", ()):
        lines.append(f"    {s['cmd']:<4} conv {s['conv']:#010x} frg {s['frg']} wnd {s['wnd']} "
                     f"ts {s['ts']} sn {s['sn']} una {s['una']} len {s['len']}")
    for note in rec.get("notes", ()):
        lines.append(f"    note: {note}")
    for f in rec.get("smux", ()):
        text = f"    smux v{f['ver']} {f['cmd']} sid {f['sid']} len {f['len']}"
        if "window" in f:
            text += f" consumed {f['consumed']} window {f['window']}"
        elif "data" in f:
            text += f" {bytes.fromhex(f['data'])!r}" + ("..." if f["len"] > PREVIEW else "")
        lines.append(text)
    if "error" in rec:
        lines.append(f"    error: {rec['error']}")
    return lines


def format_summary(summary: Dict[str, Any]) -> List[str]:
    """The text lines of the totals."""
    c = summary
    lines = [f"{c.get('datagrams', 0)} datagrams; check failed: {c.get('check_failed', 0)}; "
             f"FEC data {c.get('fec_data', 0)}, parity {c.get('fec_parity', 0)}, "
             f"oob {c.get('fec_oob', 0)}; segments: "
             + (", ".join(f"{k} {v}" for k, v in sorted(c["segments"].items())) or "none")]
    for f in c["flows"]:
        lines.append(f"  {f['src']} > {f['dst']} conv {f['conv']:#010x}: "
                     f"{f['segments']} segments")
    for d in c.get("smux", ()):
        lines.append(f"  smux {d['dir']}: {d['stream_bytes']} bytes, {d['frames']} frames"
                     + (f" (stopped: {d['error']})" if "error" in d else ""))
    if c.get("check_failed") and c["check_failed"] == c.get("datagrams"):
        lines.append("every datagram failed the check: wrong --crypt or --key?")
    return lines


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    ap = argparse.ArgumentParser(
        prog="python -m kcpgo dissect", formatter_class=HelpFormatter, epilog=_EXAMPLES,
        description="Decode kcp-go traffic in a pcap/pcapng capture: decrypt, check, FEC, "
                    "every KCP segment, and with --smux kcptun's snappy and smux layers.")
    ap.add_argument("capture", help="a .pcap or .pcapng file")
    ap.add_argument("--crypt", default="aes",
                    help="kcptun's cipher name; 'null' for no crypto header at all")
    ap.add_argument("--key", default="it's a secrect",
                    help="kcptun's passphrase (PBKDF2-derived, as kcptun)")
    ap.add_argument("--datashard", "--ds", type=int, default=0, metavar="N",
                    help="FEC data shards (for group numbers; FEC headers are read anyway)")
    ap.add_argument("--parityshard", "--ps", type=int, default=0, metavar="N",
                    help="FEC parity shards")
    ap.add_argument("--smux", action="store_true",
                    help="also decode kcptun's layers above KCP (snappy, smux frames)")
    ap.add_argument("--port", type=int, help="only datagrams from or to this UDP port")
    ap.add_argument("--json", action="store_true", help="JSON lines instead of text")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Dissect the capture; returns the exit status (2 for a usage error, 1 if the capture
    cannot be read or dpkt is missing, 130 after SIGINT)."""
    ap = build_parser()
    ns = ap.parse_args(argv)
    crypt: Optional[BlockCrypt] = None
    if ns.crypt != "null":
        try:
            crypt = new_crypt(ns.crypt, derive_key(ns.key))
        except (ValueError, TypeError) as e:
            ap.error(f"--crypt {ns.crypt}: {e}")
    if ns.datashard < 0 or ns.parityshard < 0 or ns.datashard + ns.parityshard > 256:
        ap.error("--ds and --ps must be >= 0 and at most 256 together")
    dis = Dissector(crypt, (ns.datashard, ns.parityshard), ns.smux)
    try:
        for when, src, dst, data in read_capture(ns.capture):
            if ns.port is not None and ns.port not in (src[1], dst[1]):
                continue
            rec = dis.datagram(when, src, dst, data)
            if ns.json:
                print(json.dumps({"datagram": rec}))
            else:
                print("\n".join(format_record(rec)))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise                       # the reader left (| head): the dispatcher ends quietly
    except (ImportError, OSError, ValueError) as e:
        print(f"python -m kcpgo dissect: {e}", file=sys.stderr)
        return 1
    summary = dis.summary()
    if ns.json:
        print(json.dumps({"summary": summary}))
    else:
        print("\n".join(["", "summary:"] + format_summary(summary)))
    return 0
