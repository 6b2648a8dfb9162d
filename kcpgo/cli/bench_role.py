"""One end of a ``python -m kcpgo bench`` measurement, in its own process: kcpgo or Python TCP.

The benchmark (:mod:`kcpgo.cli.bench_run`) starts each end as
``python -c BOOT --role server|client --mode ... --runtime R`` (:data:`BOOT`), so that with
``--runtime patched`` ``gevent.monkey.patch_all()`` runs before kcpgo is imported, as in a
monkey-patched application. The protocol is gobench's (``tools/gobench/gobench.go``), so every
end can be kcp-go, kcpgo or TCP:

* the server prints ``LISTENING host:port`` once bound, then serves one session (sink:
  read and discard; echo, ping: echo back; conc: every session, echoing) and, after ``--idle``
  seconds without data (KCP has no FIN) or at EOF (TCP), one JSON line: ``bytes``,
  ``seconds`` from its first to its last byte, kcpgo's SNMP counters;
* the client (``--addr -``: it reads the address from its stdin, so that it can start while
  the server does) writes for ``--duration`` seconds (or exactly ``--mb`` MB), or runs ``--count``
  round trips, and prints one JSON line (sink: bytes sent; echo: bytes echoed and seconds;
  ping: sorted round-trip times in µs). A sink client whose writes make no progress for
  ``--stall`` seconds prints its counters with ``"stalled": true`` and exits with
  :data:`STALLED`;
* with ``--sample S``, the end that counts the mode's progress (sink server: bytes received;
  echo client: bytes echoed; ping client: round trips) prints ``SAMPLE <seconds> <count>``
  about every S seconds (cumulative; seconds from the first byte, or from the client's start).

``--workers N`` (a kcpgo server, sink or conc): the server is a
:class:`kcpgo.server.ThreadingKCPServer` with ``workers=N`` (N processes on one port, a
handler per session) serving every session until it is stopped; a sink session's handler
prints one JSON line when the session has been idle for ``--idle`` s: ``"session": true``,
its ``bytes``, ``first`` and ``last`` (``time.monotonic()`` of its first and last byte:
one clock for every process of the machine), ``pid`` and ``worker``. The benchmark adds
them up (several clients, several workers).

``--transport tcp`` makes a plain-socket TCP end (Python's ``socket``, ``TCP_NODELAY`` as Go
sets it): the TCP contender of an installed kcpgo, where the Go peer is not available.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

__all__ = ["BOOT", "STALLED", "RUNTIMES", "main", "parser"]

#: Exit status of a client end (and of the benchmark) when a run stalled; its JSON says how.
STALLED = 3
#: --runtime of a kcpgo end: how its process runs and what it uses for concurrency
#: (kcpgo.cli.bench's help text says what each means).
RUNTIMES = ("patched", "unpatched", "hub")
#: What ``python -c`` runs: the patch first when --runtime is patched, then :func:`main`.
BOOT = ("import sys\n"
        "if sys.argv[sys.argv.index('--runtime') + 1] == 'patched':\n"
        "    from gevent import monkey\n"
        "    monkey.patch_all()\n"
        "from kcpgo.cli.bench_role import main\n"
        "sys.exit(main(sys.argv[1:]))\n")


def parser() -> argparse.ArgumentParser:
    """The end's flags (the benchmark passes all of them; see :func:`kcpgo.cli.bench_run`)."""
    ap = argparse.ArgumentParser(prog="kcpgo.cli.bench_role")
    ap.add_argument("--role", choices=["server", "client"], required=True)
    ap.add_argument("--mode", choices=["sink", "echo", "ping", "conc"], required=True)
    ap.add_argument("--transport", choices=["kcp", "tcp"], default="kcp")
    ap.add_argument("--addr", default="127.0.0.1:0")
    ap.add_argument("--runtime", choices=RUNTIMES, default="patched")
    ap.add_argument("--crypt", default="")
    ap.add_argument("--key", default="it's a secrect")
    ap.add_argument("--fec", default="0/0")
    ap.add_argument("--mtu", type=int, default=1400)
    ap.add_argument("--sndwnd", type=int, default=1024)
    ap.add_argument("--rcvwnd", type=int, default=1024)
    ap.add_argument("--size", type=int, default=65536)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--idle", type=float, default=1.0)
    ap.add_argument("--mb", type=float, default=0.0)
    ap.add_argument("--stall", type=float, default=10.0)
    ap.add_argument("--sample", type=float, default=0.0)
    ap.add_argument("--after-accept", action="store_true")
    ap.add_argument("--workers", type=int, default=0,
                    help="server: a ThreadingKCPServer with this many worker processes")
    return ap


def _report(obj: Dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


class _Sampler:
    """``SAMPLE <seconds since start> <count>`` lines at most every ``every`` seconds."""

    def __init__(self, every: float, start: float) -> None:
        self.every, self.start, self.next = every, start, start

    def tick(self, now: float, count: int, final: bool = False) -> None:
        if self.every > 0 and (final or now >= self.next):
            self.next = now + self.every
            print(f"SAMPLE {now - self.start:.4f} {count}", flush=True)


def _runtime_report(a: argparse.Namespace) -> Dict[str, Any]:
    """How this end runs: --runtime, whether gevent patched the socket module, and the
    runtime kcpgo chose ("thread" or "hub"). Raises SystemExit when the process is not
    patched as --runtime says."""
    monkey = sys.modules.get("gevent.monkey")     # imported by the patch, if any
    patched = bool(monkey is not None and monkey.is_module_patched("socket"))
    if patched != (a.runtime == "patched"):
        raise SystemExit(f"--runtime {a.runtime}, but socket patched: {patched}")
    if a.transport == "tcp":
        return {"runtime": a.runtime, "patched": patched}
    import kcpgo
    return {"runtime": a.runtime, "patched": patched,
            "kcpgo_runtime": getattr(kcpgo, "get_runtime", lambda: "hub")()}


def _start(a: argparse.Namespace, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` concurrently as the --runtime's application would: a greenlet
    (gevent.spawn) for hub, else a daemon threading.Thread (a greenlet under the patch)."""
    if a.runtime == "hub":
        import gevent
        return gevent.spawn(fn, *args)
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


def _nap(a: argparse.Namespace) -> Callable[[float], None]:
    """A sleep that lets the --runtime's other greenlets or threads run."""
    if a.runtime == "hub":
        import gevent
        return gevent.sleep                     # time.sleep would block the hub's greenlets
    return time.sleep                           # gevent.sleep under the patch


def _session_opts(a: argparse.Namespace) -> Dict[str, Any]:
    """What kcp-go applications set on a session (kcptun's fast3, stream mode)."""
    return dict(mode="fast3", stream=True, mtu=a.mtu, window=(a.sndwnd, a.rcvwnd))


def _kcpgo_opts(a: argparse.Namespace, session: bool = True) -> Dict[str, Any]:
    """Options for dial/listen: FEC and cipher, plus the session's unless ``session`` is
    False (the listener of --after-accept)."""
    ds, ps = (int(x) for x in a.fec.split("/"))
    opts: Dict[str, Any] = dict(data_shards=ds, parity_shards=ps)
    if session:
        opts.update(_session_opts(a))
    if a.crypt:
        opts.update(crypt=a.crypt, key=a.key)
    return opts


def _configure_accepted(s: Any, a: argparse.Namespace) -> None:
    """--after-accept: the kcp-go idiom (and kcptun's server), on kcpgo's setters."""
    if a.transport == "tcp" or not a.after_accept:
        return
    o = _session_opts(a)
    s.set_mode(o["mode"])
    s.set_stream_mode(o["stream"])
    s.set_mtu(o["mtu"])
    s.set_window_size(*o["window"])


def _snmp(a: argparse.Namespace) -> Optional[Dict[str, int]]:
    if a.transport == "tcp":
        return None
    import kcpgo
    return kcpgo.DEFAULT_SNMP.snapshot()


def _kcp_state(s: Any) -> Dict[str, Any]:
    """A few fields of a kcpgo session's KCP state, for stall reports (internals: best
    effort)."""
    try:
        conn = getattr(s, "_conn", None) or s._chan.conn
        k = conn.kcp
        return {"snd_una": k.snd_una, "snd_nxt": k.snd_nxt, "wait_snd": k.wait_snd(),
                "rmt_wnd": k.rmt_wnd, "rcv_nxt": k.rcv_nxt, "rcv_wnd": k.rcv_wnd,
                "rcv_queue": len(k.rcv_queue), "wnd_sent": k.wnd_sent}
    except Exception as e:                     # noqa: BLE001 - a report must not fail
        return {"unavailable": repr(e)}


def _send_drops(s: Any) -> Optional[int]:
    """Datagrams the session's UDP endpoint could not send (internals: best effort)."""
    try:
        return s._chan.endpoint.send_drops
    except Exception:                          # noqa: BLE001 - a report must not fail
        return None


def _split(addr: str) -> tuple:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


# --------------------------------------------------------------------------- server


def _listen(a: argparse.Namespace) -> tuple:
    """(listener, its "host:port")."""
    if a.transport == "tcp":
        ln = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ln.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ln.bind(_split(a.addr))
        ln.listen(128)
        host, port = ln.getsockname()[:2]
        return ln, f"{host}:{port}"
    import kcpgo
    from kcpgo.address import format_address
    ln = kcpgo.listen(a.addr, **_kcpgo_opts(a, session=not a.after_accept))   # "host:port"
    return ln, format_address(ln.getsockname())


def _accept(ln: Any, a: argparse.Namespace) -> Any:
    s, _ = ln.accept()
    if a.transport == "tcp":
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _configure_accepted(s, a)
    return s


def _write_line(line: str, lock: Any = threading.Lock()) -> None:
    """One whole line on stdout (a single write: lines of several processes and threads do not
    mix)."""
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def workers_server(a: argparse.Namespace) -> None:
    """``--workers N`` (module docstring): serve every session until stopped."""
    import socketserver

    from kcpgo.address import format_address
    from kcpgo.server import ThreadingKCPServer
    ends = _runtime_report(a)
    sink = a.mode == "sink"

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            s = self.request
            _configure_accepted(s, a)
            s.settimeout(a.idle if sink else None)
            total, first, last = 0, 0.0, 0.0
            recv, sendall = s.recv, s.sendall
            try:
                while True:
                    data = recv(1 << 20)
                    if not data:
                        break
                    if sink:
                        last = time.monotonic()
                        first = first or last
                        total += len(data)
                    else:
                        sendall(data)
            except OSError:                     # the idle end (sink), a failed session
                pass
            if sink:
                _write_line(json.dumps({"role": "server", "session": True, "bytes": total,
                                        "first": first, "last": last, "pid": os.getpid(),
                                        "worker": getattr(self.server, "worker_index", 0),
                                        **ends}))

    srv = ThreadingKCPServer(a.addr, Handler, workers=a.workers, idle_timeout=None,
                             drain_timeout=None, **_kcpgo_opts(a, session=not a.after_accept))
    srv.daemon_threads = True
    loop = _start(a, srv.serve_forever)         # until SIGTERM; the workers die with it
    nap = _nap(a)
    while a.workers > 1 and not srv.worker_pids:
        nap(0.01)   # every worker bound: clients that came earlier would move to another one
    print("LISTENING " + format_address(srv.server_address), flush=True)
    loop.join()


def server(a: argparse.Namespace) -> None:
    """The server end (module docstring)."""
    if a.workers:
        workers_server(a)
        return
    ends = _runtime_report(a)
    ln, where = _listen(a)
    print("LISTENING " + where, flush=True)
    if a.mode == "conc":
        def echo(s: Any) -> None:
            try:
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    s.sendall(data)
            except OSError:
                pass
            s.close()
        while True:
            _start(a, echo, _accept(ln, a))     # a thread, or a greenlet for --runtime hub
    s = _accept(ln, a)
    s.settimeout(a.idle)
    total = 0
    first = last = 0.0
    sink = a.mode == "sink"
    samples: Optional[_Sampler] = None
    recv, sendall = s.recv, s.sendall
    while True:
        try:
            data = recv(1 << 20)
        except (TimeoutError, socket.timeout):
            break
        if not data:                            # TCP's EOF
            break
        now = time.monotonic()
        if not total:
            first = now
            samples = _Sampler(a.sample if sink else 0.0, now)
        last = now
        total += len(data)
        if sink:
            samples.tick(now, total)            # type: ignore[union-attr]
        else:
            sendall(data)
    if samples is not None:
        samples.tick(last, total, final=True)
    _report({"role": "server", "bytes": total, "seconds": last - first, "snmp": _snmp(a),
             "kcp": _kcp_state(s) if a.transport == "kcp" else None, **ends})


# --------------------------------------------------------------------------- client


def _dial(a: argparse.Namespace) -> Any:
    if a.addr == "-":                           # started early: the address comes on stdin
        a.addr = sys.stdin.readline().strip()
        if not a.addr:
            raise SystemExit("no address on stdin (the benchmark's server did not start)")
    if a.transport == "tcp":
        s = socket.create_connection(_split(a.addr), timeout=a.stall)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s
    import kcpgo
    return kcpgo.dial(a.addr, timeout=a.stall, **_kcpgo_opts(a))      # "host:port"


def _client_sink(s: Any, a: argparse.Namespace, ends: Dict[str, Any]) -> None:
    buf = os.urandom(a.size)
    start = last = time.monotonic()
    end = start + a.duration
    sent = 0
    goal = int(a.mb * 1e6) if a.mb else 0
    try:
        while (goal and sent < goal) or (not goal and time.monotonic() < end):
            chunk = buf if not goal or goal - sent >= len(buf) else buf[:goal - sent]
            s.sendall(chunk)                    # the socket timeout (--stall) bounds each call
            sent += len(chunk)
            last = time.monotonic()
        if a.transport == "tcp":
            s.shutdown(socket.SHUT_WR)          # the server's EOF
        else:
            s.drain(timeout=a.stall)
    except (TimeoutError, socket.timeout):
        now = time.monotonic()
        _report({"role": "client", "bytes": sent, "stalled": True, "stalled_s": now - last,
                 "elapsed": now - start, "snmp": _snmp(a),
                 "kcp": _kcp_state(s) if a.transport == "kcp" else None, **ends})
        sys.exit(STALLED)
    _report({"role": "client", "bytes": sent, "snmp": _snmp(a),
             "send_drops": _send_drops(s) if a.transport == "kcp" else None, **ends})


def _client_echo(s: Any, a: argparse.Namespace, ends: Dict[str, Any]) -> None:
    buf = os.urandom(a.size)
    echoed = 0
    failed: List[BaseException] = []
    start = time.monotonic()
    samples = _Sampler(a.sample, start)

    def reader() -> None:
        nonlocal echoed
        try:
            while True:
                data = s.recv(1 << 20)
                if not data:
                    return
                echoed += len(data)
                samples.tick(time.monotonic(), echoed)
        except OSError:                         # closed by the main thread below
            pass
        except BaseException as e:              # noqa: BLE001 - reported by the main thread
            failed.append(e)
    nap = _nap(a)
    if a.transport == "tcp":
        s.settimeout(None)
    g = _start(a, reader)
    end = start + a.duration
    sent = 0
    while time.monotonic() < end and not failed:
        s.sendall(buf)
        sent += len(buf)
    while echoed < sent and not failed and time.monotonic() < end + 10:
        nap(0.001)
    if failed:
        raise SystemExit(f"echo reader ({a.runtime}) failed: {failed[0]!r}")
    if a.runtime == "hub":
        g.kill()
    _report({"role": "client", "bytes": sent, "echoed": echoed,
             "seconds": time.monotonic() - start, **ends})


def _client_ping(s: Any, a: argparse.Namespace, ends: Dict[str, Any]) -> None:
    rtts = []
    msg = os.urandom(a.size)
    samples = _Sampler(a.sample, time.monotonic())
    perf = time.perf_counter
    for i in range(a.count + 20):               # the first 20 warm up
        samples.tick(time.monotonic(), i)
        t = perf()
        s.sendall(msg)
        got = 0
        while got < len(msg):
            piece = s.recv(65536)
            if not piece:
                raise SystemExit(f"EOF after {i} round trips")
            got += len(piece)
        if i >= 20:
            rtts.append((perf() - t) * 1e6)
    _report({"role": "client", "rtt_us": sorted(rtts), **ends})


def client(a: argparse.Namespace) -> None:
    """The client end (module docstring)."""
    ends = _runtime_report(a)
    s = _dial(a)
    run = {"sink": _client_sink, "echo": _client_echo, "ping": _client_ping}.get(a.mode)
    if run is None:
        raise SystemExit("conc is driven by the Go client (--client go)")
    run(s, a, ends)
    s.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one end with ``argv`` (:func:`parser`'s flags); 0, or :data:`STALLED` (through
    ``SystemExit``) for a stalled sink client."""
    a = parser().parse_args(argv)
    if a.role == "server":
        server(a)
    else:
        client(a)
    return 0
