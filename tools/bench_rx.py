#!/usr/bin/env python3
"""CPU per datagram on the sans-IO receive path (and the matching send path), replayed.

What it measures: the work a kcpgo *client* does per wire datagram it receives, from the
bytes a socket returned to data ready for the application: ``Connection.receive_datagram``
(AES-CFB open + CRC, FEC decoder, ``KCP.input``), plus the runtime's per-batch calls
(``datagrams_to_send(now, acks=False)``, ``readable``/``recv_stream``, as
``kcpgo.runtime.channel.Channel.after_batch`` makes them); and the same through the runtime's
``Channel`` (scenario ``channel``). No greenlets run, and only ``channel`` uses a socket.

How: two in-memory ``Connection`` objects with the tunnel defaults (aes, FEC 10/3, fast3,
stream mode, MTU 1350) first exchange the traffic once to record, per step, the wire
datagrams the client receives. The recording is then replayed, several times, into a fresh
client connection driven with the same calls and the same ms clock, so its state follows
the recording exactly (deterministic input; only the random nonces differ between runs).

Scenarios:

* ``rr``: 64-byte request / response, like ``tools/bench.py tunnel --mb 0``: the server
  answers the way kcptun does, an ACK datagram of its own, then the snappy chunk header and
  the smux frame each in its own datagram (plus FEC parity after every 10 data shards), all
  in one batch (a count of the reader's batches in ``tools/bench.py tunnel``'s client: 1.26
  batches per round trip, mostly of 3 datagrams, or 6 with parity); ``--split``: the ACK
  as a batch of its own.
* ``channel``: the ``rr`` recording through ``kcpgo.runtime.channel.Channel`` (the runtime's
  driver) on a real UDP socket, the hub never entered: ``on_batch/dgram`` is everything the
  runtime and the owner do per received datagram (the owner drains the reply on
  ``on_update``); ``tell`` is the time from the start of a batch to the moment the owner had
  the reply's data, ``tell (parity)`` the same over the batches that also hold FEC parity;
  ``send/dgram`` is ``Channel.send`` per datagram sent (sendto included).
* ``bulk``: a one-way 2 MB stream (1.3 KB data datagrams and their parity), in batches of 16.

Columns (µs per datagram or call): each step (a batch, a round) is timed in every one of
``--repeat`` replays and its best time kept (the input is identical, so this drops
preemptions on a busy machine); the figure is the median over ``--sets`` processes, the
trees alternating (processes differ by up to ~10 % on a shared machine: compare trees
with several sets, and trust only differences that repeat):
``rx/dgram``: ``receive_datagram`` per received datagram; ``batch/dgram``: everything the
client does per received datagram (rx + per-batch calls); ``idle check``: one
``datagrams_to_send(now, acks=False)`` after a batch that leaves nothing to send;
``tx/dgram``: ``send`` + ``datagrams_to_send`` per datagram the client sends.

    python3 tools/bench_rx.py                       # this checkout's kcpgo
    python3 tools/bench_rx.py --compare /tmp/base   # ...side by side with another kcpgo tree
                                                    # (the directory holding its kcpgo/)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import List, Tuple

CONV = 0x4B435054
#: The ms clock of the client's creation (a Channel's first flush); the rounds start after it.
OPENED = 999
KEY_PASS = "it's a secrect"
REQUEST = 64


def _connection(stream: bool = True):
    from kcpgo import crypt
    from kcpgo.sansio import Connection
    from kcpgo.snmp import Snmp
    block = crypt.new("aes", crypt.derive_key(KEY_PASS))
    c = Connection(CONV, crypt=block, data_shards=10, parity_shards=3, mtu=1350,
                   mode="fast3", snmp=Snmp(), stream=stream, window=(1024, 1024))
    return c


def record_rr(rounds: int, split: bool = False) -> List[Tuple[int, List[List[bytes]]]]:
    """Per round: (now, [batches the client receives]) for a request/response exchange."""
    a = _connection()
    a.flush(OPENED)                 # as Channel.__init__ does
    b = _connection()
    b.ack_nodelay = True            # kcptun's server: its ACK leaves before the reply
    req = bytes(REQUEST)
    rounds_out = []
    now = 1000
    for _ in range(rounds):
        a.send(req)
        for d in a.datagrams_to_send(now):
            b.receive_datagram(d, now)
        ack = b.datagrams_to_send(now)              # the ACK-only flush (ack no-delay)
        got = b.recv_stream(65536)
        assert got
        b.send(b"\xff\x06\x00\x00sNaPpY")           # a snappy stream header / chunk header
        reply = b.datagrams_to_send(now)
        b.send(bytes(8 + len(got)))                 # the smux frame
        reply += b.datagrams_to_send(now)
        batches = [ack, reply] if ack and split else [ack + reply]
        for batch in batches:
            for d in batch:
                a.receive_datagram(d, now)
            a.datagrams_to_send(now, acks=False)
            while a.recv_stream(65536):
                pass
        rounds_out.append((now, batches))
        now += 1
    return rounds_out


def replay_rr(rec, timer=time.perf_counter_ns) -> Tuple[list, ...]:
    """One replay: per-step ns lists (rx per batch, batch per batch, idle check per batch or
    None, tx per round) and the datagram counts they cover."""
    a = _connection()
    a.flush(OPENED)
    req = bytes(REQUEST)
    rx, batch_t, idle, tx = [], [], [], []
    nrx = ntx = 0
    receive = a.receive_datagram
    to_send = a.datagrams_to_send
    recv_stream = a.recv_stream
    readable = a.readable
    for now, batches in rec:
        t0 = timer()
        a.send(req)
        out = to_send(now)
        tx.append(timer() - t0)
        ntx += len(out)
        for batch in batches:
            t0 = timer()
            for d in batch:
                receive(d, now)
            t1 = timer()
            out = to_send(now, False)
            t2 = timer()
            if readable():
                while recv_stream(65536):
                    pass
            t3 = timer()
            rx.append(t1 - t0)
            batch_t.append(t3 - t0)
            nrx += len(batch)
            idle.append(None if out else t2 - t1)
    return (rx, batch_t, idle, tx), (nrx, nrx, None, ntx)


def replay_channel(rec, timer=time.perf_counter_ns) -> Tuple[list, ...]:
    """The rr recording through the runtime's driver: a ``Channel`` on a real UDP socket
    (the client's requests go to a socket nobody reads), its clock patched to the recording's,
    the gevent hub never entered (no reader, no timers run). Per step: ``Channel.on_batch``
    (decrypt, FEC, KCP, flush check, ACK scheduling, and the owner's reads), the time from a
    batch's start until the owner drained the reply (``tell``), ``Channel.send``."""
    import socket
    from kcpgo.runtime import channel as channel_mod
    from kcpgo.runtime.channel import Channel
    from kcpgo.runtime.scheduler import Runtime
    from kcpgo.runtime.udp import UDPEndpoint
    clock = [OPENED]
    channel_mod.now_ms = lambda: clock[0]       # type: ignore[assignment]
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    peer = sink.getsockname()
    conn = _connection()
    with Runtime.current().lock:
        endpoint = UDPEndpoint(UDPEndpoint.open(("127.0.0.1", 0)), snmp=conn.snmp)
        chan = Channel(conn, endpoint, peer, on_release=lambda _: endpoint.close())
    told: List[int] = []
    opener = _connection().codec.open           # to pick out the batches that hold parity
    readable = conn.readable
    recv_stream = conn.recv_stream

    def on_update() -> None:
        if readable():
            while recv_stream(65536):
                pass
            told.append(timer())
    chan.on_update = on_update
    req = bytes(REQUEST)
    per_batch, tell, tell_parity, tx = [], [], [], []
    nrx = ntx = 0
    try:
        for now, batches in rec:
            clock[0] = now
            sent = endpoint.snmp.OutPkts
            t0 = timer()
            chan.send(req)
            tx.append(timer() - t0)
            ntx += endpoint.snmp.OutPkts - sent + endpoint.send_drops
            endpoint.send_drops = 0
            for batch in batches:
                items = [(d, peer) for d in batch]
                told.clear()
                t0 = timer()
                chan.on_batch(items, now)
                per_batch.append(timer() - t0)
                nrx += len(batch)
                if told:
                    tell.append(told[0] - t0)
                    if any(opener(d)[4] == 0xF2 for d in batch):
                        tell_parity.append(told[0] - t0)
    finally:
        chan.release()
        sink.close()
    return (per_batch, tell, tell_parity, tx), (nrx, len(tell), len(tell_parity), ntx)


def record_bulk(nbytes: int, per_batch: int = 16) -> List[Tuple[int, List[bytes]]]:
    a = _connection()
    b = _connection()
    chunk = os.urandom(65536)
    out: List[Tuple[int, List[bytes]]] = []
    sent = 0
    now = 1000
    while sent < nbytes or a.waitsnd:
        while sent < nbytes and a.writable():
            sent += a.send(chunk)
        wire = a.datagrams_to_send(now)
        for i in range(0, len(wire), per_batch):
            batch = wire[i:i + per_batch]
            for d in batch:
                b.receive_datagram(d, now)
            for d in b.datagrams_to_send(now):
                a.receive_datagram(d, now)
            while b.recv_stream(65536):
                pass
            out.append((now, batch))
        now += 1
    return out


def replay_bulk(rec, timer=time.perf_counter_ns) -> Tuple[list, ...]:
    b = _connection()
    rx, batch_t = [], []
    n = 0
    receive = b.receive_datagram
    to_send = b.datagrams_to_send
    recv_stream = b.recv_stream
    for now, batch in rec:
        t0 = timer()
        for d in batch:
            receive(d, now)
        t1 = timer()
        to_send(now)
        while recv_stream(65536):
            pass
        t2 = timer()
        rx.append(t1 - t0)
        batch_t.append(t2 - t0)
        n += len(batch)
    return (rx, batch_t, [], []), (n, n, None, None)


def _figure(replays: list, counts: tuple) -> List[float]:
    """µs per unit for each column: every step's best time over the replays (the input is
    the same in each, so this drops preemptions and other noise step by step), summed."""
    out = []
    for col, count in enumerate(counts):
        steps = list(zip(*(r[col] for r in replays)))
        if not steps:
            out.append(float("nan"))
            continue
        if count is None:            # the idle check: mean over the steps that had one
            best = [min(s) for s in steps if s[0] is not None]
            out.append(sum(best) / max(1, len(best)) / 1e3)
        else:
            out.append(sum(min(s) for s in steps) / count / 1e3)
    return out


def run(rounds: int, mb: float, repeat: int, scenarios: List[str], split: bool) -> dict:
    import gc
    results = {}
    from kcpgo.runtime import modes
    modes.set_runtime("hub")                    # the channel replay never enters the hub
    rr = record_rr(rounds, split)
    for name, rec, replay in (("rr", rr, replay_rr), ("channel", rr, replay_channel),
                              ("bulk", None, replay_bulk)):
        if name not in scenarios:
            continue
        if rec is None:
            rec = record_bulk(int(mb * 1e6))
        runs = []
        counts = ()
        for _ in range(repeat):
            gc.collect()
            times, counts = replay(rec)
            runs.append(times)
        results[name] = _figure(runs, counts)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2000, help="rr round trips (default 2000)")
    ap.add_argument("--mb", type=float, default=2.0, help="bulk MB (default 2)")
    ap.add_argument("--repeat", type=int, default=7, help="replays per figure (median)")
    ap.add_argument("--sets", type=int, default=3, help="processes per tree (median)")
    ap.add_argument("--scenarios", default="rr,channel,bulk", help="comma-separated subset")
    ap.add_argument("--split", action="store_true", help="rr: the ACK in a batch of its own")
    ap.add_argument("--compare", metavar="DIR",
                    help="also run with DIR first on sys.path (a baseline kcpgo), interleaved")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.json:
        import kcpgo
        res = run(args.rounds, args.mb, args.repeat, args.scenarios.split(","), args.split)
        print(json.dumps(dict(res, tree=kcpgo.__file__)))
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = [("this", here)] + ([("base", os.path.abspath(args.compare))] if args.compare else [])
    figures = {label: [] for label, _ in trees}
    # alternate the trees, one replay set at a time, so that machine noise hits both alike
    for _ in range(args.sets):
        for label, tree in trees:
            env = dict(os.environ, PYTHONPATH=tree)
            cmd = [sys.executable, os.path.abspath(__file__), "--json", "--rounds",
                   str(args.rounds), "--mb", str(args.mb), "--repeat", str(args.repeat),
                   "--scenarios", args.scenarios] + (["--split"] if args.split else [])
            res = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            got = json.loads(res.stdout)
            if not got.pop("tree").startswith(os.path.join(tree, "kcpgo")):
                raise SystemExit(f"the {label} run did not import kcpgo from {tree}")
            figures[label].append(got)
    print(f"µs: median over {args.sets} processes of the step-wise best of {args.repeat} "
          f"replays; aes + FEC 10/3, fast3, stream, MTU 1350")
    for scenario, cols in COLUMNS.items():
        if scenario not in args.scenarios.split(","):
            continue
        print(f"{scenario:8s} {'tree':5s} " + " ".join(f"{c:>15s}" for c in cols if c))
        for label, _ in trees:
            figs = [statistics.median(s[scenario][i] for s in figures[label])
                    for i, c in enumerate(cols)]
            print(f"{'':8s} {label:5s} " + " ".join(f"{v:15.2f}" for v, c in zip(figs, cols)
                                                    if c))


#: Column titles per scenario ("" = not measured there).
COLUMNS = {
    "rr": ("rx/dgram", "batch/dgram", "idle check", "tx/dgram"),
    "channel": ("on_batch/dgram", "tell", "tell (parity)", "send/dgram"),
    "bulk": ("rx/dgram", "batch/dgram", "", ""),
}


if __name__ == "__main__":
    main()
