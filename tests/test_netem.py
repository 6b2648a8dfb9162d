"""kcpgo.testing.relay (tools/netem.py): the lossy-link emulator (UDP relay) does what its
counters say, reproducibly."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from kcpgo.testing import Impairment, Relay, RelayProcess, parse_impairment

LOCAL = ("127.0.0.1", 0)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETEM_SCRIPT = os.path.join(ROOT, "tools", "netem.py")


class Sink:
    """An upstream UDP socket that records what arrives (and can answer)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(LOCAL)
        self.address = self.sock.getsockname()

    def collect(self, quiet=0.3, limit=100_000):
        """(data, arrival_time, from) until nothing arrives for ``quiet`` seconds."""
        out = []
        self.sock.settimeout(quiet)
        while len(out) < limit:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                break
            out.append((data, time.monotonic(), addr))
        return out

    def close(self):
        self.sock.close()


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()


def client():
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind(LOCAL)
    return c


def blast(relay, n, size=100, pace_every=0):
    c = client()
    for i in range(n):
        c.sendto(i.to_bytes(4, "big") + bytes(size - 4), relay.address)
        if pace_every and i % pace_every == pace_every - 1:
            time.sleep(0.001)
    return c


def test_parse_impairment_units_and_aliases():
    imp = parse_impairment("loss=10%,delay=25ms,jitter=0.002s,reorder=1%,dup=0.01,"
                           "corrupt=0.5%,rate=20mbit,queue=1000")
    assert imp == Impairment(loss=0.1, delay=25, jitter=2, reorder=0.01, duplicate=0.01,
                             corrupt=0.005, rate=2.5e6, queue=1000)
    assert parse_impairment("rate=2M").rate == 2e6
    assert parse_impairment("") == Impairment()
    with pytest.raises(ValueError):
        parse_impairment("loss=150%")
    with pytest.raises(ValueError):
        parse_impairment("latency=5")


def test_clean_link_forwards_both_ways_per_client_flow(sink):
    with Relay(sink.address) as relay:
        a, b = client(), client()
        a.sendto(b"from a", relay.address)
        b.sendto(b"from b", relay.address)
        got = sink.collect()
        assert sorted(d for d, _, _ in got) == [b"from a", b"from b"]
        srcs = {addr for _, _, addr in got}
        assert len(srcs) == 2 and all(s[0] == "127.0.0.1" for s in srcs)  # one flow per client
        for data, _, addr in got:
            sink.sock.sendto(b"re " + data, addr)
        a.settimeout(2)
        b.settimeout(2)
        assert a.recvfrom(100) == (b"re from a", relay.address)
        assert b.recvfrom(100) == (b"re from b", relay.address)
        assert relay.flows == 2
        a.close()
        b.close()
    c = relay.counters()
    assert c["up"]["received"] == c["up"]["forwarded"] == 2
    assert c["down"]["forwarded"] == 2 and c["down"]["bytes_out"] == len(b"re from a") * 2


def test_loss_is_seeded_and_reproducible(sink):
    runs = []
    for _ in range(2):
        with Relay(sink.address, up=Impairment(loss=0.3), seed=42) as relay:
            c = blast(relay, 2000, pace_every=100)
            got = sink.collect()
            c.close()
        runs.append(sorted(int.from_bytes(d[:4], "big") for d, _, _ in got))
        cnt = relay.counters()["up"]
        assert cnt["received"] == 2000
        assert cnt["dropped"] + cnt["forwarded"] == 2000
        assert 500 <= cnt["dropped"] <= 700             # 30% of 2000, give or take
    assert runs[0] == runs[1]                            # same seed: same datagrams lost


def test_delay_and_jitter_keep_order(sink):
    with Relay(sink.address, up=Impairment(delay=40, jitter=10)) as relay:
        c = client()
        sent = {}
        result = []
        t = threading.Thread(target=lambda: result.extend(sink.collect()))
        t.start()
        for i in range(50):
            sent[i] = time.monotonic()
            c.sendto(i.to_bytes(4, "big"), relay.address)
            time.sleep(0.002)
        t.join()
        got = result
        c.close()
    seq = [int.from_bytes(d[:4], "big") for d, _, _ in got]
    assert seq == list(range(50))                       # jitter alone never reorders
    lat = [t - sent[i] for i, (_, t, _) in zip(seq, got)]
    assert min(lat) >= 0.039 and max(lat) < 0.040 + 0.010 + 0.030


def test_reorder_duplicate_corrupt_counters(sink):
    imp = Impairment(reorder=0.1, reorder_delay=20, duplicate=0.1, corrupt=0.1, corrupt_bits=3,
                     delay=1)
    with Relay(sink.address, up=imp, seed=7) as relay:
        c = blast(relay, 1000, pace_every=20)
        got = sink.collect()
        c.close()
    cnt = relay.counters()["up"]
    assert 50 < cnt["reordered"] < 170 and 50 < cnt["duplicated"] < 150
    assert 60 < cnt["corrupted"] < 170
    assert len(got) == cnt["forwarded"] == 1000 + cnt["duplicated"]
    seq = [int.from_bytes(d[:4], "big") for d, _, _ in got]
    assert sum(1 for x, y in zip(seq, seq[1:]) if y < x) > 10          # really out of order
    damaged = sum(1 for d, _, _ in got if d[4:] != bytes(96))
    assert damaged > 0


def test_corrupt_skip_spares_the_header(sink):
    with Relay(sink.address, up=Impairment(corrupt=1.0, corrupt_skip=4), seed=1) as relay:
        c = blast(relay, 200)
        got = sink.collect()
        c.close()
    assert sorted(int.from_bytes(d[:4], "big") for d, _, _ in got) == list(range(200))
    assert all(d[4:] != bytes(96) for d, _, _ in got)


def test_rate_cap_and_queue_limit(sink):
    # 1 MB/s: 200 x 1000 B takes ~0.2 s through the bottleneck.
    with Relay(sink.address, up=Impairment(rate=1e6)) as relay:
        c = blast(relay, 200, size=1000)
        t0 = time.monotonic()
        got = sink.collect(quiet=0.3)
        c.close()
    assert len(got) == 200
    assert 0.15 < got[-1][1] - t0 < 0.35
    with Relay(sink.address, up=Impairment(rate=1e5, queue=20)) as relay:
        c = blast(relay, 300, size=1000)
        got = sink.collect(quiet=0.5)
        c.close()
    cnt = relay.counters()["up"]
    assert cnt["queue_dropped"] > 200 and len(got) == cnt["forwarded"] < 100


def test_only_loopback_addresses():
    with pytest.raises(ValueError):
        Relay(("10.1.2.3", 9))


def test_cli_subprocess_reports_counters(sink):
    with RelayProcess(sink.address, up=Impairment(loss=0.5), seed=3) as relay:
        c = blast(relay, 400, pace_every=50)
        got = sink.collect()
        c.close()
    stats = relay.final
    assert stats["up"]["received"] == 400
    assert stats["up"]["forwarded"] == len(got) and stats["up"]["dropped"] == 400 - len(got)


@pytest.mark.parametrize("argv", [["-m", "kcpgo.testing.relay"], [NETEM_SCRIPT]],
                         ids=["python-m", "tools-netem"])
def test_cli_prints_listening_then_stats(argv):
    out = subprocess.run([sys.executable, *argv, "--upstream", "127.0.0.1:9", "--duration",
                          "0.2", "--both", "loss=10%,delay=5ms"], capture_output=True,
                         text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("LISTENING 127.0.0.1:") and lines[1].startswith("STATS ")
    assert json.loads(lines[1][6:])["up"]["received"] == 0
    assert "RuntimeWarning" not in out.stderr


def test_testing_package_exports():
    import kcpgo.testing as testing
    from kcpgo.sansio import LinkProfile
    for name in testing.__all__:
        assert getattr(testing, name) is not None, name
    assert testing.Impairment is LinkProfile is testing.LinkProfile
    assert testing.parse_impairment("dup=1%") == LinkProfile(duplicate=0.01)
    assert RelayProcess(("127.0.0.1", 9)).argv[1:3] == ["-m", "kcpgo.testing.relay"]
