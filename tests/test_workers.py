"""Multi-core servers (kcpgo/server_workers.py): ``listen(reuse_port=True)``, ``workers=N`` on
``KCPServer``/``ThreadingKCPServer`` (plain and smux) in each runtime, and ``tunnel server
--workers N``.

Servers with workers run in a child interpreter (:data:`SERVER`): forking, atexit, the
runtime mode and monkey-patching each need a process of their own, and a test must be able
to SIGKILL the parent. The handler answers with its process id, so the test sees which
processes served; Linux's ``SO_REUSEPORT`` hashes each client's address 4-tuple to one
worker, and 16 sessions all landing on one of two workers has probability 2**-15.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import kcpgo
from kcpgo.cli.bench_workers import process_tree
from kcpgo.server import KCPServer, ThreadingKCPServer
from kcpgo.testing.process import running
from tests.support.children import ROOT, child_env, reap
from tests.support.kcptun import EchoServer, TunnelProcess, echo_exchange, payload

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="workers need Linux's SO_REUSEPORT")

#: A server with 2 workers; argv: runtime (thread, patched, hub), "kcp" or "smux". It serves
#: 16 sessions (one message each, answered with the handler's pid) and 16 whose handler
#: raises, then shuts down and prints a JSON report; the code after serve_forever and the
#: atexit handler say which processes ran them.
SERVER = r"""
import sys
if sys.argv[1] == "patched":
    from gevent import monkey
    monkey.patch_all()
import atexit, json, os, socketserver, threading, time
import kcpgo
from kcpgo.server import ThreadingKCPServer

smux = sys.argv[2] == "smux"

class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        data = self.request.recv(100)
        if data == b"boom":
            raise RuntimeError(f"boom in worker {self.server.worker_index} pid {os.getpid()}")
        self.request.sendall(str(os.getpid()).encode())

srv = ThreadingKCPServer(("127.0.0.1", 0), Handler, workers=2, idle_timeout=10,
                         drain_timeout=1, smux=True if smux else None)
atexit.register(lambda: print("ATEXIT", os.getpid(), flush=True))

def serve():
    srv.serve_forever(poll_interval=0.1)
    print("AFTER", os.getpid(), flush=True)

t = threading.Thread(target=serve)
t.start()
while not srv.worker_pids:          # serving: the workers have bound their sockets
    time.sleep(0.01)
workers = srv.worker_pids

def ask(message):
    if smux:
        session = kcpgo.dial_smux(srv.server_address, timeout=10)
        s = session.open_stream()
    else:
        session = s = kcpgo.dial(srv.server_address, timeout=10)
    s.sendall(message)
    reply = s.recv(100) if message != b"boom" else b""
    s.close()
    if smux:
        session.close()
    return reply

pids = sorted({int(ask(b"pid?")) for _ in range(16)})
for _ in range(16):
    ask(b"boom")
time.sleep(0.5)
srv.shutdown()
srv.server_close()
t.join()
alive = []
for pid in workers:
    try:
        os.kill(pid, 0)
        alive.append(pid)
    except ProcessLookupError:
        pass
print(json.dumps({"me": os.getpid(), "pids": pids, "workers": workers, "alive": alive,
                  "runtime": kcpgo.get_runtime()}), flush=True)
"""


def _env(runtime: str) -> dict:
    return child_env(**({"KCPGO_RUNTIME": "hub"} if runtime == "hub" else {}))


@pytest.mark.parametrize("runtime,kind", [("thread", "kcp"), ("patched", "kcp"),
                                          ("hub", "kcp"), ("thread", "smux"),
                                          ("patched", "smux")])
def test_two_workers_serve_one_port_and_are_reaped(runtime, kind):
    """Both processes answer on one port; shutdown()/server_close() stop and reap the worker;
    only the parent returns from serve_forever and runs atexit; a worker's handler errors
    are printed as socketserver does."""
    proc = subprocess.run([sys.executable, "-c", SERVER, runtime, kind], cwd=ROOT,
                          env=_env(runtime), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    report = json.loads(next(line for line in lines if line.startswith("{")))
    me, workers = report["me"], report["workers"]
    assert report["runtime"] == ("thread" if runtime == "thread" else "hub")
    assert len(workers) == 1 and me not in workers
    assert report["pids"] == sorted([me] + workers), report     # both served
    assert report["alive"] == []                                 # reaped
    assert [line for line in lines if line.startswith(("AFTER", "ATEXIT"))] == \
        [f"AFTER {me}", f"ATEXIT {me}"]
    assert f"boom in worker 1 pid {workers[0]}" in proc.stderr, proc.stderr
    assert f"boom in worker 0 pid {me}" in proc.stderr, proc.stderr


#: A server with 2 workers serving in the main thread until it is killed.
FOREVER = r"""
import sys
if sys.argv[1] == "patched":
    from gevent import monkey
    monkey.patch_all()
import socketserver
from kcpgo.server import KCPServer

class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        pass

srv = KCPServer(("127.0.0.1", 0), Handler, workers=2)
print("LISTENING", srv.server_address[1], flush=True)
srv.serve_forever()
"""


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize("runtime", ["thread", "patched"])
def test_a_worker_dies_with_its_parent(runtime):
    """SIGKILL leaves the parent no chance to stop its workers: they end on their own
    (PR_SET_PDEATHSIG)."""
    proc = subprocess.Popen([sys.executable, "-c", FOREVER, runtime], cwd=ROOT,
                            env=_env(runtime), stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        assert proc.stdout.readline().startswith("LISTENING")
        assert _wait_for(lambda: len(process_tree(proc.pid)) == 2, 10)
        worker = process_tree(proc.pid)[1]
        assert running(worker)
        proc.kill()
        proc.wait(10)
        assert _wait_for(lambda: not running(worker), 10), f"worker {worker} still runs"
    finally:
        reap(proc, kill=True)
        if worker is not None and running(worker):
            os.kill(worker, signal.SIGKILL)         # (the test failed: leave nothing behind)


def test_reuse_port_lets_listeners_share_a_port():
    """Two reuse_port listeners (and an smux one) on one port; a listener without it, before
    or after, gets EADDRINUSE."""
    a = kcpgo.listen(("127.0.0.1", 0), reuse_port=True)
    addr = a.getsockname()
    b = kcpgo.listen(addr, reuse_port=True)
    c = kcpgo.listen_smux(addr, reuse_port=True)
    try:
        assert b.getsockname() == c.getsockname() == addr
        with pytest.raises(OSError) as e:
            kcpgo.listen(addr)
        assert e.value.errno == errno.EADDRINUSE
    finally:
        for ln in (a, b, c):
            ln.close()
    plain = kcpgo.listen(("127.0.0.1", 0))
    try:
        with pytest.raises(OSError) as e:
            kcpgo.listen(plain.getsockname(), reuse_port=True)
        assert e.value.errno == errno.EADDRINUSE
    finally:
        plain.close()


def test_without_so_reuseport_it_is_a_value_error(monkeypatch):
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    with pytest.raises(ValueError, match="SO_REUSEPORT"):
        kcpgo.listen(("127.0.0.1", 0), reuse_port=True)
    with pytest.raises(ValueError, match="SO_REUSEPORT"):
        KCPServer(("127.0.0.1", 0), None, workers=2)


def test_workers_is_checked(monkeypatch):
    with pytest.raises(ValueError, match="workers"):
        ThreadingKCPServer(("127.0.0.1", 0), None, workers=0)
    with pytest.raises(TypeError, match="workers"):
        ThreadingKCPServer(("127.0.0.1", 0), None, workers="2")
    with KCPServer(("127.0.0.1", 0), None, workers=1) as one:      # nothing changes
        assert one._kcpgo.workers is None and one.worker_index == 0
    with KCPServer(("127.0.0.1", 0), None, workers=2) as two:      # port 0: one port for all
        assert two.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        again = kcpgo.listen(two.server_address, reuse_port=True)
        again.close()
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(ValueError, match="Linux"):
        KCPServer(("127.0.0.1", 0), None, workers=2)


def test_tunnel_server_workers():
    """``tunnel server --workers 2``: two processes serve one port, connections through four
    client sessions echo, SIGTERM stops both."""
    with EchoServer() as echo:
        server = TunnelProcess("kcpgo", "server", echo.address,
                               ["--key", "k", "--workers", "2"]).start()
        try:
            assert _wait_for(lambda: len(process_tree(server.pid)) == 2, 10)
            worker = process_tree(server.pid)[1]
            client = TunnelProcess("kcpgo", "client", server.address,
                                   ["--key", "k", "--conn", "4"]).start()
            try:
                for i in range(8):
                    data = payload(20000, i)
                    assert echo_exchange(client.address, data, timeout=20) == data
            finally:
                client.close()
            server.signal(signal.SIGTERM)
            assert server.proc.wait(10) == 0
            assert _wait_for(lambda: not running(worker), 10)
            out = server.output()
            assert out.count("workers: 2") == 1, out        # the banner's line, once
            assert f"worker pids: {server.pid} (worker 0), {worker} (worker 1)" in out, out
            # each client session's line names the process that served it
            sessions = [ln for ln in out.splitlines() if "remote address:" in ln]
            assert len(sessions) == 4 and all(
                "worker 0: remote" in ln or "worker 1: remote" in ln for ln in sessions), out
        finally:
            for pid in process_tree(server.pid)[1:]:
                os.kill(pid, signal.SIGKILL)
            server.close()


# --------------------------------------------------------------------------- the benchmark


def test_bench_adds_up_workers_and_clients():
    """``bench sink --workers 2 --clients 2``: one result over both sessions, with the
    server's and the clients' CPU."""
    out = subprocess.run([sys.executable, "-m", "kcpgo", "bench", "sink", "--workers", "2",
                          "--clients", "2", "--duration", "0.5", "--json", "-q"], cwd=ROOT,
                         env=child_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout)["results"][0]["runs"][0]
    assert run["sessions"] == 2 and run["MB/s"] > 0 and 1 <= run["workers used"] <= 2
    assert run["server CPU %"] > 0 and run["client CPU %"] > 0 and run["server RSS MB"] > 0


def test_compare_workers_interleaves_and_takes_the_ratio():
    from kcpgo.cli import bench
    from kcpgo.cli.bench_run import Stalled, describe_stall
    from kcpgo.cli.bench_workers import compare_workers
    calls = []
    rates = iter([100.0, 150.0, 110.0, 160.0, 90.0, 170.0])

    def measure(server, client, a, label):
        calls.append((server, client, a.workers))
        return {"msgs/s": next(rates), "server CPU %": 99.0}
    a = bench.parser().parse_args(["conc", "--compare-workers", "--sessions", "10",
                                   "--period", "0"])
    bench._check(bench.parser(), a)
    doc = compare_workers(a, measure, bench.summarise, Stalled, describe_stall)
    assert calls == [("kcpgo", "go", 1), ("kcpgo", "go", 2)] * 3
    assert [r["median"]["msgs/s"] for r in doc["results"]] == [100.0, 160.0]
    assert doc["ratio"] == pytest.approx(1.6) and doc["target"]["met"] is True
    assert a.workers == 2 and a.ramp == 2.0 and len(doc["loadavg"]) == 2


@pytest.mark.parametrize("args", [["conc", "--clients", "2"],
                                  ["sink", "--compare-workers", "--server", "go"],
                                  ["sink", "--workers", "2", "--compare"],
                                  ["ping", "--compare-workers"],
                                  ["sink", "--workers", "0"],
                                  ["sink", "--client-interval", "40"],
                                  ["conc", "--client-interval", "0"]])
def test_bench_worker_flags_refuse_what_they_cannot_measure(args):
    from kcpgo.cli import bench
    ap = bench.parser()
    with pytest.raises(SystemExit) as e:
        bench._check(ap, ap.parse_args(args))
    assert e.value.code == 2


def test_client_interval_reaches_the_go_clients_only(monkeypatch):
    """``--client-interval 40``: the Go client runs fast3 (nodelay 1, resend 2, nc 1) with a
    40 ms interval; the server keeps gobench's default (fast3, 10 ms)."""
    from kcpgo.cli import bench, bench_run
    monkeypatch.setattr(bench_run, "build_gobench", lambda progress=None: "gobench")
    ap = bench.parser()
    a = ap.parse_args(["conc", "--client-interval", "40", "--server", "go"])
    bench._check(ap, a)
    client = bench_run.role_argv("go", "client", a, "127.0.0.1:1")
    assert client[client.index("-nodelay") + 1] == "1,40,2,1"
    assert "-nodelay" not in bench_run.role_argv("go", "server", a, "127.0.0.1:1")
    a = ap.parse_args(["conc", "--server", "go"])
    bench._check(ap, a)
    assert "-nodelay" not in bench_run.role_argv("go", "client", a, "127.0.0.1:1")


@pytest.mark.parametrize("pids, busiest", [([7, 8, 7, 8], 50.0), ([7, 7, 8, 7], 75.0),
                                           ([7, 7, 7, 7], 100.0)])
def test_sink_figures_report_how_the_kernel_split_the_sessions(pids, busiest):
    """"busiest %": the share of the sessions on the busiest worker (SO_REUSEPORT's hash
    places 4 clients on 2 workers 2+2, 3+1 or 4+0)."""
    from kcpgo.cli.bench_workers import sink_figures
    fig = sink_figures([{"bytes": 1000, "first": 0.0, "last": 1.0, "pid": p} for p in pids]
                       + [{"bytes": 0, "pid": 9}])
    assert fig["busiest %"] == busiest and fig["sessions"] == 4
    assert fig["workers used"] == len(set(pids))
