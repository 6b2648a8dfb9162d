"""A reply carries the ACK of the request it answers (kcpgo/runtime/channel.py, D1).

kcp-go sends a session's ACKs at its next tick (every ``interval`` ms), so a server that
answers within the tick sends one datagram per request: the reply, ACK included. kcpgo's
sessions sleep between messages, and their overdue tick used to flush the request's ACK on
its own as soon as the request arrived, before the application could answer: two datagrams
per request, and one more ``sendto``, for every message of a server with thousands of
request/response sessions. The ACK now waits up to one interval for the reply.

The traffic runs in a subprocess under ``gevent.monkey.patch_all()`` (the handler answers in
the same loop turn), printing its counters as one JSON line.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    from gevent import monkey; monkey.patch_all()
    import json, sys, time
    import gevent, kcpgo
    ROUNDS, GAP = int(sys.argv[1]), float(sys.argv[2])
    server_snmp, client_snmp = kcpgo.Snmp(), kcpgo.Snmp()
    opts = dict(mode="fast3", stream=True)
    ln = kcpgo.listen("127.0.0.1:0", snmp=server_snmp, **opts)

    def serve():
        s, _ = ln.accept()
        while True:
            data = s.recv(65536)
            if not data:
                return
            s.sendall(data)

    gevent.spawn(serve)
    c = kcpgo.dial(ln.getsockname(), timeout=10, snmp=client_snmp, **opts)
    c.sendall(b"warm-up")
    assert c.recv(100) == b"warm-up"
    time.sleep(0.2)
    out0, re0 = server_snmp.OutPkts, server_snmp.RetransSegs
    for i in range(ROUNDS):
        time.sleep(GAP)                   # the server's tick is overdue when the request comes
        msg = b"request %d" % i
        c.sendall(msg)
        got = b""
        while len(got) < len(msg):
            got += c.recv(100)
        assert got == msg, (got, msg)
    time.sleep(0.1)
    print(json.dumps({"out": server_snmp.OutPkts - out0,
                      "retrans": server_snmp.RetransSegs - re0}))
''')


def test_a_reply_carries_the_requests_ack():
    rounds = 20
    # 30 ms between requests: three fast3 intervals (10 ms), so the server's tick is overdue
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(rounds), "0.03"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    # one datagram per request (the reply, its ACK inside), plus any retransmission a loaded
    # machine forces; before the fix: two per request
    assert rounds <= counts["out"] <= rounds + counts["retrans"], counts


def test_sansio_pending_acks_alone_do_not_make_an_overdue_tick_due():
    """The sans-IO rule behind it: with ``acks=False``, ``has_output`` and ``next_deadline``
    leave out a tick that is due only because ACKs are pending; the reply's flush then
    carries them (one datagram). Times are the explicit ms clock."""
    from kcpgo.sansio import Connection
    from kcpgo.snmp import Snmp
    client, server = (Connection(0x11223344, mode="fast3", stream=True, snmp=Snmp())
                      for _ in range(2))
    for end in (client, server):
        assert end.datagrams_to_send(0) == []       # both idle since t=0: ticks overdue later
    client.send(b"request")
    (request,) = client.datagrams_to_send(1000)
    server.receive_datagram(request, 1000)
    assert server.pending_acks == 1
    assert server.has_output(1000)                  # kcp-go's tick would send the ACK now
    assert not server.has_output(1000, acks=False)
    assert server.next_deadline(1000) == 1000
    assert server.next_deadline(1000, acks=False) is None
    assert server.recv_stream(100) == b"request"
    server.send(b"reply")
    (reply,) = server.datagrams_to_send(1001)       # one datagram: the reply with the ACK
    assert server.pending_acks == 0
    client.receive_datagram(reply, 1002)
    assert client.in_flight == 0 and client.recv_stream(100) == b"reply"
