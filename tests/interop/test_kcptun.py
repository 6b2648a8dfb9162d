"""Live interop with Debian's kcptun 20210922 (``apt-get install kcptun``; issue 11, item 6).

Library level: ``kcpgo.dial_smux`` -> ``kcptun-server`` -> a TCP echo target, and
``kcptun-client`` -> ``kcpgo.listen_smux`` (our side echoes the streams itself); a dead peer
found by our keepalive; a framing mismatch named on both sides. Tunnel level: our
``python -m kcpgo tunnel client|server`` against the other kcptun binary. And a smoke run of
``tools/bench.py tunnel``.

Settings everywhere are kcptun's defaults (docs/kcptun.md §5.5: ``--crypt aes``, snappy on,
``--smuxver 1``, FEC 10/3, MTU 1350, windows 128/512 client and 1024/1024 server; our side
``kcpgo.KCPTUN_CLIENT``/``KCPTUN_SERVER``, kcptun.md §5.2) with ``--mode fast3`` and our key,
and the same with ``--nocomp --smuxver 2``. Payloads are random (incompressible, so snappy
sends uncompressed chunks, kcptun.md §3.2), 256 KiB to 1.25 MiB per connection, several
connections at once; every upload is hashed at its receiver and every echo compared with
what was sent.

Skipped with the reason when the kcptun binaries are missing (``.ci/run`` installs them); the
tunnel-level tests also skip while ``kcpgo/cli/tunnel.py`` is absent.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time

import gevent
import pytest

import kcpgo
from kcpgo.snmp import Snmp

from tests.support.kcptun import (EchoServer, TunnelProcess, echo_exchange, kcptun_available,
                                  payload, tunnel_cli_available)

KCPTUN_OK, KCPTUN_REASON = kcptun_available()
CLI_OK, CLI_REASON = tunnel_cli_available()
pytestmark = pytest.mark.skipif(not KCPTUN_OK, reason=KCPTUN_REASON)
needs_cli = pytest.mark.skipif(not CLI_OK, reason=CLI_REASON)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY = "kcpgo interop"
#: Flags every kcptun process (and our CLI) gets: kcptun's defaults plus fast3 and our key
#: (docs/kcptun.md §5.5); --quiet only drops the stream open/close lines (kcptun.md §5.3).
COMMON = ["--key", KEY, "--crypt", "aes", "--mode", "fast3", "--quiet"]
#: (extra kcptun flags, the dial_smux/listen_smux settings they mean, the framing text kcpgo
#: reports for them). kcptun 20210922's defaults: snappy on, smux v1 (kcptun.md §5.5); the
#: framing text is kcptun's flags for the framing (kcpgo.sansio.kcptun_detect.describe).
FRAMINGS = [
    pytest.param([], dict(smux_version=1, compression=True), "--smuxver 1", id="defaults"),
    pytest.param(["--nocomp", "--smuxver", "2"], dict(smux_version=2, compression=False),
                 "--smuxver 2 --nocomp", id="nocomp-smuxver2"),
]
#: Concurrent connections and their sizes (bytes each way).
SIZES = [256 * 1024, 512 * 1024, 768 * 1024, 1024 * 1024, 1280 * 1024, 384 * 1024]


def client_options() -> kcpgo.Options:
    """kcptun-client's KCP settings (kcptun.md §5.2) with aes and our key, fast3."""
    return kcpgo.KCPTUN_CLIENT.replace(crypt="aes", key=KEY, mode="fast3", snmp=Snmp())


def server_options() -> kcpgo.Options:
    """kcptun-server's KCP settings (kcptun.md §5.2: windows 1024/1024)."""
    return kcpgo.KCPTUN_SERVER.replace(crypt="aes", key=KEY, mode="fast3", snmp=Snmp())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stream_echo_exchange(stream, data: bytes) -> bytes:
    """Send ``data`` on an smux stream (a greenlet) while reading the echo; close after."""
    writer = gevent.spawn(stream.sendall, data)
    got = bytearray()
    while len(got) < len(data):
        piece = stream.recv(1 << 18)
        if not piece:
            break
        got += piece
    writer.get(timeout=30)
    stream.close()
    return bytes(got)


def echo_through(address, n_conns=len(SIZES), seed=0):
    """``n_conns`` concurrent TCP connections to ``address`` (OS threads of the hub's pool,
    so a gevent hub in this process keeps running); returns ``[(sent, echoed), ...]``."""
    pool = gevent.get_hub().threadpool
    datas = [payload(SIZES[i % len(SIZES)], seed + i) for i in range(n_conns)]
    jobs = [pool.spawn(echo_exchange, address, d, 60.0) for d in datas]
    return [(d, j.get(timeout=90)) for d, j in zip(datas, jobs)]


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        gevent.sleep(0.02)


# =========================================================================== library level


@pytest.mark.parametrize("flags,smux,framing", FRAMINGS)
def test_dial_smux_to_kcptun_server(flags, smux, framing):
    """Our client, kcptun's server: one KCP session, one stream per echo exchange, opened
    concurrently. Stream ids 3, 5, 7, ... (kcptun.md §4.4); each stream's bytes reach the
    target intact (hashed there) and come back intact; kcptun dials the target once per
    stream (kcptun.md §5.4, 5.6)."""
    with EchoServer() as echo, TunnelProcess("kcptun", "server", echo.address,
                                             COMMON + flags) as srv:
        with kcpgo.dial_smux(srv.address, client_options(), timeout=30, **smux) as sess:
            assert sess.framing == framing
            streams = [sess.open_stream() for _ in SIZES]
            assert [s.sid for s in streams] == [3 + 2 * i for i in range(len(SIZES))]
            datas = [payload(n, i) for i, n in enumerate(SIZES)]
            jobs = [gevent.spawn(stream_echo_exchange, s, d) for s, d in zip(streams, datas)]
            echoed = [j.get(timeout=60) for j in jobs]
            for d, e in zip(datas, echoed):
                assert len(e) == len(d) and sha(e) == sha(d)
            # kcptun closes the target connection at our FIN (kcptun.md §5.3); its EOF
            # records the upload's hash at the target.
            wait_for(lambda: len(echo.received) == len(SIZES), 20, "the target's EOFs")
            assert sorted(echo.received) == sorted((len(d), sha(d)) for d in datas)
            assert echo.connections == len(SIZES)
            assert sess.error is None and not sess.closed
            assert sess.snmp.InCsumErrors == 0 and sess.snmp.KCPInErrors == 0


def serve_echo(listener, received, stop):
    """Our server side: accept streams, echo each in its own greenlet, record the upload."""
    def one(stream):
        h, n = hashlib.sha256(), 0
        with stream:
            while True:
                data = stream.recv(1 << 18)
                if not data:
                    break
                h.update(data)
                n += len(data)
                stream.sendall(data)
        received.append((n, h.hexdigest(), stream.sid, stream.session.framing))

    while not stop:
        try:
            stream, _ = listener.accept()
        except OSError:
            return
        gevent.spawn(one, stream)


@pytest.mark.parametrize("auto", [False, True], ids=["fixed", "autodetect"])
@pytest.mark.parametrize("flags,smux,framing", FRAMINGS)
def test_kcptun_client_to_listen_smux(flags, smux, framing, auto):
    """kcptun's client, our server (echoing streams itself): every TCP connection to
    kcptun-client arrives as one stream (ids 3, 5, ..., kcptun.md §4.4), with the bytes
    intact each way; kcptun's FIN at the end of each connection is our EOF (kcptun.md §5.3).
    ``autodetect``: ``listen_smux(smux_version=None, compression=None)`` follows the client's
    first bytes (kcptun.md §3.3) and reports the framing as kcptun's flags."""
    settings = dict(smux_version=None, compression=None) if auto else smux
    opts = server_options()
    with kcpgo.listen_smux(("127.0.0.1", 0), opts, **settings) as ln:
        received, stop = [], []
        server = gevent.spawn(serve_echo, ln, received, stop)
        addr = ln.getsockname()[:2]
        with TunnelProcess("kcptun", "client", addr, COMMON + flags) as cli:
            results = echo_through(cli.address)
            for sent, echoed in results:
                assert len(echoed) == len(sent) and sha(echoed) == sha(sent)
            wait_for(lambda: len(received) == len(SIZES), 20, "kcptun-client's FINs")
        stop.append(True)
        assert sorted(r[:2] for r in received) == sorted((len(s), sha(s)) for s, _ in results)
        # one KCP session (kcptun --conn 1), so the ids are 3, 5, ... in some order
        assert sorted(r[2] for r in received) == [3 + 2 * i for i in range(len(SIZES))]
        assert {r[3] for r in received} == {framing}
        assert opts.snmp.InCsumErrors == 0 and opts.snmp.KCPInErrors == 0
    server.kill()


def test_dead_kcptun_server_detected_by_keepalive():
    """kcptun-server stopped (SIGSTOP: its socket stays bound, nothing answers) while our
    stream waits in recv: our keepalive (NOP every 0.25 s, timeout 1 s) notices that no frame
    arrived during a whole check period and fails the stream with ConnectionResetError naming
    the keepalive timeout (kcptun.md §4.6, 4.9, 11: checklist item 8), within one to two
    periods of the last frame. (With a timeout above ~3 s, KCP's dead-link rule, 20
    transmissions of one segment, would fire first: also a ConnectionResetError, naming that
    instead; seen live with keepalive=0.5, keepalive_timeout=2.)"""
    with EchoServer() as echo, TunnelProcess("kcptun", "server", echo.address,
                                             COMMON) as srv:
        with kcpgo.dial_smux(srv.address, client_options(), smux_version=1, compression=True,
                             keepalive=0.25, keepalive_timeout=1.0, timeout=30) as sess:
            stream = sess.open_stream()
            stream.sendall(b"ping")
            assert stream.recv(16) == b"ping"
            srv.signal(signal.SIGSTOP)
            t0 = time.monotonic()
            with pytest.raises(ConnectionResetError) as info:
                stream.recv(16)
            elapsed = time.monotonic() - t0
            assert "keepalive" in str(info.value), str(info.value)
            assert 0.9 <= elapsed <= 10, elapsed
            assert sess.closed and "keepalive" in str(sess.error)
            # every stream of the session fails the same way (kcptun.md §4.9)
            with pytest.raises(ConnectionResetError):
                sess.open_stream()


def test_framing_mismatch_client_side_names_both_flags(caplog):
    """Our v1 client against ``kcptun-server --smuxver 2``: kcptun logs ``invalid protocol``
    and closes the session silently; kcp-go 5.6.1 resurrects it and its NOP (v2) is the first
    thing we hear (kcptun.md §4.9, 9.4). The resurrection needs a datagram from us after
    kcptun closed the session: our NOP every 0.5 s provides it (with kcptun's 10 s it takes
    up to 10 s); kcptun's ``--keepalive 1`` makes its NOP come after 1 s instead of 10. Our
    stream fails naming both sides' kcptun flags."""
    caplog.set_level(logging.WARNING, logger="kcpgo.smux")
    with EchoServer() as echo, TunnelProcess(
            "kcptun", "server", echo.address,
            COMMON + ["--smuxver", "2", "--keepalive", "1"]) as srv:
        with kcpgo.dial_smux(srv.address, client_options(), smux_version=1, compression=True,
                             keepalive=0.5, timeout=20) as sess:
            stream = sess.open_stream()
            stream.sendall(b"hello")
            with pytest.raises(ConnectionResetError) as info:
                stream.recv(16)
        wait_for(lambda: "invalid protocol" in srv.output(), 5, "kcptun's log line")
    text = str(info.value)
    assert "framing mismatch" in text, text
    assert "peer speaks kcptun's --smuxver 2" in text and "this side --smuxver 1" in text, text
    logged = [r.getMessage() for r in caplog.records if r.name == "kcpgo.smux"]
    assert any("--smuxver 2" in m and "--smuxver 1" in m for m in logged), logged


def test_framing_mismatch_server_side_is_logged_with_both_flags(caplog):
    """kcptun-client (``--smuxver 1``, snappy: its defaults) against our
    ``listen_smux(smux_version=2, compression=False)``: the client's first bytes say what it
    speaks (kcptun.md §3.3), so our server logs the mismatch with both sides' flags instead
    of kcptun's silence, and accepts no stream."""
    caplog.set_level(logging.WARNING, logger="kcpgo.smux")
    with kcpgo.listen_smux(("127.0.0.1", 0), server_options(), smux_version=2,
                           compression=False) as ln:
        ln.settimeout(0.05)
        addr = ln.getsockname()[:2]
        with TunnelProcess("kcptun", "client", addr, COMMON) as cli:
            job = gevent.get_hub().threadpool.spawn(echo_exchange, cli.address, b"x" * 100,
                                                    1.0)
            def mismatch_logged():
                return any("framing mismatch" in r.getMessage() for r in caplog.records)
            wait_for(mismatch_logged, 10, "the mismatch log line")
            with pytest.raises(TimeoutError):
                ln.accept()
            try:
                job.get(timeout=10)
            except OSError:
                pass            # the TCP client times out: nothing ever comes back
    logged = [r.getMessage() for r in caplog.records if "framing mismatch" in r.getMessage()]
    assert any("--smuxver 1" in m and "--smuxver 2 --nocomp" in m for m in logged), logged


# =========================================================================== tunnel level


@needs_cli
@pytest.mark.parametrize("flags,smux,framing", FRAMINGS)
def test_our_tunnel_client_to_kcptun_server(flags, smux, framing):
    """``python -m kcpgo tunnel client`` -> kcptun-server -> echo target, kcptun's flag names
    (docs/kcptun.md §5.5): concurrent TCP connections through the tunnel, each echoed intact
    and each upload hashed at the target (kcptun dials it once per stream, kcptun.md §5.4)."""
    with EchoServer() as echo, \
            TunnelProcess("kcptun", "server", echo.address, COMMON + flags) as srv, \
            TunnelProcess("kcpgo", "client", srv.address, COMMON + flags) as cli:
        results = echo_through(cli.address, seed=100)
        for sent, echoed in results:
            assert len(echoed) == len(sent) and sha(echoed) == sha(sent), cli.output()[-2000:]
        wait_for(lambda: len(echo.received) == len(SIZES), 20, "the target's EOFs")
        assert sorted(echo.received) == sorted((len(s), sha(s)) for s, _ in results)
        assert cli.proc.poll() is None and srv.proc.poll() is None


@needs_cli
@pytest.mark.parametrize("flags,smux,framing", FRAMINGS)
def test_kcptun_client_to_our_tunnel_server(flags, smux, framing):
    """kcptun-client -> ``python -m kcpgo tunnel server`` -> echo target: the same checks in
    the other direction (our server dials the target per stream, kcptun.md §5.4, 5.6)."""
    with EchoServer() as echo, \
            TunnelProcess("kcpgo", "server", echo.address, COMMON + flags) as srv, \
            TunnelProcess("kcptun", "client", srv.address, COMMON + flags) as cli:
        results = echo_through(cli.address, seed=200)
        for sent, echoed in results:
            assert len(echoed) == len(sent) and sha(echoed) == sha(sent), srv.output()[-2000:]
        wait_for(lambda: len(echo.received) == len(SIZES), 20, "the target's EOFs")
        assert sorted(echo.received) == sorted((len(s), sha(s)) for s, _ in results)
        assert cli.proc.poll() is None and srv.proc.poll() is None


@needs_cli
def test_our_tunnel_client_recovers_from_a_kcptun_server_restart():
    """D62, a new user's finding: kcptun-server restarted on its port while our tunnel client
    kept its session. kcp-go's new listener makes a new session for our address, which
    acknowledges our segments with una 0 and sends its data from sn 0 again, below ours:
    nothing can be delivered either way, yet datagrams keep coming, so neither the dead link
    nor the keepalive fired for ~58-89 s (kcptun's own client: 58-59 s), and nothing was
    logged. Expected: the client sees the restart, logs it, dials a new session, and a new
    connection through it is echoed within 15 s of the restart (measured: 4 s)."""
    with EchoServer() as echo:
        srv = TunnelProcess("kcptun", "server", echo.address, COMMON).start()
        try:
            with TunnelProcess("kcpgo", "client", srv.address,
                               COMMON + ["--conn", "1"]) as cli:
                data = payload(100_000, 1)
                assert echo_exchange(cli.address, data, timeout=20) == data
                port = srv.address[1]
                srv.close()
                srv = TunnelProcess("kcptun", "server", echo.address, COMMON).start(port=port)
                t0 = time.monotonic()
                echoed = b""
                while not echoed and time.monotonic() - t0 < 15:
                    try:
                        echoed = echo_exchange(cli.address, b"hello", timeout=3)
                    except OSError:
                        time.sleep(0.2)
                assert echoed == b"hello", cli.output()[-3000:]
                assert "KCP session restarted" in cli.output(), cli.output()[-3000:]
        finally:
            srv.close()


# =========================================================================== benchmark tool


def test_bench_tunnel_smoke():
    """``tools/bench.py tunnel`` end to end with tiny sizes (no thresholds: the figures are
    measured with the tool, never asserted). Without our tunnel CLI only kcptun's pair runs."""
    pairs = "kcptun,ours-kcptun,ours" if CLI_OK else "kcptun"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench.py"), "tunnel",
                          "--runs", "1", "--mb", "2", "--count", "50", "--warmup", "5",
                          "--pairs", pairs, "--json"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert doc["flags"][:2] == ["--mode", "fast3"]
    names = [r["pair"] for r in doc["results"]]
    assert names == pairs.split(",")
    for r in doc["results"]:
        med = r["median"]
        assert med["upload_MBps"] > 0 and 0 < med["rr_p50_us"] <= med["rr_p99_us"]
        assert r["runs"][0]["bytes"] == 2_000_000
    if CLI_OK:
        assert set(doc["ratios"]) == {"ours-kcptun/kcptun", "ours/kcptun"}
