"""``python -m kcpgo dissect``: a capture of real kcpgo <-> kcpgo traffic on loopback (AES, FEC
10/3), recorded by a forwarding tap and written as pcap/pcapng with dpkt, is decoded: every
datagram passes the check, every KCP segment's fields are printed, and with ``--smux``
kcptun's snappy and smux layers come out in order. ``python -m kcpgo netem --pcap`` records
such a capture itself (the README's dissect example, without root or tcpdump). Source: issue
14 deliverable 1."""
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
from kcpgo.cli import dissect, netem
from kcpgo.cli.pcap import udp_frame, write_capture
from kcpgo.sansio.wire import decode_segments
from kcpgo.testing import read_line
from tests.support.children import child_env, reap

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


def echo(ln: Any, address: Tuple[str, int], payload: bytes) -> Tuple[int, int]:
    """A KCP echo of ``payload``, 64 KiB at a time (less than a window, so the sender never
    waits for a reader), from a client that dials ``address`` (the listener ``ln`` or a
    relay in front of it); returns the session's conv and the client's port."""
    with kcpgo.dial(address, timeout=10, **SESSION) as c:
        s = None
        for i in range(0, len(payload), 65536):
            chunk = payload[i:i + 65536]
            c.sendall(chunk)
            if s is None:
                s, _ = ln.accept()
            got = b""
            while len(got) < len(chunk):
                got += s.recv(65536)
            s.sendall(got)
            back = b""
            while len(back) < len(chunk):
                back += c.recv(65536)
            assert back == chunk
        assert s is not None
        s.drain(timeout=5)
        c.drain(timeout=5)
        conv = s.conv
        s.close()
        port = c.getsockname()[1]
    time.sleep(0.2)
    return conv, port


def record_echo(payload: bytes) -> List[Datagram]:
    """A KCP echo of ``payload`` through the tap (AES, FEC 10/3, fast3)."""
    with kcpgo.listen(("127.0.0.1", 0), **SESSION) as ln:
        tap = Tap(ln.getsockname()[:2])
        try:
            echo(ln, tap.address, payload)
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


def test_a_reader_that_leaves_ends_the_command_quietly(tmp_path: Path) -> None:
    """``dissect capture | head -1``: the pipe's reader leaves after one line. Expected: exit
    141 (128 + SIGPIPE, what a shell reports for a C tool killed by SIGPIPE) and nothing on
    stderr; before, "python -m kcpgo dissect: [Errno 32] Broken pipe" and status 1."""
    cap = tmp_path / "echo.pcap"
    write_capture(cap, record_echo(bytes(range(256)) * 200))
    proc = subprocess.Popen([sys.executable, "-m", "kcpgo", "dissect", "--crypt", "aes",
                             "--key", KEY, str(cap)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith(b"#1 ")
        proc.stdout.close()
        assert proc.wait(timeout=30) == 141
        assert proc.stderr is not None and proc.stderr.read() == b""
    finally:
        reap(proc, kill=True)


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


def test_netem_pcap_records_both_directions_for_dissect(tmp_path: Path) -> None:
    """``netem --pcap`` around an echo: the file holds every datagram netem received (lost
    ones too), with the client's addresses, and dissect decodes both directions."""
    cap = tmp_path / "netem.pcap"
    with kcpgo.listen(("127.0.0.1", 0), **SESSION) as ln:
        relay = subprocess.Popen(
            [sys.executable, "-m", "kcpgo", "netem", "--upstream",
             "127.0.0.1:%d" % ln.getsockname()[1], "--pcap", str(cap), "--loss", "1%",
             "--seed", "3", "--stdin-eof"], cwd=ROOT, env=child_env(), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = read_line(relay.stdout, 30)
            assert line.startswith("LISTENING 127.0.0.1:"), line
            front = ("127.0.0.1", int(line.split(":")[1]))
            conv, port = echo(ln, front, bytes(range(256)) * 1000)
            out, err = relay.communicate(timeout=20)          # stdin closed: netem stops
        finally:
            reap(relay, kill=True)
    assert relay.returncode == 0, err
    stats = json.loads(out.decode().split("STATS ", 1)[1])
    received = stats["up"]["received"] + stats["down"]["received"]
    assert stats["up"]["dropped"] > 0            # seed 3 drops the 35th datagram up, at least
    assert f"netem: {received} datagrams written to {cap}" in err.decode()

    result = run_dissect("--crypt", "aes", "--key", KEY, "--ds", "10", "--ps", "3", "--json",
                         "--port", str(front[1]), str(cap))
    assert result.returncode == 0, result.stderr
    records = [json.loads(x) for x in result.stdout.splitlines()]
    dgrams = [r["datagram"] for r in records if "datagram" in r]
    assert len(dgrams) == received and all(d["check"] == "ok" for d in dgrams)
    client, server = f"127.0.0.1:{port}", f"127.0.0.1:{front[1]}"
    up = {(s["cmd"], s["conv"]) for d in dgrams if (d["src"], d["dst"]) == (client, server)
          for s in d.get("segments", ())}
    down = {(s["cmd"], s["conv"]) for d in dgrams if (d["src"], d["dst"]) == (server, client)
            for s in d.get("segments", ())}
    assert up == down == {("PUSH", conv), ("ACK", conv)}
    assert sum(1 for d in dgrams if d["src"] == client) == stats["up"]["received"]
    flows = records[-1]["summary"]["flows"]
    assert {(f["src"], f["dst"], f["conv"]) for f in flows} == {(client, server, conv),
                                                                 (server, client, conv)}


def test_netem_pcap_without_dpkt_is_a_usage_error(monkeypatch: Any, capsys: Any,
                                                  tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "dpkt", None)
    with pytest.raises(SystemExit) as info:
        netem.main(["--upstream", "127.0.0.1:9", "--pcap", str(tmp_path / "x.pcap")])
    assert info.value.code == 2
    assert "--pcap: writing captures needs dpkt: pip install" in capsys.readouterr().err
    assert not (tmp_path / "x.pcap").exists()


def test_pcap_writer_round_trip(tmp_path: Path) -> None:
    """What the shared writer produces is what read_capture gives back, pcap and pcapng."""
    datagrams = [(1.5, ("127.0.0.1", 1), ("127.0.0.2", 2), b""),
                 (2.25, ("127.0.0.3", 40000), ("127.0.0.1", 65535), bytes(range(256)) * 6)]
    for name, ng in (("a.pcap", False), ("a.pcapng", True)):
        assert write_capture(tmp_path / name, datagrams, ng) == 2
        assert list(dissect.read_capture(str(tmp_path / name))) == datagrams
    frame = udp_frame(("127.0.0.1", 5), ("127.0.0.1", 6), b"abc")
    assert dpkt.dpkt.in_cksum(frame[14:34]) == 0                  # a valid IPv4 checksum
