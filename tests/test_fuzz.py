"""Fuzz: random and mutated kcp-go datagrams into a listener and into a connected session.

The short run is part of the normal suite; the long run (1,000,000 datagrams per cell) is
``python tools/fuzz.py --count 1000000`` (or ``KCPGO_SLOW=1``, which runs 1,000,000 here).
Checks: no exception reaches the runtime's catch-all (``kcpgo`` ERROR log records), the reader
greenlets live, the hub keeps time, a legitimate echo keeps flowing and a 256 KiB transfer
arrives intact afterwards, and with a cipher no datagram that fails the crypto check creates
a session.
"""
from __future__ import annotations

import os

import pytest

from kcpgo import crypt as crypt_mod
from kcpgo.sansio import Connection
from kcpgo.snmp import Snmp
from kcpgo.testing import Mutator, load_corpus
from tests.support.vectors import VECTORS
from tools.fuzz import PASSPHRASE, run

SHORT = 20_000
LONG = 1_000_000

CELLS = [("listener", None), ("listener", "aes"), ("listener-garbage", "aes"),
         ("session", None), ("session", "aes"), ("session-garbage", "aes")]


def _check(res):
    detail = {k: v for k, v in res.items() if k != "kinds"}
    assert "error" not in res, detail
    assert res["escaped"] == 0, res["escaped_samples"]
    assert res["sent"] == res["count"], detail
    assert res["reader_alive"] and res["echo_alive"], detail
    assert res["legit_ok"], detail
    assert res["sleep_lag"] < 0.1, detail
    if res["target"].endswith("-garbage"):
        assert res["garbage_sessions"] == 0, detail
    if res["target"] != "session":
        assert res["ping_error"] is None, detail
        assert res["pings"] > 0 and res["worst_ping_rtt"] < 1.0, detail
    assert res["ok"], detail


@pytest.mark.parametrize("target,crypt", CELLS, ids=[f"{t}-{c or 'nocrypt'}" for t, c in CELLS])
def test_fuzz_short(target, crypt):
    _check(run(target, crypt, SHORT, seed=2024))


@pytest.mark.slow
@pytest.mark.parametrize("target,crypt", CELLS, ids=[f"{t}-{c or 'nocrypt'}" for t, c in CELLS])
def test_fuzz_long(target, crypt):
    res = run(target, crypt, LONG, seed=1)
    print(res)
    _check(res)


@pytest.mark.parametrize("crypt", [None, "aes", "salsa20"])
@pytest.mark.parametrize("fec", [(0, 0), (10, 3)])
def test_sans_io_connection_survives_mutations(crypt, fec):
    """The same mutations straight into a Connection (no sockets): nothing may raise, and the
    timers and output keep working on whatever state the mutations left."""
    block = crypt_mod.new(crypt, crypt_mod.derive_key(PASSPHRASE)) if crypt else None
    snmp = Snmp()
    conn = Connection(0x1234, crypt=block, data_shards=fec[0], parity_shards=fec[1], snmp=snmp)
    mut = Mutator(int(os.environ.get("KCPGO_FUZZ_SEED", "7")), block, conv=0x1234,
                  corpus=load_corpus(str(VECTORS / "packets.json")))
    now = 1000
    for i in range(6000):
        d, _ = mut.next()
        conn.receive_datagram(d, now)
        if i % 50 == 0:
            now += 10
            conn.datagrams_to_send(now)
            conn.next_deadline(now)
            while conn.recv() is not None:
                pass
    for _ in range(100):                       # timers keep running on the fuzzed state
        now += 10
        conn.datagrams_to_send(now)
        conn.next_deadline(now)
    conn.send(b"x" * 5000)
    assert conn.datagrams_to_send(now + 1000) is not None
    assert snmp.KCPInErrors > 0                # the mutations did reach KCP


def test_fuzz_output_is_one_truthful_line_per_cell(capsys):
    """``tools/fuzz.py`` prints one readable line per cell, not a JSON document; a session cell
    whose pings the injected datagrams broke (as they may) says so without a ``ping_error``
    next to "ok" (first-hour log, problem 13)."""
    from tools.fuzz import main
    assert main(["--count", "1500", "--target", "session", "--crypt", "nocrypt"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("OK   session nocrypt: 1,500 datagrams"), out
    assert "ping failed" not in out[0] and "{" not in out[0], out
    assert out[1].endswith("1/1 cells OK"), out
