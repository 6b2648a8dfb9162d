"""Self-check of the live-interop harness: Go kcp-go client <-> Go kcp-go server.

These tests prove that peer.go and gopeer.py work (build, flags, ECHO protocol,
payload generator, failure detection) before any Python peer is put on the
other side. Skipped when the Go toolchain / kcp-go sources are not installed.
"""

import hashlib
import struct
import time

import pytest

from tests.support.gopeer import (
    GoServer,
    build_peer,
    check_client,
    go_args,
    go_available,
    parse_output,
    payload,
    payload_sha256,
    run_go_client,
)

GO_OK, GO_REASON = go_available()
needs_go = pytest.mark.skipif(not GO_OK, reason=GO_REASON)

NBYTES = 256 * 1024
# Short linger: on loopback the echo tail is delivered within milliseconds, and
# the client only exits 0 once it has the whole echo anyway.
FAST = dict(linger=0.5, timeout=30)


@pytest.fixture(scope="module")
def peer_binary():
    if not GO_OK:
        pytest.skip(GO_REASON)
    return build_peer()


def echo_once(**opts):
    """One Go server session + one Go client; assert both sides saw the payload."""
    opts = {**FAST, "nbytes": NBYTES, **opts}
    with GoServer(**opts) as srv:
        result = run_go_client(srv.address, **opts)
        check_client(result, opts["nbytes"])
        rc, out, err = srv.wait()
    assert rc == 0, f"server exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert parse_output(out)["RECEIVED"] == [(opts["nbytes"], payload_sha256(opts["nbytes"]))]
    return result


# ---------------------------------------------------------------- pure Python

def test_payload_definition():
    # block i = SHA256(b"kcpgo-interop" + u64le(i)), concatenated, truncated.
    blocks = b"".join(hashlib.sha256(b"kcpgo-interop" + struct.pack("<Q", i)).digest()
                      for i in range(4))
    assert payload(100) == blocks[:100]
    assert payload(0) == b""
    assert payload(33) == payload(1000)[:33]
    t0 = time.monotonic()
    assert len(payload(4 << 20)) == 4 << 20
    assert time.monotonic() - t0 < 5


def test_go_args_flags():
    args = go_args(crypt="aes", ds=10, ps=3, nodelay=(0, 30, 2, 1), stream=True, nbytes=5)
    assert args[args.index("-crypt") + 1] == "aes"
    assert args[args.index("-nodelay") + 1] == "0,30,2,1"
    assert args[args.index("-bytes") + 1] == "5"
    assert "-stream=true" in args and "-acknodelay=false" in args
    assert go_args(crypt="")[go_args(crypt="").index("-crypt") + 1] == ""
    with pytest.raises(TypeError):
        go_args(bogus=1)


# ---------------------------------------------------------------- Go <-> Go

@needs_go
def test_payload_matches_go_client(peer_binary):
    n = 100_003  # not a multiple of the 32-byte block
    result = echo_once(nbytes=n)
    assert result.report["SENT"] == (n, hashlib.sha256(payload(n)).hexdigest())


@needs_go
@pytest.mark.parametrize(
    "opts",
    [
        pytest.param(dict(crypt=""), id="nocrypt"),
        pytest.param(dict(crypt="aes", ds=10, ps=3), id="aes-fec10-3"),
        pytest.param(dict(crypt="salsa20", stream=True), id="salsa20-stream"),
        pytest.param(dict(crypt="tea", stream=False), id="tea-message"),
    ],
)
def test_go_echo(peer_binary, opts):
    echo_once(**opts)


@needs_go
def test_go_two_sessions(peer_binary):
    opts = dict(FAST, nbytes=NBYTES, crypt="aes-128", sessions=2)
    with GoServer(**opts) as srv:
        for _ in range(2):
            check_client(run_go_client(srv.address, **opts), NBYTES)
        rc, out, err = srv.wait()
    assert rc == 0, f"server exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert parse_output(out)["RECEIVED"] == [(NBYTES, payload_sha256(NBYTES))] * 2


@needs_go
def test_go_detects_failure(peer_binary):
    # Mismatched ciphers: every datagram fails the CRC check, nothing is
    # echoed, and the client must report TIMEOUT with exit status 3.
    with GoServer(crypt="salsa20", nbytes=1000, timeout=10) as srv:
        result = run_go_client(srv.address, crypt="aes", nbytes=1000, timeout=1.5)
        assert result.returncode == 3, result.stderr
        assert "TIMEOUT" in result.stderr
        assert "ECHOED" not in result.report
        assert "RECEIVED" not in srv.report


@needs_go
def test_go_rejects_unknown_cipher(peer_binary):
    result = run_go_client("127.0.0.1:9", crypt="rot13", nbytes=10, timeout=5)
    assert result.returncode != 0
    assert "rot13" in result.stderr
