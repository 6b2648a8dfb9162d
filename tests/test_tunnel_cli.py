"""``python -m kcpgo tunnel client|server`` (kcpgo/cli): kcptun's flags and defaults, the JSON
config, ``KCPTUN_KEY``, cipher names, the copy's close rules, and ours <-> ours end to end in
child processes (docs/kcptun.md §5.3-5.6, §6 and kcptun.md §11).

Expected values come from kcptun's flag table (docs/kcptun.md §5.5: 20210922 defaults; §6 for
the newest kcptun's ``--closewait``, ``null``, ``aes-128-gcm``) and from kcptun's sources as
the spec describes them (``-c`` overrides the command line; unknown ``--crypt`` -> aes).
Live interop with the kcptun binaries is tests/interop/test_kcptun.py.
"""
from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, List

import gevent
import gevent.socket
import pytest

from kcpgo.cli import kcptun_config as kc
from kcpgo.cli import main as cli_main
from kcpgo.cli.pipe import Pipe
from kcpgo.cli.snmplog import go_time_format, snmp_path, write_record
from kcpgo.cli.tunnel import split_host_port
from kcpgo.snmp import Snmp
from tests.support.kcptun import EchoServer, TunnelProcess, echo_exchange, payload

NO_ENV: dict = {}


def parse(role: str, *argv: str, env: dict = NO_ENV) -> kc.TunnelConfig:
    return kc.parse(role, list(argv), environ=env)


# --------------------------------------------------------------------------- flags


#: docs/kcptun.md §5.5 (client / server 20210922) and §6 (closewait: newest kcptun).
CLIENT_DEFAULTS = dict(localaddr=":12948", remoteaddr="vps:29900", key="it's a secrect",
                       crypt="aes", mode="fast", conn=1, autoexpire=0, scavengettl=600,
                       mtu=1350, sndwnd=128, rcvwnd=512, datashard=10, parityshard=3, dscp=0,
                       nocomp=False, acknodelay=False, nodelay=0, interval=50, resend=0, nc=0,
                       sockbuf=4194304, smuxver=1, smuxbuf=4194304, streambuf=2097152,
                       keepalive=10, snmplog="", snmpperiod=60, log="", quiet=False,
                       closewait=0)
SERVER_DEFAULTS = dict(CLIENT_DEFAULTS, listen=":29900", target="127.0.0.1:12948",
                       sndwnd=1024, rcvwnd=1024, closewait=0, smuxver="auto")
for _k in ("localaddr", "remoteaddr", "conn", "autoexpire", "scavengettl"):
    del SERVER_DEFAULTS[_k]


@pytest.mark.parametrize("role,expected", [("client", CLIENT_DEFAULTS),
                                           ("server", SERVER_DEFAULTS)])
def test_defaults_per_role(role: str, expected: dict) -> None:
    cfg = parse(role)
    got = {k: getattr(cfg, k) for k in expected}
    assert got == expected
    assert cfg.warnings == []
    # kcptun.md §5.2: stream mode, write delay off, windows, MTU, FEC of the role
    opts = kc.session_options(cfg)
    assert (opts.stream, opts.write_delay, opts.mtu, opts.mode) == (True, False, 1350, "fast")
    assert opts.window == (expected["sndwnd"], expected["rcvwnd"])
    assert (opts.data_shards, opts.parity_shards) == (10, 3)
    assert opts.block is not None and opts.block.name == "aes"


def test_role_flags_are_separate() -> None:
    """-l is --localaddr on the client and --listen on the server; -r/-t likewise; the other
    role's long flags are refused as kcptun's urfave/cli does."""
    c = parse("client", "-l", "127.0.0.1:1", "-r", "h:2")
    s = parse("server", "-l", ":3", "-t", "/run/x.sock")
    assert (c.localaddr, c.remoteaddr) == ("127.0.0.1:1", "h:2")
    assert (s.listen, s.target) == (":3", "/run/x.sock")
    with pytest.raises(SystemExit):
        parse("client", "--target", "x:1")
    with pytest.raises(SystemExit):
        parse("server", "--conn", "2")


def test_go_style_spellings() -> None:
    """Go's flag package (under urfave/cli): one or two dashes for any name, ``=value`` or a
    separate value (taken verbatim, even when it starts with a dash), bool flags with an
    optional ``=true/false``, aliases -ds/-ps."""
    cfg = parse("client", "-localaddr=:1", "--remoteaddr", "h:9", "-ds", "0", "--ps=0",
                "-nocomp", "--acknodelay=false", "-key", "-dash-", "--mtu=0x400", "-quiet=true")
    assert (cfg.localaddr, cfg.remoteaddr, cfg.key) == (":1", "h:9", "-dash-")
    assert (cfg.datashard, cfg.parityshard, cfg.mtu) == (0, 0, 1024)
    assert (cfg.nocomp, cfg.acknodelay, cfg.quiet) == (True, False, True)
    with pytest.raises(kc.ConfigError, match="boolean"):
        parse("client", "--nocomp=maybe")
    with pytest.raises(SystemExit):
        parse("client", "--mtu", "many")


def test_kcptun_key_environment() -> None:
    """``KCPTUN_KEY`` replaces the default key; an explicit --key wins (urfave/cli EnvVar)."""
    assert parse("client", env={"KCPTUN_KEY": "from-env"}).key == "from-env"
    assert parse("server", "--key", "flag", env={"KCPTUN_KEY": "from-env"}).key == "flag"


def test_json_config_overrides_command_line(tmp_path: Any) -> None:
    """kcptun applies ``-c`` after the flags: file values win; keys are the long flag names
    (kcptun's Config json tags); unknown keys are ignored (Go's decoder) with a warning."""
    path = tmp_path / "client.json"
    path.write_text(json.dumps({"localaddr": "127.0.0.1:7", "remoteaddr": "s:8", "key": "k",
                                "crypt": "salsa20", "mode": "fast3", "conn": 3, "nocomp": True,
                                "smuxver": 2, "sndwnd": 64, "closewait": 4, "datashard": 0,
                                "parityshard": 0, "bogus": 1, "target": "x:1"}))
    cfg = parse("client", "-l", ":9", "--conn", "5", "--mode", "normal", "-c", str(path))
    assert (cfg.localaddr, cfg.remoteaddr, cfg.key, cfg.crypt, cfg.mode) == \
        ("127.0.0.1:7", "s:8", "k", "salsa20", "fast3")
    assert (cfg.conn, cfg.nocomp, cfg.smuxver, cfg.sndwnd, cfg.closewait) == \
        (3, True, 2, 64, 4)
    assert (cfg.rcvwnd, cfg.datashard) == (512, 0)            # untouched default, from file
    assert any("'bogus'" in w for w in cfg.warnings)
    assert any("'target'" in w for w in cfg.warnings)       # the server's key on a client
    server = tmp_path / "server.json"
    server.write_text(json.dumps({"listen": ":1", "target": "t:2", "smuxver": "auto"}))
    s = parse("server", "--smuxver", "1", "-c", str(server))
    assert (s.listen, s.target, s.smuxver) == (":1", "t:2", "auto")


@pytest.mark.parametrize("content,match", [('{"mtu": "1350"}', "integer"),
                                           ('{"nocomp": 1}', "true or false"),
                                           ('[1, 2]', "JSON object")])
def test_json_config_type_errors(tmp_path: Any, content: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(kc.ConfigError, match=match):
        parse("client", "-c", str(path))


def test_crypt_names() -> None:
    """kcptun.md §5.1, §6: kcptun's table (exact spelling) or aes; ``null`` = no cipher
    header at all (kcpgo crypt=None, the key dropped); ``aes-128-gcm`` = kcp-go's AEAD."""
    for name in ("aes", "aes-128", "aes-192", "salsa20", "blowfish", "twofish", "cast5",
                 "3des", "tea", "xtea", "xor", "sm4", "none", "aes-128-gcm"):
        assert kc.kcptun_crypt(name) == name
        assert kc.session_options(parse("client", "--crypt", name)).block.name == name
    for unknown in ("AES", "aes-256-gcm", "chacha", ""):
        cfg = parse("client", "--crypt", unknown)
        assert kc.kcptun_crypt(unknown) == "aes"
        assert kc.session_options(cfg).block.name == "aes"
        assert any("using aes" in w for w in cfg.warnings)
    null = kc.session_options(parse("client", "--crypt", "null"))
    assert null.crypt is None and null.key is None and null.block is None


def test_modes_and_manual_nodelay() -> None:
    """docs/protocol.md §7 presets; any other --mode uses the hidden --nodelay --interval
    --resend --nc (kcptun's switch falls through)."""
    assert kc.nodelay_params(parse("client", "--mode", "fast3")) == (1, 10, 2, 1)
    assert kc.nodelay_params(parse("client", "--mode", "normal")) == (0, 40, 2, 1)
    manual = parse("server", "--mode", "manual", "--nodelay", "1", "--interval", "15",
                   "--resend", "3", "--nc", "1")
    assert kc.nodelay_params(manual) == (1, 15, 3, 1)
    assert manual.warnings == []
    # a typo is kcptun's manual mode too (slow defaults), but it now says so
    typo = parse("server", "--mode", "fast4")
    assert kc.nodelay_params(typo) == (0, 50, 0, 0)
    assert any("--mode 'fast4' is not a kcptun profile" in w and "0 50 0 0" in w
               for w in typo.warnings)
    assert kc.session_options(manual).mode is None
    assert kc.nodelay_params(parse("client", "--mode", "manual")) == (0, 50, 0, 0)


def test_smux_settings() -> None:
    """Client: fixed framing (default v1 + snappy). Server: 'auto' follows each client
    (None/None for listen_smux); a number enforces it and --nocomp, as kcptun."""
    c = kc.smux_arguments(parse("client"))
    assert (c["smux_version"], c["compression"], c["keepalive"]) == (1, True, 10)
    assert (c["max_receive_buffer"], c["max_stream_buffer"]) == (4194304, 2097152)
    s = kc.smux_arguments(parse("server"))
    assert (s["smux_version"], s["compression"]) == (None, None)
    s = kc.smux_arguments(parse("server", "--smuxver", "2", "--nocomp"))
    assert (s["smux_version"], s["compression"]) == (2, False)


@pytest.mark.parametrize("role,argv,match", [
    ("client", ["--conn", "0"], "conn"),
    ("client", ["--smuxver", "3"], "smux version"),
    ("client", ["--smuxver", "auto"], "server"),
    ("server", ["--keepalive", "31"], "keepalive"),
    ("server", ["--keepalive", "0"], "keepalive"),
    ("client", ["--streambuf", "8388608"], "smuxbuf"),
    ("client", ["--tcp"], "tcpraw"),
    ("server", ["--QPP"], "QPP"),
    ("client", ["--mtu", "40"], "mtu"),
    ("client", ["--datashard", "200", "--parityshard", "100"], "shards"),
])
def test_refused_settings(role: str, argv: List[str], match: str, capsys: Any) -> None:
    with pytest.raises(kc.ConfigError, match=match):
        kc.parse(role, argv, environ={})
    assert cli_main(["tunnel", role] + argv) == 2          # a usage error, nothing started
    assert match.lower() in capsys.readouterr().err.lower()


def test_ignored_settings_warn() -> None:
    cfg = parse("client", "--ratelimit", "1000", "--pprof", "--autoexpire", "10")
    text = " | ".join(cfg.warnings)
    assert "pprof" in text and "scavengettl" in text and "ratelimit" not in text


def test_ratelimit_paces_every_session() -> None:
    """kcptun's --ratelimit (bytes/s; current kcptun calls SetRateLimit per session) becomes
    the sessions' rate_limit option (issue 13; docs/protocol.md §5.9)."""
    cfg = parse("client", "--ratelimit", "1000000")
    assert kc.session_options(cfg).rate_limit == 1_000_000 and not cfg.warnings


def test_command_table(capsys: Any) -> None:
    assert cli_main([]) == 2 and "tunnel" in capsys.readouterr().out
    assert cli_main(["nope"]) == 2
    assert cli_main(["tunnel"]) == 2


def test_split_host_port() -> None:
    """Go's net.SplitHostPort decides TCP target versus unix socket path (kcptun.md §5.4)."""
    assert split_host_port("127.0.0.1:80") == ("127.0.0.1", "80")
    assert split_host_port(":80") == ("", "80")
    assert split_host_port("[::1]:80") == ("::1", "80")
    for unix in ("/run/app.sock", "::1", "[::1]", "sock"):
        assert split_host_port(unix) is None


def test_snmp_log(tmp_path: Any) -> None:
    """kcptun's SnmpLogger: Go layout in the file name only; header row in a new file, then
    Unix time + kcp-go's counters in kcp-go's order."""
    when = time.mktime((2024, 3, 7, 15, 4, 5, 0, 0, -1))
    assert go_time_format("snmp-20060102.log", when) == "snmp-20240307.log"
    assert go_time_format("x-2006-01-02T15:04:05-Jan-Mon", when) == \
        "x-2024-03-07T15:04:05-Mar-Thu"
    assert snmp_path("/var/20060102/s-20060102.csv", when) == "/var/20060102/s-20240307.csv"
    counters = Snmp()
    counters.OutPkts = 7
    target = write_record(str(tmp_path / "snmp-20060102.log"), counters, when)
    write_record(str(tmp_path / "snmp-20060102.log"), counters, when + 60)
    rows = [line.split(",") for line in Path(target).read_text().splitlines()]
    assert rows[0] == ["Unix"] + Snmp.header()
    assert len(rows) == 3 and rows[1][0] == str(int(when))
    assert rows[2][Snmp.header().index("OutPkts") + 1] == "7"


# --------------------------------------------------------------------------- copy rules


def _pair() -> tuple:
    return gevent.socket.socketpair()


def _run_pipe(closewait: float, action: Any) -> tuple:
    """A Pipe between two socketpairs (app side ``a``, far side ``b``); ``action(a, b)`` runs
    while it copies. Returns (result of action, the pipe's errors)."""
    a, tcp = _pair()
    stream, b = _pair()
    pipe = Pipe(tcp, stream, closewait)
    g = gevent.spawn(pipe.run)
    try:
        out = action(a, b)
        g.join(timeout=5)
        assert g.dead, "the pipe did not end"
        return out, g.value
    finally:
        for s in (a, b):
            s.close()


def _read_all(s: Any, timeout: float = 5) -> bytes:
    s.settimeout(timeout)
    out = bytearray()
    while True:
        d = s.recv(65536)
        if not d:
            return bytes(out)
        out += d


def test_pipe_closes_both_at_first_eof() -> None:
    """closewait 0 (kcptun 20210922): the app's FIN closes the whole connection; what the far
    side answers afterwards is lost (kcptun.md §5.3 item 3)."""
    def action(a: Any, b: Any) -> bytes:
        a.sendall(b"ping")
        assert b.recv(4) == b"ping"
        a.shutdown(socket.SHUT_WR)
        assert _read_all(b) == b""                  # FIN forwarded by the close
        try:
            b.sendall(b"late")
        except OSError:
            pass
        return _read_all(a)
    got, errors = _run_pipe(0, action)
    assert got == b"" and errors == (None, None)


def test_pipe_closewait_forwards_half_close() -> None:
    """closewait N: the FIN is forwarded as a half-close, the other direction keeps flowing
    until it ends too (before N s), then both close."""
    def action(a: Any, b: Any) -> bytes:
        a.sendall(b"request")
        a.shutdown(socket.SHUT_WR)
        assert _read_all(b) == b"request"           # EOF after the request: a half-close
        b.sendall(b"reply")
        b.shutdown(socket.SHUT_WR)
        return _read_all(a)
    t0 = time.monotonic()
    got, errors = _run_pipe(10, action)
    assert got == b"reply" and errors == (None, None)
    assert time.monotonic() - t0 < 5                 # ended with the far side, not at 10 s


def test_pipe_closewait_expires() -> None:
    """closewait N: a far side that never ends is cut N s after the first end."""
    def action(a: Any, b: Any) -> bytes:
        a.shutdown(socket.SHUT_WR)
        b.sendall(b"x")
        return _read_all(a)                          # EOF when the wait expires
    t0 = time.monotonic()
    got, _ = _run_pipe(0.3, action)
    assert got == b"x" and 0.25 <= time.monotonic() - t0 < 4


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def echo() -> Any:
    with EchoServer() as server:
        yield server


def _tunnel(echo: Any, server_flags: List[str], client_flags: List[str],
            target: Any = None) -> tuple:
    base = ["--key", "tunnel-test", "--mode", "fast3"]
    server = TunnelProcess("kcpgo", "server", target or echo.address, base + server_flags)
    server.start()
    try:
        client = TunnelProcess("kcpgo", "client", server.address, base + client_flags)
        client.start()
    except BaseException:
        server.close()
        raise
    return server, client


def _wait_for(proc: TunnelProcess, text: str, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if text in proc.output():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged within {timeout} s:\n{proc.output()}")


def _concurrent_echo(address: Any, sizes: List[int]) -> None:
    results: List[Any] = [None] * len(sizes)

    def one(i: int) -> None:
        data = payload(sizes[i], seed=i)
        results[i] = (hashlib.sha256(echo_exchange(address, data, timeout=30)).hexdigest(),
                      hashlib.sha256(data).hexdigest())
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(sizes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    for got, want in results:
        assert got == want


@pytest.mark.parametrize("flags", [[], ["--nocomp", "--smuxver", "2"]],
                         ids=["snappy-v1", "nocomp-v2"])
def test_ours_to_ours(echo: Any, flags: List[str]) -> None:
    """Several concurrent TCP connections through one KCP session each way, sha256-checked;
    a clean SIGTERM exit (status 0) for both."""
    server, client = _tunnel(echo, flags, flags)
    try:
        _concurrent_echo(client.address, [300_000, 200_000, 100_000, 1])
        assert "stream opened" in client.output() and "stream opened" in server.output()
        framing = "smux version: 2" if flags else "smux version: 1"
        assert framing in client.output()
        for proc in (client, server):
            proc.stop()
            assert proc.proc.returncode == 0, proc.output()
    finally:
        client.close()
        server.close()


def test_client_closewait_half_close_end_to_end(echo: Any) -> None:
    """With --closewait on both ends an application's half-close travels as FIN to the
    target and the reply still comes back."""
    server, client = _tunnel(echo, ["--closewait", "10"], ["--closewait", "10"])
    try:
        with socket.create_connection(client.address, timeout=10) as s:
            s.sendall(b"half-closed request")
            s.shutdown(socket.SHUT_WR)
            t0 = time.monotonic()
            assert _read_all(s, 10) == b"half-closed request"
            assert time.monotonic() - t0 < 5        # the target's FIN ended the wait
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize("stopped", ["client", "server"])
def test_sigterm_ends_the_open_connections_at_the_far_end(stopped: str) -> None:
    """D61, a new user's finding: SIGTERM stopped a tunnel at once but sent no FIN for its
    open streams (kcptun sends none either), so the far end's TCP connections stayed open
    until its smux keepalive timeout (30 s). Expected now, as if the process had closed each
    connection: a stopped client's target connection, and a stopped server's application
    connection, read EOF (5 s timeouts, well below the 30 s)."""
    with EchoServer() as echo:
        server, client = _tunnel(echo, [], [])
        try:
            with socket.create_connection(client.address, timeout=10) as s:
                s.sendall(b"ping")
                got = b""
                while len(got) < 4:
                    got += s.recv(4)
                assert got == b"ping"                   # the path is up, the stream open
                (client if stopped == "client" else server).stop()
                if stopped == "client":
                    deadline = time.monotonic() + 5
                    while not echo.received and time.monotonic() < deadline:
                        time.sleep(0.05)
                    assert echo.received == [(4, hashlib.sha256(b"ping").hexdigest())]
                else:
                    assert _read_all(s, 5) == b""
        finally:
            client.close()
            server.close()


def test_wrong_key_is_logged(echo: Any) -> None:
    """kcptun.md §5.1: a wrong key is total silence on the wire; both ends say so in their
    log within seconds (the server's checksum warning, the client's 'no valid datagram')."""
    server = TunnelProcess("kcpgo", "server", echo.address, ["--key", "right"]).start()
    client = TunnelProcess("kcpgo", "client", server.address, ["--key", "wrong"]).start()
    try:
        with socket.create_connection(client.address, timeout=10) as s:
            s.sendall(b"hello")
            assert _wait_for(server, "failed the checksum", 6) < 6
            assert _wait_for(client, "no valid datagram", 8) < 8
        assert "key/crypt" in client.output()
    finally:
        client.close()
        server.close()


def test_framing_mismatch_is_logged(echo: Any) -> None:
    """A server with a fixed --smuxver (kcptun's behaviour) and a client with --nocomp: the
    server logs the mismatch naming both sides' flags (kcptun.md §3.3) at once."""
    server, client = _tunnel(echo, ["--smuxver", "1"], ["--nocomp"])
    try:
        with socket.create_connection(client.address, timeout=10) as s:
            s.sendall(b"hello")
            _wait_for(server, "framing mismatch", 5)
        text = server.output()
        assert "--smuxver 1 --nocomp" in text and "WARNING" in text
    finally:
        client.close()
        server.close()


def test_unreachable_target_gives_eof(echo: Any) -> None:
    """kcptun.md §5.4 item 3: a failed target dial closes the stream at once; the client's
    TCP connection then sees EOF (not a hang), and the server logs the dial error."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()                                     # nothing listens there any more
    server, client = _tunnel(echo, [], [], target=("127.0.0.1", port))
    try:
        with socket.create_connection(client.address, timeout=10) as s:
            s.sendall(b"anyone?")
            t0 = time.monotonic()
            assert _read_all(s, 10) == b""
            assert time.monotonic() - t0 < 3
        _wait_for(server, "dial target", 3)
    finally:
        client.close()
        server.close()


def test_conn_autoexpire_scavenger_snmplog(echo: Any, tmp_path: Any) -> None:
    """kcptun.md §5.3 items 2 and 4: --conn 2 spreads connections over two lazily dialled
    sessions round robin; with --autoexpire the next connection on an expired slot dials a
    fresh session and the scavenger force-closes the old one --scavengettl s after expiry.
    --snmplog writes kcp-go's counters as CSV; --quiet drops the stream lines (kcptun.md §5.5)."""
    snmp = tmp_path / "snmp-20060102.csv"
    server, client = _tunnel(echo, ["--quiet"], ["--conn", "2", "--autoexpire", "1",
                                                 "--scavengettl", "1", "--snmplog", str(snmp),
                                                 "--snmpperiod", "1"])
    try:
        for _ in range(2):
            assert echo_exchange(client.address, b"abc", timeout=10) == b"abc"
        assert client.output().count(" on connection: ") == 2
        time.sleep(1.2)                                 # both sessions expired
        assert echo_exchange(client.address, b"def", timeout=10) == b"def"
        assert client.output().count(" on connection: ") == 3
        _wait_for(client, "scavenger: session closed due to ttl", 4)
        assert "stream opened" in client.output() and "stream opened" not in server.output()
        files = list(tmp_path.glob("snmp-*.csv"))
        assert len(files) == 1 and files[0].name == go_time_format(snmp.name)
        header = files[0].read_text().splitlines()[0].split(",")
        assert header == ["Unix"] + Snmp.header()
    finally:
        client.close()
        server.close()
