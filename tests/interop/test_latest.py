"""Live interop: kcpgo against the **latest** kcp-go (v5.6.72, the kcp-go of current kcptun
releases; issue 13 item 2, ../shared/KCP-GO-LATEST.md).

The peer is tests/interop/latest/peer.go built on the bundled kcp-go v5.6.72 source by
tests/interop/latest/build.sh (``.ci/run`` runs it; the session fixture ``latest_peer`` finds
the build, rebuilds it with a Go toolchain already on the machine, or skips every test that
needs it with the reason: what is missing and how to build). Settings everywhere: fast3,
windows 1024/1024, MTU 1400, kcptun's default passphrase.

* **Matrix** (2 MB each way, sha256 of what each side received and of the echo): both
  directions (kcpgo client -> latest server, latest client -> kcpgo listener) x crypt
  {aes-128-gcm, aes-256-gcm, aes, salsa20, none, no crypto header} x FEC {off, 10/3} in
  stream mode, and message mode with aes-128-gcm and no crypto x FEC {off, 10/3}. Each side's
  counters must show no datagram of the other rejected (InCsumErrors, KCPInErrors, FECErrs).
  Each kcpgo-client cell has its own server process and waits for its per-session report
  (printed ``-idle`` seconds after the last datagram); the cells run at once, their
  transfers one at a time, so only those waits overlap (fixture ``to_latest``).
* **FEC recovery** through a lossy relay (kcpgo.testing.RelayProcess, 5 % loss each way),
  aes + FEC 10/3, 1 MB, both directions: both sides recovered shards of the other's FEC.
* **OOB** (kcp-go latest ``SendOOB``; KCP-GO-LATEST.md item 2): latest client -> kcpgo
  listener with ``-oob 16`` (aes with and without ``-oobzero``, no crypto with it) during the
  2 MB echo (the session is not disturbed, no other session appears, the payloads come out
  of ``recv_oob``, ``OOBPackets`` counts them); kcpgo client -> latest server with
  ``send_oob`` during the echo (the server counts them); ``send_oob`` without FEC raises
  ``OSError(EOPNOTSUPP)``.

The default run is the whole of the above (about 15 s on 2 cores). ``KCPGO_SLOW=1`` adds
message mode for the other four ciphers (tests marked ``slow``).
"""
from __future__ import annotations

import errno
import hashlib
import random
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import gevent
import gevent.pool
import pytest
from gevent.lock import Semaphore

import kcpgo
from kcpgo.snmp import Snmp
from kcpgo.testing import Impairment, RelayProcess

from tests.support.latestpeer import (PASSPHRASE, LatestServer, find_or_build, peer_flags,
                                      run_client)
from tests.support.streams import HashingEcho
from tests.support.waits import wait_until

MB2 = 2 * 1024 * 1024
RELAY_BYTES = 1024 * 1024
#: Server ``-idle`` (seconds): it closes and reports a session this long after its last read,
#: dropping what it has not delivered. Far above a retransmission timeout on loopback.
IDLE = 2.0
#: OOB packets the latest client sends (-oob) and kcpgo sends with send_oob.
OOB_COUNT = 16


@dataclass(frozen=True)
class Cell:
    crypt: Optional[str]        # kcptun cipher name; None: no crypto header at all
    ds: int = 0
    ps: int = 0
    stream: bool = True

    @property
    def id(self) -> str:
        fec = f"fec{self.ds}_{self.ps}" if self.ds else "nofec"
        return f"{self.crypt or 'nocrypt'}-{fec}-{'stream' if self.stream else 'message'}"

    def flags(self, extra: tuple = ()) -> List[str]:
        return peer_flags(self.crypt, self.ds, self.ps, self.stream, extra=extra)

    def py_opts(self) -> Dict[str, Any]:
        """kcpgo keyword arguments matching :meth:`flags` (a fresh Snmp per cell)."""
        opts: Dict[str, Any] = dict(data_shards=self.ds, parity_shards=self.ps, mode="fast3",
                                    stream=self.stream, mtu=1400, window=(1024, 1024),
                                    snmp=Snmp())
        if self.crypt is not None:
            opts.update(crypt=self.crypt, key=PASSPHRASE)
        return opts


CRYPTS = ("aes-128-gcm", "aes-256-gcm", "aes", "salsa20", "none", None)
FECS = ((0, 0), (10, 3))
MESSAGE_CRYPTS = ("aes-128-gcm", None)
CELLS = (
    [pytest.param(Cell(c, ds, ps), id=Cell(c, ds, ps).id) for c in CRYPTS for ds, ps in FECS]
    + [pytest.param(Cell(c, ds, ps, stream=False), id=Cell(c, ds, ps, stream=False).id)
       for c in MESSAGE_CRYPTS for ds, ps in FECS]
    + [pytest.param(Cell(c, ds, ps, stream=False), id=Cell(c, ds, ps, stream=False).id,
                    marks=pytest.mark.slow)
       for c in CRYPTS if c not in MESSAGE_CRYPTS for ds, ps in FECS]
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def data_for(cell: Cell, n: int) -> bytes:
    return random.Random(cell.id).randbytes(n)


@pytest.fixture(scope="session")
def latest_peer() -> str:
    """Path of the latest kcp-go peer (tests/support/latestpeer.find_or_build); skips the
    test with the reason (what is missing, how to build) when there is none."""
    path, reason = find_or_build()
    if path is None:
        pytest.skip(reason)
    return path


def assert_go_clean(snmp: Dict[str, int], fec: bool) -> None:
    """The Go side rejected none of kcpgo's datagrams: no CRC/AEAD failure, no KCP input error
    and, with FEC, no recovered shard with a bad size (peer.go's snmp(), kcp-go snmp.go)."""
    assert snmp["in_csum_errors"] == 0, snmp
    assert snmp["kcp_in_errors"] == 0, snmp
    if fec:
        assert snmp["fec_errs"] == 0, snmp


def assert_py_clean(snmp: Snmp) -> None:
    """kcpgo rejected none of kcp-go's datagrams (kcpgo.snmp: InCsumErrors, KCPInErrors,
    FECErrs)."""
    assert (snmp.InCsumErrors, snmp.KCPInErrors, snmp.FECErrs) == (0, 0, 0), snmp.snapshot()


# =========================================================================== kcpgo -> latest

def echo_to_latest(peer: str, cell: Cell, n: int, relay: Optional[Impairment] = None,
                   oob: Optional[List[bytes]] = None,
                   turn: Optional[Semaphore] = None) -> Dict[str, Any]:
    """kcpgo client -> latest server (optionally through a RelayProcess with ``relay`` on both
    directions): send ``n`` bytes while reading the echo, drain, wait for the server's session
    report. With ``oob``, send those payloads with ``send_oob``, one after each ``recv`` of
    the echo (so during the transfer). ``turn`` is held from the server's start to the end
    of the drain (not while waiting for the report). Returns what the test checks."""
    data = data_for(cell, n)
    opts = cell.py_opts()
    out: Dict[str, Any] = {"sent_sha": sha(data), "snmp": opts["snmp"], "oob_sent": 0}
    held = turn is not None and turn.acquire()
    try:
        with LatestServer(peer, cell.flags(), idle=IDLE) as srv:
            target = srv.address
            rp = None
            if relay is not None:
                rp = RelayProcess(srv.address, up=relay, down=relay, seed=7)
                gevent.get_hub().threadpool.spawn(rp.start).get()
                target = rp.address
            sess = kcpgo.dial(target, timeout=30, **opts)
            got = bytearray()
            try:
                out["oob_max_size"] = getattr(sess, "oob_max_size", None)
                writer = gevent.spawn(sess.sendall, data)
                pending = list(oob or ())
                while len(got) < n:
                    got += sess.recv(1 << 20)
                    if pending:
                        sess.send_oob(pending.pop(0))
                        out["oob_sent"] += 1
                for p in pending:
                    sess.send_oob(p)
                writer.get(timeout=30)
                sess.drain(timeout=10)
                if held:
                    turn.release()
                    held = False
                out["echo_len"], out["echo_sha"] = len(got), sha(got)
                out["conv"] = sess.conv
                out["reports"] = srv.wait_sessions(1, timeout=IDLE + 20)
            except Exception as e:
                raise AssertionError(f"{e!r} after {len(got)} of {n} bytes echoed; our snmp "
                                     f"{opts['snmp'].snapshot()}; server output "
                                     f"{srv.events} {srv.stderr[-500:]}") from e
            finally:
                sess.close()
                if rp is not None:
                    out["relay"] = rp.stop()
    finally:
        if held:
            turn.release()
    return out


@pytest.fixture(scope="module")
def to_latest(request, latest_peer) -> Dict[Cell, Any]:
    """Runs :func:`echo_to_latest` for every cell of ``test_kcpgo_client_to_latest_server``
    selected in this session (not skipped), all at once but one transfer at a time (a
    semaphore): only the waits for the servers' reports overlap. Concurrent bulk transfers
    gain nothing (kcpgo's side is CPU-bound on one I/O thread) and overflow socket buffers
    (RTO retransmissions, then a server that closes on ``-idle`` with data unacknowledged).
    Returns ``{cell: result or the exception it raised}``; the tests check their own cell."""
    cells = []
    for item in request.session.items:
        if (getattr(item, "originalname", "") == "test_kcpgo_client_to_latest_server"
                and item.module is request.module
                and item.get_closest_marker("skip") is None):
            cells.append(item.callspec.params["cell"])
    results: Dict[Cell, Any] = {}

    def one(cell: Cell, turn: Semaphore) -> None:
        try:
            results[cell] = echo_to_latest(latest_peer, cell, MB2, turn=turn)
        except Exception as e:          # re-raised by the cell's own test
            results[cell] = e
    turn = Semaphore(1)
    pool = gevent.pool.Pool(len(cells) or 1)
    for cell in dict.fromkeys(cells):
        pool.spawn(one, cell, turn)
    pool.join(timeout=180)
    pool.kill()
    return results


@pytest.mark.parametrize("cell", CELLS)
def test_kcpgo_client_to_latest_server(cell, to_latest):
    """kcpgo client -> latest kcp-go server, 2 MB echoed: the echo is byte-exact (sha256), the
    server's session report (peer.go's echo()) says it received exactly those 2 MB with that
    sha256 on our conv, and neither side rejected a datagram of the other. Expected: the
    transfer is exact and checksums never fail between compatible peers (KCP-GO-LATEST.md:
    CFB framing unchanged, AEAD item 1; protocol.md)."""
    r = to_latest.get(cell)
    if r is None:
        pytest.fail("the cell did not finish within the fixture's 180 s")
    if isinstance(r, BaseException):
        raise r
    assert (r["echo_len"], r["echo_sha"]) == (MB2, r["sent_sha"])
    (rep,) = r["reports"]
    assert (rep["echoed"], rep["sha256"], rep["conv"]) == (MB2, r["sent_sha"], r["conv"]), rep
    assert_go_clean(rep["snmp"], fec=bool(cell.ds))
    assert_py_clean(r["snmp"])


# =========================================================================== latest -> kcpgo

def echo_from_latest(peer: str, cell: Cell, n: int, relay: Optional[Impairment] = None,
                     extra: tuple = (), oob: bool = False) -> Dict[str, Any]:
    """Latest client -> kcpgo listener (optionally through a RelayProcess): the listener
    echoes what it receives (hashing it); with ``oob``, a greenlet collects ``recv_oob``
    payloads meanwhile. Returns what the test checks."""
    opts = cell.py_opts()
    out: Dict[str, Any] = {"snmp": opts["snmp"], "oob": []}
    with kcpgo.listen(("127.0.0.1", 0), **opts) as ln:
        target = ln.getsockname()
        rp = None
        if relay is not None:
            rp = RelayProcess(target, up=relay, down=relay, seed=7)
            gevent.get_hub().threadpool.spawn(rp.start).get()
            target = rp.address
        try:
            client = gevent.get_hub().threadpool.spawn(run_client, peer, target, n,
                                                       cell.flags(extra), 30.0)
            ln.settimeout(30)
            sess, _ = ln.accept()
            echoed = HashingEcho(sess)

            def oob_reader() -> None:
                while True:
                    out["oob"].append(sess.recv_oob(4096))
            workers = [gevent.spawn(echoed.run)]
            if oob:
                workers.append(gevent.spawn(oob_reader))
            try:
                run = client.get(timeout=60)
                if oob:     # OOB is unordered: the last may land after the echo completed
                    try:
                        wait_until(lambda: len(out["oob"]) >= OOB_COUNT, 2.0, "OOB payloads")
                    except AssertionError:
                        pass
                    out["oob_dropped"] = sess.oob_dropped
                out["sessions"], out["pending"] = ln.session_count, ln.pending_count
                ln.settimeout(0)
                try:
                    ln.accept()[0].close()
                    out["another_session"] = True
                except BlockingIOError:
                    out["another_session"] = False
            finally:
                for g in workers:
                    g.kill()
                out["conv"] = sess.conv
                sess.close()
        finally:
            if rp is not None:
                out["relay"] = rp.stop()
    out.update(run=run, total=echoed.total, received_sha=echoed.received.hexdigest())
    return out


def check_from_latest(r: Dict[str, Any], n: int, fec: bool) -> Dict[str, Any]:
    """The assertions every latest-client cell shares; returns the client's report."""
    run = r["run"]
    rep = run.report
    assert run.returncode == 0 and rep.get("ok") is True, run.detail()
    assert rep["bytes"] == n and (r["total"], r["received_sha"]) == (n, rep["sha256"])
    assert rep["conv"] == r["conv"]
    assert (r["sessions"], r["pending"], r["another_session"]) == (1, 0, False)
    assert_go_clean(rep["snmp"], fec)
    assert_py_clean(r["snmp"])
    return rep


@pytest.mark.parametrize("cell", CELLS)
def test_latest_client_to_kcpgo_listener(cell, latest_peer):
    """Latest kcp-go client -> kcpgo listener, 2 MB echoed: the client reports ok (its echo
    matched what it sent, peer.go client()), the listener received exactly those bytes
    (sha256) in one session of the client's conv, and neither side rejected a datagram."""
    r = echo_from_latest(latest_peer, cell, MB2)
    check_from_latest(r, MB2, fec=bool(cell.ds))


# =========================================================================== FEC recovery

LOSSY = Impairment(loss=0.05)
RELAY_CELL = Cell("aes", 10, 3)


def test_fec_recovery_kcpgo_client_to_latest_through_loss(latest_peer):
    """kcpgo client -> 5 % loss each way -> latest server, aes + FEC 10/3, 1 MB: exact echo,
    and both FEC decoders recovered lost data shards (our FECRecovered, the server's
    fec_recovered): each side's parity is right for the other (KCP-GO-LATEST.md items 3, 6:
    the decoder rewrite and parity skipping keep the wire format). With ~1800 datagrams and
    5 % loss, P(no recoverable group) is negligible."""
    r = echo_to_latest(latest_peer, RELAY_CELL, RELAY_BYTES, relay=LOSSY)
    assert (r["echo_len"], r["echo_sha"]) == (RELAY_BYTES, r["sent_sha"])
    (rep,) = r["reports"]
    assert (rep["echoed"], rep["sha256"]) == (RELAY_BYTES, r["sent_sha"]), rep
    assert r["relay"]["up"]["dropped"] > 0 and r["relay"]["down"]["dropped"] > 0
    assert rep["snmp"]["fec_recovered"] > 0, rep["snmp"]
    assert r["snmp"].FECRecovered > 0, r["snmp"].snapshot()
    assert_go_clean(rep["snmp"], fec=True)
    assert_py_clean(r["snmp"])


def test_fec_recovery_latest_client_to_kcpgo_through_loss(latest_peer):
    """Latest client -> 5 % loss each way -> kcpgo listener, aes + FEC 10/3, 1 MB: the client
    reports an exact echo, and both sides recovered shards (as the test above)."""
    r = echo_from_latest(latest_peer, RELAY_CELL, RELAY_BYTES, relay=LOSSY)
    rep = check_from_latest(r, RELAY_BYTES, fec=True)
    assert r["relay"]["up"]["dropped"] > 0 and r["relay"]["down"]["dropped"] > 0
    assert rep["snmp"]["fec_recovered"] > 0, rep["snmp"]
    assert r["snmp"].FECRecovered > 0, r["snmp"].snapshot()


# =========================================================================== OOB

def oob_payloads(zero: bool) -> List[bytes]:
    """What peer.go's client sends with ``-oob OOB_COUNT`` (``-oobzero``: 4 zero bytes
    first): ``"kcpgo-oob-%02d" % i``."""
    return [b"\0\0\0\0" * zero + b"kcpgo-oob-%02d" % i for i in range(OOB_COUNT)]


@pytest.mark.parametrize("crypt,zero", [("aes", False), ("aes", True), (None, True)],
                         ids=["aes", "aes-oobzero", "nocrypt-oobzero"])
def test_oob_from_latest_client_to_kcpgo_listener(latest_peer, crypt, zero):
    """Latest client with FEC 10/3 sends OOB_COUNT OOB packets (FEC type 0xF3, seqid
    0xFFFFFFFF, conv, payload; KCP-GO-LATEST.md item 2) right after its first Write, during
    the 2 MB echo. A zero-prefixed payload is what tears a 5.6.1 listener's session down (it
    reads conv 0xFFFFFFFF, sn 0). Expected: the session is not disturbed (exact echo, one
    session, of the client's conv, nothing else waiting to be accepted) and ``recv_oob``
    returns the payloads as sent (kcp-go hands ``data[12:]`` to its handler, sess.go);
    OOB is unreliable, so at least 3/4 must come (loopback: all, normally), none twice, and
    ``OOBPackets`` counted at least those and at most what was sent."""
    cell = Cell(crypt, 10, 3)
    extra = ("-oob", str(OOB_COUNT)) + (("-oobzero",) if zero else ())
    r = echo_from_latest(latest_peer, cell, MB2, extra=extra, oob=True)
    rep = check_from_latest(r, MB2, fec=True)
    assert rep["oob_sent"] == OOB_COUNT and rep["oob_zero"] is zero
    want = oob_payloads(zero)
    got = r["oob"]
    assert set(got) <= set(want) and len(set(got)) == len(got), got
    assert len(got) >= OOB_COUNT * 3 // 4, (got, r["snmp"].snapshot())
    assert len(got) <= r["snmp"].OOBPackets <= OOB_COUNT, r["snmp"].snapshot()
    assert r["oob_dropped"] == 0


def test_oob_from_kcpgo_client_to_latest_server(latest_peer):
    """kcpgo client (aes, FEC 10/3) calls ``send_oob`` OOB_COUNT times during the 2 MB echo:
    plain, zero-prefixed and one of exactly ``oob_max_size`` bytes. ``oob_max_size`` is
    kcp-go's ``GetOOBMaxSize`` for these settings: KCP MTU - 4 = (1400 - 20 CFB header - 8
    FEC header) - 4 = 1368 (sess.go SetMtu, GetOOBMaxSize). Expected: the echo is exact and
    the server's session report (peer.go counts its OOB handler's calls in
    ``oob_received``) shows at least 3/4 of them (loopback: all, normally) and at most all,
    with kcp-go's ``OOBPackets`` counting as many."""
    cell = Cell("aes", 10, 3)
    payloads = [b"\0\0\0\0" * (i % 2) + b"kcpgo-oob-%02d" % i for i in range(OOB_COUNT - 1)]
    payloads.append(b"M" * 1368)
    r = echo_to_latest(latest_peer, cell, MB2, oob=payloads)
    assert r["oob_max_size"] == 1368
    assert (r["echo_len"], r["echo_sha"]) == (MB2, r["sent_sha"])
    assert r["oob_sent"] > 0            # at least one went out while the echo was running
    (rep,) = r["reports"]
    assert (rep["echoed"], rep["sha256"], rep["conv"]) == (MB2, r["sent_sha"], r["conv"]), rep
    assert OOB_COUNT * 3 // 4 <= rep["oob_received"] <= OOB_COUNT, rep
    assert rep["snmp"]["oob_packets"] == rep["oob_received"], rep
    assert_go_clean(rep["snmp"], fec=True)
    assert_py_clean(r["snmp"])


def test_send_oob_without_fec_raises_eopnotsupp():
    """``send_oob`` on a session without FEC raises ``OSError(EOPNOTSUPP)`` and nothing is
    sent; ``oob_max_size`` is 0 (kcp-go sess.go: ``SendOOB`` returns "OOB requires FEC to be
    enabled", ``GetOOBMaxSize`` returns 0 without FEC). No peer needed: dial has no
    handshake."""
    snmp = Snmp()
    with kcpgo.dial(("127.0.0.1", 9), timeout=1, crypt="aes", key=PASSPHRASE,
                    snmp=snmp) as sess:
        assert sess.oob_max_size == 0
        with pytest.raises(OSError) as info:
            sess.send_oob(b"kcpgo-oob-00")
        assert info.value.errno == errno.EOPNOTSUPP
        assert snmp.OutPkts == 0
