"""``python -m kcpgo dissect``: a capture of real kcpgo <-> kcpgo traffic on loopback (AES, FEC
10/3), recorded by a forwarding tap and written as pcap/pcapng with dpkt, is decoded: every
datagram passes the check, every KCP segment's fields are printed, and with ``--smux``
kcptun's snappy and smux layers come out in order. Source: issue 14 deliverable 1."""
from __future__ import annotations

import json
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

import kcpgo
from kcpgo.cli import dissect
from kcpgo.sansio.wire import decode_segments

dpkt = pytest.importorskip("dpkt", reason="dissect reads captures with dpkt (the cli extra)")

ROOT = Path(__file__).resolve().parent.parent
KEY = "tap secret"
SESSION = dict(crypt="aes", key=KEY, data_shards=10, parity_shards=3, mode="fast3",
               stream=True, window=(128, 128))

Datagram = Tuple[float, Tuple[str, int], Tuple[str, int], bytes]


class Tap:
    """A UDP forwarder on loopback that records every datagram, both ways, with the addresses
    a capture on ``lo`` would show (client <-> tap front, tap upstream socket <-> server)."""

    def __init__(self, upstream: Tuple[str, int]) -> None:
        self.upstream = upstream
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.address = self.front.getsockname()
        self.client: Any = None
        self.seen: List[Datagram] = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.front, selectors.EVENT_READ)
        sel.register(self.back, selectors.EVENT_READ)
        while not self.stop:
            for key, _ in sel.select(0.05):
                data, addr = key.fileobj.recvfrom(65535)
                now = time.time()
                if key.fileobj is self.front:
                    self.client = addr
                    self.seen.append((now, addr, self.address, data))
                    self.back.sendto(data, self.upstream)
                elif self.client is not None:
                    self.seen.append((now, self.upstream, self.back.getsockname(), data))
                    self.front.sendto(data, self.client)
        sel.close()

    def close(self) -> None:
        self.stop = True
        self.thread.join(5)
        self.front.close()
        self.back.close()


def write_capture(path: Path, datagrams: List[Datagram], ng: bool = False) -> None:
    """The datagrams as Ethernet/IPv4/UDP frames in a pcap (or pcapng) file."""
    with open(path, "wb") as fh:
        w = (dpkt.pcapng.Writer if ng else dpkt.pcap.Writer)(fh, linktype=dpkt.pcap.DLT_EN10MB)
        for when, src, dst, data in datagrams:
            udp = dpkt.udp.UDP(sport=src[1], dport=dst[1], data=data)
            udp.ulen = len(udp)
            ip = dpkt.ip.IP(src=socket.inet_aton(src[0]), dst=socket.inet_aton(dst[0]),
                            p=dpkt.ip.IP_PROTO_UDP, data=udp)
            ip.len = len(ip)
            eth = dpkt.ethernet.Ethernet(src=b"\x00" * 6, dst=b"\x00" * 6,
                                         type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
            w.writepkt(bytes(eth), ts=when)


def record_echo(payload: bytes) -> List[Datagram]:
    """A KCP echo of ``payload`` through the tap (AES, FEC 10/3, fast3)."""
    with kcpgo.listen(("127.0.0.1", 0), **SESSION) as ln:
        tap = Tap(ln.getsockname()[:2])
        try:
            with kcpgo.dial(tap.address, timeout=10, **SESSION) as c:
                c.sendall(payload)
                s, _ = ln.accept()
                got = b""
                while len(got) < len(payload):
                    got += s.recv(65536)
                s.sendall(got)
                back = b""
                while len(back) < len(payload):
                    back += c.recv(65536)
                assert back == payload
                s.drain(timeout=5)
                c.drain(timeout=5)
                s.close()
            time.sleep(0.2)
        finally:
            tap.close()
    return tap.seen


def record_smux(compression: bool) -> List[Datagram]:
    """One kcptun-style smux stream (v1, snappy on or off) through the tap."""
    with kcpgo.listen_smux(("127.0.0.1", 0), smux_version=1, compression=compression,
                           **SESSION) as ln:
        tap = Tap(ln.getsockname()[:2])
        try:
            with kcpgo.dial_smux(tap.address, smux_version=1, compression=compression,
                                 timeout=10, **SESSION) as sess:
                st = sess.open_stream()
                st.sendall(b"hello smux " * 100)
                srv, _ = ln.accept()
                got = b""
                while len(got) < 1100:
                    got += srv.recv(65536)
                srv.sendall(b"HELLO")
                assert st.recv(100) == b"HELLO"
                st.close()
                srv.close()
                time.sleep(0.3)
        finally:
            tap.close()
    return tap.seen


def run_dissect(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kcpgo", "dissect", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("ng", [False, True], ids=["pcap", "pcapng"])
def test_every_segment_of_an_aes_fec_capture_is_printed(tmp_path: Path, ng: bool) -> None:
    datagrams = record_echo(bytes(range(256)) * 200)
    cap = tmp_path / ("echo.pcapng" if ng else "echo.pcap")
    write_capture(cap, datagrams, ng)
    # What the capture holds, decoded here independently with the library's own codec.
    crypt = kcpgo.crypt.new("aes", kcpgo.derive_key(KEY))
    expected: List[Dict[str, int]] = []
    parity = 0
    for _, _, _, wire in datagrams:
        plain = crypt.open(wire)
        assert plain is not None
        if plain[4] == 0xF2:
            parity += 1
            continue
        size = plain[6] | plain[7] << 8
        for s in decode_segments(plain[8:6 + size]):
            expected.append(dict(conv=s.conv, cmd=s.cmd, frg=s.frg, wnd=s.wnd, ts=s.ts, sn=s.sn,
                                 una=s.una, len=len(s.data)))
    assert parity > 0 and expected

    out = run_dissect("--crypt", "aes", "--key", KEY, "--ds", "10", "--ps", "3", "--json",
                      str(cap))
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    dgrams = [r["datagram"] for r in records if "datagram" in r]
    assert len(dgrams) == len(datagrams)
    assert all(d["check"] == "ok" for d in dgrams)
    names = {81: "PUSH", 82: "ACK", 83: "WASK", 84: "WINS"}
    got = [s for d in dgrams for s in d.get("segments", ())]
    assert got == [dict(e, cmd=names[e["cmd"]]) for e in expected]
    fec = [d["fec"] for d in dgrams]
    assert sum(f["type"] == "parity" for f in fec) == parity
    assert all(f["shard"] == f["seqid"] % 13 for f in fec)
    summary = records[-1]["summary"]
    assert summary["datagrams"] == len(datagrams) and "check_failed" not in summary

    text = run_dissect("--crypt", "aes", "--key", KEY, "--ds", "10", "--ps", "3", str(cap))
    assert text.returncode == 0, text.stderr
    seg_lines = [ln.split() for ln in text.stdout.splitlines() if ln.startswith("    PUSH")
                 or ln.startswith("    ACK")]
    assert len(seg_lines) == len(expected)
    first = expected[0]
    assert seg_lines[0] == [names[first["cmd"]], "conv", f"{first['conv']:#010x}", "frg",
                            str(first["frg"]), "wnd", str(first["wnd"]), "ts", str(first["ts"]),
                            "sn", str(first["sn"]), "una", str(first["una"]), "len",
                            str(first["len"])]
    assert "| fec parity seqid" in text.stdout and "summary:" in text.stdout


def test_wrong_key_is_reported(tmp_path: Path) -> None:
    cap = tmp_path / "echo.pcap"
    write_capture(cap, record_echo(b"x" * 5000))
    out = run_dissect("--crypt", "aes", "--key", "not it", str(cap))
    assert out.returncode == 0, out.stderr
    assert "check FAILED" in out.stdout and "wrong --crypt or --key?" in out.stdout


@pytest.mark.parametrize("compression", [True, False], ids=["snappy", "nocomp"])
def test_smux_layers_are_decoded_in_order(tmp_path: Path, compression: bool) -> None:
    cap = tmp_path / "smux.pcap"
    write_capture(cap, record_smux(compression))
    out = run_dissect("--crypt", "aes", "--key", KEY, "--smux", "--json", str(cap))
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    frames = [f for r in records if "datagram" in r for f in r["datagram"].get("smux", ())]
    notes = " ".join(n for r in records if "datagram" in r for n in r["datagram"].get("notes",
                                                                                     ()))
    assert ("(kcptun compression on)" in notes) == compression
    assert ("(kcptun --nocomp)" in notes) != compression and "smux version 1" in notes
    client = [f for f in frames if f["cmd"] != "NOP"]
    syn = next(f for f in client if f["cmd"] == "SYN")
    psh = [f for f in client if f["cmd"] == "PSH" and f["sid"] == syn["sid"]]
    assert sum(f["len"] for f in psh) == 1100 + 5
    assert bytes.fromhex(psh[0]["data"]).startswith(b"hello smux")
    assert any(f["cmd"] == "FIN" for f in client)
    assert all("error" not in d for d in records[-1]["summary"]["smux"])


def test_usage_errors_and_missing_file(tmp_path: Path) -> None:
    assert run_dissect("--crypt", "rot13", str(tmp_path / "x.pcap")).returncode == 2
    out = run_dissect(str(tmp_path / "missing.pcap"))
    assert out.returncode == 1 and "missing.pcap" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "junk.pcap").write_bytes(b"not a capture at all")
    out = run_dissect(str(tmp_path / "junk.pcap"))
    assert out.returncode == 1 and "not a pcap" in out.stderr


def test_read_capture_needs_dpkt_says_how(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "dpkt", None)
    with pytest.raises(ImportError, match="pip install"):
        next(dissect.read_capture(str(tmp_path / "x.pcap")))
