#!/usr/bin/env python3
"""kcpgo's benchmark: kcpgo against kcp-go 5.6.1 and TCP, over loopback, in separate processes.

Modes:
  sink   bulk one way (client writes --size buffers for --duration; MB/s at the receiver)
  echo   bulk both ways through an echo server (MB/s echoed)
  ping   --size-byte round trips (p50/p90/p99 µs)
  conc   --sessions sessions, each sending --size bytes every second and reading the echo,
         driven by the Go client against the chosen server (server CPU% and peak RSS)
  lossy  sink through the lossy-link relay (kcpgo.testing.relay) at --rtt ms and --loss each way
  tunnel TCP through kcptun tunnels, kcptun's and ours (tools/bench_tunnel.py; its own flags:
         python tools/bench.py tunnel --help)

Each end is kcpgo (this script with --role), kcp-go (tools/gobench/gobench.go, built on first
use in GOPATH mode from Debian's golang-github-xtaci-kcp-dev) or TCP (Go net):

  python tools/bench.py sink                       # kcpgo -> kcpgo
  python tools/bench.py sink --server go --client go
  python tools/bench.py sink --compare             # kcpgo<->kcpgo, Go<->Go, TCP, and ratios
  python tools/bench.py sink --crypt aes --fec 10/3 --compare --runs 3 --json
  python tools/bench.py sink --compare --mixed --runs 3 --mb 50 --after-accept

--runtime says how a kcpgo end runs (both ends of a kcpgo pair; Go and TCP ends ignore it):
  patched    (default) gevent.monkey.patch_all() is the role process's first statement, before
             kcpgo is imported; the role is ordinary blocking code, with threading.Thread where
             it needs concurrency (greenlets under the patch); kcpgo runs on the main thread's
             gevent hub ("hub" runtime, chosen automatically)
  unpatched  no patching; the same blocking code with real OS threads, KCPGO_RUNTIME unset, so
             kcpgo chooses its "thread" runtime (sessions driven by its "kcpgo-io" thread)
  hub        no patching, gevent.spawn where concurrency is needed and KCPGO_RUNTIME=hub: an
             unpatched greenlet program on the main thread's hub (the tool's ends before issue 12)
Until kcpgo has set_runtime() (issue 12), unpatched and hub ends both run on the hub; what
each client end ran is reported as "kcpgo_runtime" (kcpgo.get_runtime(), "thread" or "hub").

--compare-runtimes (sink, ping, echo) measures kcpgo -> kcpgo with both ends patched, then
both ends unpatched, --runs times interleaved (patched, unpatched, patched, ...; default 3),
and prints the medians and the ratios unpatched / patched of: sink and echo MB/s (10^6 bytes
per second; above 1: unpatched is faster), ping p50 and p99 round-trip µs (above 1: unpatched
is slower), beside issue 12's targets (sink >= 0.7, ping p50 <= 1.5):

  python tools/bench.py sink --compare-runtimes --runs 3
  python tools/bench.py ping --compare-runtimes --runs 3 --json

Settings default to the project's benchmark settings: stream mode, fast3, windows 1024/1024,
MTU 1400, 64 KiB writes, 4 MiB socket buffers. A kcp-go server applies them after accepting
the session (kcp-go has no other way); a kcpgo server applies them at listen() unless
--after-accept, which configures it the way kcp-go applications and kcptun do: listen with
the defaults (32-segment windows), then set mode, stream mode, MTU and windows on the
accepted session. --mb N makes sink send exactly N MB (the server's first-to-last-byte
time is reported as "s", with the slowest run).

A sink run whose client makes no progress for --stall seconds (10) is reported as stalled
(which pair, for how long, both ends' counters and, when recognised, the cause) instead of
measured; the other runs and pairs go on, and the tool exits with status 3. kcp-go 5.6.1
itself stalls Go -> Go now and then (7 runs in 310 on a loaded 2-core machine): its
listener runs a new session with 32-segment windows until AcceptKCP returns and the server
calls SetWindowSize, and never announces the larger window; if the client filled those 32
slots first, it waits 7 s for its window probe, and a server idle for --idle seconds has
ended by then (docs/deviations.md C2). The tool names that cause "kcp-go-listener-window".
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and "--role" in sys.argv[1:]:
    # A kcpgo end with --runtime patched (the default) patches before anything else is
    # imported, as a monkey-patched application does (gevent's docs: "patch as early as
    # possible"). role_argv always passes "--runtime NAME".
    _i = sys.argv.index("--runtime") if "--runtime" in sys.argv else -1
    if _i < 0 or sys.argv[_i + 1:_i + 2] == ["patched"]:
        from gevent import monkey
        monkey.patch_all()

import argparse     # noqa: E402  (after the patch above)
import hashlib      # noqa: E402
import json         # noqa: E402
import os           # noqa: E402
import shutil       # noqa: E402
import signal       # noqa: E402
import statistics   # noqa: E402
import subprocess   # noqa: E402
import tempfile     # noqa: E402
import threading    # noqa: E402
import time         # noqa: E402
from typing import Any, Callable, Dict, List, Optional   # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GOBENCH_SRC = os.path.join(HERE, "gobench", "gobench.go")
#: Exit status of a client role (and of the tool) when a run stalled; its JSON says how.
STALLED = 3
#: kcp-go 5.6.1's default receive window (IKCP_WND_RCV): a listener's session has it until the
#: application accepts and configures the session.
KCP_GO_WND_RCV = 32
KCP_OVERHEAD = 24
#: --runtime of the kcpgo ends (module docstring): how the role process runs and what it uses
#: for concurrency.
RUNTIMES = ("patched", "unpatched", "hub")
DEFAULT_RUNTIME = "patched"
#: --compare-runtimes: the contenders, in the order they run within each round, and the
#: figures compared (unpatched median / patched median) per mode.
COMPARED_RUNTIMES = ("patched", "unpatched")
RATIO_FIGURES = {"sink": ("MB/s",), "echo": ("MB/s",), "ping": ("p50 µs", "p99 µs")}
#: Issue 12, "Done when": unpatched sink >= 0.7 x patched sink; unpatched ping p50 <= 1.5 x
#: patched ping p50 (medians of 3, same run). (mode, figure) -> (comparison, bound).
RUNTIME_TARGETS = {("sink", "MB/s"): (">=", 0.7), ("ping", "p50 µs"): ("<=", 1.5)}
#: What each figure of the tables is, with its unit.
FIGURE_MEANINGS = {
    "MB/s": "10^6 bytes per second: sink, received by the server from its first to its last "
            "byte; echo, echoed back to the client over the client's run",
    "s": "seconds from the server's first to its last received byte",
    "p50 µs": "median round-trip time of one --size-byte message (client's sendall until the "
              "whole echo is read), microseconds",
    "p90 µs": "90th percentile of the same round-trip time, microseconds",
    "p99 µs": "99th percentile of the same round-trip time, microseconds",
}


def role_env(impl: str, a: argparse.Namespace) -> Optional[Dict[str, str]]:
    """Environment of one end: a kcpgo end gets KCPGO_RUNTIME=hub for --runtime hub and no
    KCPGO_RUNTIME otherwise (kcpgo's "auto": hub when patched, else thread); other ends inherit
    the tool's (None)."""
    if impl != "kcpgo":
        return None
    env = dict(os.environ)
    env.pop("KCPGO_RUNTIME", None)
    if getattr(a, "runtime", DEFAULT_RUNTIME) == "hub":
        env["KCPGO_RUNTIME"] = "hub"
    return env

# --------------------------------------------------------------------------- kcpgo roles


def _runtime_report(a: argparse.Namespace) -> dict:
    """How this kcpgo end runs: --runtime, whether gevent patched the socket module, and the
    runtime kcpgo chose ("thread" or "hub"; kcpgo without get_runtime() has only the hub).
    Raises SystemExit when the process is not patched as --runtime says."""
    import gevent.monkey
    import kcpgo
    patched = gevent.monkey.is_module_patched("socket")
    if patched != (a.runtime == "patched"):
        raise SystemExit(f"--runtime {a.runtime}, but socket patched: {patched}")
    return {"runtime": a.runtime, "patched": patched,
            "kcpgo_runtime": getattr(kcpgo, "get_runtime", lambda: "hub")()}


def _start(a: argparse.Namespace, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` concurrently as the --runtime's application would: a greenlet
    (gevent.spawn) for hub, else a daemon threading.Thread (a greenlet under the patch).
    Returns the greenlet or the thread."""
    if a.runtime == "hub":
        import gevent
        return gevent.spawn(fn, *args)
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


def _send_drops(s) -> Optional[int]:
    """Datagrams the session's UDP endpoint could not send (internals: best effort)."""
    try:
        return s._chan.endpoint.send_drops
    except Exception:                          # noqa: BLE001 - a report must not fail
        return None


def _session_opts(a: argparse.Namespace) -> dict:
    """What kcp-go applications set on a session (kcptun's fast3, stream mode)."""
    return dict(mode="fast3", stream=True, mtu=a.mtu, window=(a.sndwnd, a.rcvwnd))


def _kcpgo_opts(a: argparse.Namespace, session: bool = True) -> dict:
    """Options for dial/listen: FEC and cipher, plus the session's unless ``session`` is
    False (the listener of --after-accept)."""
    ds, ps = (int(x) for x in a.fec.split("/"))
    opts = dict(data_shards=ds, parity_shards=ps)
    if session:
        opts.update(_session_opts(a))
    if a.crypt:
        opts.update(crypt=a.crypt, key=a.key)
    return opts


def _configure_accepted(s, a: argparse.Namespace) -> None:
    """--after-accept: the kcp-go idiom (and kcptun's server), on kcpgo's setters."""
    o = _session_opts(a)
    s.set_mode(o["mode"])
    s.set_stream_mode(o["stream"])
    s.set_mtu(o["mtu"])
    s.set_window_size(*o["window"])


def _report(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def _kcp_state(s) -> dict:
    """A few fields of a kcpgo session's KCP state, for stall reports (internals: best effort)."""
    try:
        conn = getattr(s, "_conn", None) or s._chan.conn
        k = conn.kcp
        return {"snd_una": k.snd_una, "snd_nxt": k.snd_nxt, "wait_snd": k.wait_snd(),
                "rmt_wnd": k.rmt_wnd, "rcv_nxt": k.rcv_nxt, "rcv_wnd": k.rcv_wnd,
                "rcv_queue": len(k.rcv_queue), "wnd_sent": k.wnd_sent}
    except Exception as e:                     # noqa: BLE001 - a report must not fail
        return {"unavailable": repr(e)}


def kcpgo_server(a: argparse.Namespace) -> None:
    import kcpgo
    from kcpgo.address import format_address
    ends = _runtime_report(a)
    ln = kcpgo.listen(a.addr, **_kcpgo_opts(a, session=not a.after_accept))   # "host:port"
    print("LISTENING " + format_address(ln.getsockname()), flush=True)
    if a.mode == "conc":
        def echo(s):
            if a.after_accept:
                _configure_accepted(s, a)
            try:
                while True:
                    s.sendall(s.recv(65536))
            except OSError:
                s.close()
        while True:
            s, _ = ln.accept()
            _start(a, echo, s)                  # a thread, or a greenlet for --runtime hub
    s, _ = ln.accept()
    if a.after_accept:
        _configure_accepted(s, a)
    s.settimeout(a.idle)
    total = 0
    first = last = 0.0
    sink = a.mode == "sink"
    recv, sendall = s.recv, s.sendall
    while True:
        try:
            data = recv(1 << 20)
        except TimeoutError:
            break
        now = time.monotonic()
        if not total:
            first = now
        last = now
        total += len(data)
        if not sink:
            sendall(data)
    _report({"role": "server", "bytes": total, "seconds": last - first,
             "snmp": kcpgo.DEFAULT_SNMP.snapshot(), "kcp": _kcp_state(s), **ends})


def kcpgo_client(a: argparse.Namespace) -> None:
    import kcpgo
    ends = _runtime_report(a)
    s = kcpgo.dial(a.addr, timeout=a.stall, **_kcpgo_opts(a))      # "host:port"
    buf = os.urandom(a.size)
    if a.mode == "sink":
        start = last = time.monotonic()
        end = start + a.duration
        sent = 0
        goal = int(a.mb * 1e6) if a.mb else 0
        try:
            while (goal and sent < goal) or (not goal and time.monotonic() < end):
                chunk = buf if not goal or goal - sent >= len(buf) else buf[:goal - sent]
                s.sendall(chunk)                # the socket timeout (--stall) bounds each call
                sent += len(chunk)
                last = time.monotonic()
            s.drain(timeout=a.stall)
        except TimeoutError:
            now = time.monotonic()
            _report({"role": "client", "bytes": sent, "stalled": True, "stalled_s": now - last,
                     "elapsed": now - start, "snmp": kcpgo.DEFAULT_SNMP.snapshot(),
                     "kcp": _kcp_state(s), **ends})
            sys.exit(STALLED)
        _report({"role": "client", "bytes": sent, "snmp": kcpgo.DEFAULT_SNMP.snapshot(),
                 "send_drops": _send_drops(s), **ends})
    elif a.mode == "echo":
        echoed = 0
        failed: List[BaseException] = []

        def reader():
            nonlocal echoed
            try:
                while True:
                    data = s.recv(1 << 20)
                    if not data:
                        return
                    echoed += len(data)
            except OSError:                     # closed by the main thread below
                pass
            except BaseException as e:          # noqa: BLE001 - reported by the main thread
                failed.append(e)
        if a.runtime == "hub":
            import gevent
            nap = gevent.sleep                  # time.sleep would block the hub's greenlets
        else:
            nap = time.sleep                    # gevent.sleep under the patch
        g = _start(a, reader)
        start = time.monotonic()
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
    elif a.mode == "ping":
        rtts = []
        msg = buf[:a.size]
        for i in range(a.count + 20):
            t = time.perf_counter()
            s.sendall(msg)
            got = 0
            while got < len(msg):
                got += len(s.recv(65536))
            if i >= 20:
                rtts.append((time.perf_counter() - t) * 1e6)
        _report({"role": "client", "rtt_us": sorted(rtts), **ends})
    else:
        raise SystemExit("conc is driven by the Go client (--client go)")
    s.close()


# --------------------------------------------------------------------------- orchestration


def build_gobench() -> str:
    """Build tools/gobench once (cached by source hash) and return the binary's path."""
    if not shutil.which("go") or not os.path.isdir("/usr/share/gocode/src/github.com/xtaci/kcp-go"):
        raise SystemExit("the Go peer needs: apt-get install golang-go golang-github-xtaci-kcp-dev")
    with open(GOBENCH_SRC, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    out_dir = os.path.join(tempfile.gettempdir(), f"kcpgo-gobench-{digest}")
    binary = os.path.join(out_dir, "gobench")
    if not os.path.exists(binary):
        os.makedirs(out_dir, exist_ok=True)
        env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode",
                   GOCACHE=os.path.join(out_dir, "cache"), CGO_ENABLED="0")
        subprocess.run(["go", "build", "-o", binary + ".tmp", GOBENCH_SRC], check=True, env=env,
                       cwd=os.path.dirname(GOBENCH_SRC))
        os.replace(binary + ".tmp", binary)
    return binary


def role_argv(impl: str, role: str, a: argparse.Namespace, addr: str) -> List[str]:
    """Command line of one end: kcpgo (this script), go (kcp-go) or tcp (Go net)."""
    common = ["-mode" if impl != "kcpgo" else "--mode", a.mode if a.mode != "lossy" else "sink"]
    if impl == "kcpgo":
        # Run from ROOT (the callers' cwd) with -m: the role imports this tree's kcpgo,
        # whatever kcpgo is installed.
        return ([sys.executable, "-m", "tools.bench", "--role", role, "--mode", common[1],
                 "--addr", addr, "--crypt", a.crypt or "", "--key", a.key, "--fec", a.fec,
                 "--mtu", str(a.mtu), "--sndwnd", str(a.sndwnd), "--rcvwnd", str(a.rcvwnd),
                 "--size", str(a.size), "--duration", str(a.duration), "--count", str(a.count),
                 "--idle", str(a.idle), "--mb", str(a.mb), "--stall", str(a.stall),
                 "--runtime", getattr(a, "runtime", DEFAULT_RUNTIME)]
                + (["--after-accept"] if a.after_accept else []))
    ds, ps = a.fec.split("/")
    return [build_gobench(), "-role", role, "-mode", common[1], "-addr", addr,
            "-transport", "tcp" if impl == "tcp" else "kcp", "-crypt", a.crypt or "",
            "-key", a.key, "-ds", ds, "-ps", ps, "-mtu", str(a.mtu), "-sndwnd", str(a.sndwnd),
            "-rcvwnd", str(a.rcvwnd), "-size", str(a.size), "-duration", str(a.duration),
            "-count", str(a.count), "-sessions", str(a.sessions), "-idle", str(a.idle),
            "-sockbuf", str(4 << 20), "-bytes", str(int(a.mb * 1e6)), "-stall", str(a.stall)]


def _proc_stat(pid: int) -> tuple:
    """(cpu seconds, peak RSS bytes) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return cpu, hwm


class Progress:
    """A one-line progress bar on stderr for runs longer than a couple of seconds."""

    def __init__(self, label: str, seconds: float) -> None:
        self.label, self.seconds = label, seconds
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Progress":
        if self.seconds >= 2 and sys.stderr.isatty():
            self._t.start()
        return self

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(0.2):
            frac = min(1.0, (time.monotonic() - start) / self.seconds)
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r  {self.label:30} [{bar:30}] {frac:4.0%}")
            sys.stderr.flush()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._t.is_alive():
            self._t.join()
            sys.stderr.write("\r" + " " * 80 + "\r")


def start_server(impl: str, a: argparse.Namespace) -> tuple:
    proc = subprocess.Popen(role_argv(impl, "server", a, "127.0.0.1:0"), stdout=subprocess.PIPE,
                            text=True, cwd=ROOT, env=role_env(impl, a))
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise RuntimeError(f"{impl} server did not start: {line!r}")
    return proc, line.split()[1]


def last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no result in output: {text[-500:]!r}")


def run_pair(server: str, client: str, a: argparse.Namespace) -> Dict[str, Any]:
    """One measurement; returns the figures of the mode (numbers, named as in
    FIGURE_MEANINGS) and, with a kcpgo client, "client_end": how that end ran
    (:func:`_runtime_report`'s runtime, patched, kcpgo_runtime)."""
    srv, addr = start_server(server, a)
    relay = None
    try:
        target = addr
        if a.mode == "lossy":
            relay, target = start_relay(addr, a)
        label = f"{a.mode} {client}->{server}"
        with Progress(label, 0 if a.mb else a.duration):
            cpu0, _ = _proc_stat(srv.pid)
            t0 = time.monotonic()
            cli = subprocess.run(role_argv(client, "client", a, target), capture_output=True,
                                 text=True, timeout=a.duration + 120, cwd=ROOT,
                                 env=role_env(client, a))
            wall = time.monotonic() - t0
            cpu1, hwm = _proc_stat(srv.pid)
        if cli.returncode == STALLED:
            raise Stalled(stall_report(server, client, a, last_json(cli.stdout),
                                       _server_result(srv, a)))
        if cli.returncode != 0:
            raise RuntimeError(f"{client} client failed ({client} -> {server}): "
                               f"{cli.stderr[-2000:]}")
        result = last_json(cli.stdout)
        figures = _figures(a, srv, result, cpu1 - cpu0, wall, hwm)
        if "kcpgo_runtime" in result:
            figures["client_end"] = {k: result[k] for k in ("runtime", "patched",
                                                             "kcpgo_runtime")}
        return figures
    finally:
        if srv.poll() is None:
            srv.send_signal(signal.SIGTERM)
            try:
                srv.wait(timeout=5)
            except subprocess.TimeoutExpired:
                srv.kill()
        if relay is not None:
            relay.terminate()
            relay.wait(timeout=5)


def _figures(a: argparse.Namespace, srv: subprocess.Popen, result: dict, cpu: float,
             wall: float, hwm: int) -> Dict[str, Any]:
    """The figures of one run from the client's report (and the sink server's, read from
    ``srv``); ``cpu`` is the server's CPU seconds over ``wall`` seconds, ``hwm`` its peak RSS
    in bytes."""
    if a.mode in ("sink", "lossy"):
        out, _ = srv.communicate(timeout=a.idle + 30)
        s = last_json(out)
        figures = {"MB/s": s["bytes"] / max(s["seconds"], 1e-9) / 1e6, "s": s["seconds"]}
        snmp = result.get("snmp")
        if snmp and a.verbose:
            figures["retrans %"] = 100 * snmp["RetransSegs"] / max(snmp["OutSegs"], 1)
        return figures
    if a.mode == "echo":
        return {"MB/s": result["echoed"] / result["seconds"] / 1e6}
    if a.mode == "ping":
        r = result["rtt_us"]
        q = lambda p: r[min(len(r) - 1, int(p * len(r)))]  # noqa: E731
        return {"p50 µs": q(0.5), "p90 µs": q(0.9), "p99 µs": q(0.99)}
    if a.mode == "conc":
        return {"server CPU %": cpu / wall * 100, "server RSS MB": hwm / 1e6,
                "messages": result["messages"], "errors": result["errors"],
                "p50 µs": result["p50_us"]}
    raise AssertionError(a.mode)


class Stalled(Exception):
    """A run whose client made no progress for --stall s; ``info`` is :func:`stall_report`'s."""

    def __init__(self, info: dict) -> None:
        super().__init__(info)
        self.info = info


#: Stalls whose cause is known, by the name :func:`diagnose_stall` gives them.
STALL_CAUSES = {
    "kcp-go-listener-window":
        "kcp-go 5.6.1 (Go <-> Go): the listener's new session still had its 32-segment window "
        "when the client filled it; SetWindowSize after AcceptKCP is never announced, the "
        "client's window probe waits 7 s, and the server had ended after --idle seconds "
        "without data (docs/deviations.md C2)",
}


def _server_result(srv: subprocess.Popen, a: argparse.Namespace) -> Optional[dict]:
    """The server's report, if it made one (a sink server ends --idle s after the last data)."""
    try:
        out, _ = srv.communicate(timeout=a.idle + 30)
        return last_json(out)
    except (subprocess.TimeoutExpired, RuntimeError, ValueError):
        return None


def diagnose_stall(server: str, client: str, a: argparse.Namespace,
                   srv: Optional[dict]) -> Optional[str]:
    """The known cause of a stall (a key of STALL_CAUSES), from both ends' counters, or None.

    kcp-go's listener window trap: both ends kcp-go; the server received no more than the 32
    segments of kcp-go's default window (with their data, at most 32 full segments) and nothing
    after them, so the client's window probe (7 s) came after the server's idle end. A kcpgo
    end never qualifies: its listener announces a window it enlarged, and its client probes
    after 500 ms (README, Differences from kcp-go).
    """
    if (server, client) != ("go", "go") or srv is None or a.idle >= 7:
        return None
    in_segs = (srv.get("snmp") or {}).get("InSegs")
    if in_segs is not None and in_segs <= KCP_GO_WND_RCV \
            and srv.get("bytes", 0) <= KCP_GO_WND_RCV * (a.mtu - KCP_OVERHEAD):
        return "kcp-go-listener-window"
    return None


def stall_report(server: str, client: str, a: argparse.Namespace, cli: dict,
                 srv: Optional[dict]) -> dict:
    """What a stalled run leaves: how long, how far each end got, both ends' counters."""
    cause = diagnose_stall(server, client, a, srv)
    return {"server": server, "client": client,
            "stalled_s": round(cli.get("stalled_s", float("nan")), 2),
            "elapsed_s": round(cli.get("elapsed", float("nan")), 2),
            "client_bytes": cli.get("bytes"),
            "server_bytes": srv.get("bytes") if srv else None,
            "client_snmp": cli.get("snmp"), "server_snmp": srv.get("snmp") if srv else None,
            "client_kcp": cli.get("kcp"), "server_kcp": srv.get("kcp") if srv else None,
            "cause": cause, "explanation": STALL_CAUSES.get(cause, "unknown: investigate")}


def describe_stall(st: dict) -> str:
    def segs(snmp: Optional[dict]) -> str:
        if not snmp:
            return "-"
        return "/".join(str(snmp.get(k, "?")) for k in ("OutSegs", "InSegs", "RetransSegs"))
    text = (f"STALLED {st['client']} -> {st['server']} (run {st.get('run', 1)}): no progress for "
            f"{st['stalled_s']} s ({st['elapsed_s']} s into the run); client wrote "
            f"{st['client_bytes']} B, server received "
            f"{'no report' if st['server_bytes'] is None else str(st['server_bytes']) + ' B'}; "
            f"segments out/in/retrans: client {segs(st['client_snmp'])}, "
            f"server {segs(st['server_snmp'])}")
    for side in ("client", "server"):
        if st.get(f"{side}_kcp"):
            text += f"; {side} kcp {st[side + '_kcp']}"
    return text + f"\n  cause: {st['cause'] or 'unknown'}: {st['explanation']}"


def start_relay(server_addr: str, a: argparse.Namespace):
    """The lossy-link relay between client and server, in its own process (this tree's)."""
    argv = [sys.executable, "-m", "kcpgo.testing.relay", "--upstream", server_addr,
            "--listen", "127.0.0.1:0",
            "--both", f"loss={a.loss * 100:g}%,delay={a.rtt / 2:g}ms", "--seed", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise RuntimeError(f"netem did not start: {line!r}")
    return proc, line.split()[1]


def pairs_for(a: argparse.Namespace) -> List[tuple]:
    if a.mode == "conc":
        pairs = [("kcpgo", "go"), ("go", "go")] if a.compare else [(a.server, "go")]
    elif a.compare:
        pairs = [("kcpgo", "kcpgo"), ("go", "go")]
        if a.mode in ("sink", "echo", "ping") and not a.crypt and a.fec == "0/0":
            pairs.append(("tcp", "tcp"))
        if a.mixed:
            pairs += [("go", "kcpgo"), ("kcpgo", "go")]
    else:
        pairs = [(a.server, a.client)]
    return pairs


def main() -> None:
    if sys.argv[1:2] == ["tunnel"]:             # its own flags: tools/bench_tunnel.py
        sys.path.insert(0, ROOT)
        from tools.bench_tunnel import main as tunnel_main
        sys.exit(tunnel_main(sys.argv[2:]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    ap.add_argument("mode", nargs="?", choices=["sink", "echo", "ping", "conc", "lossy"])
    ap.add_argument("--mode", dest="mode_opt", help=argparse.SUPPRESS)
    ap.add_argument("--role", choices=["server", "client"], help="run one kcpgo end (internal)")
    ap.add_argument("--addr", default="127.0.0.1:0", help=argparse.SUPPRESS)
    ap.add_argument("--server", default="kcpgo", choices=["kcpgo", "go", "tcp"])
    ap.add_argument("--client", default="kcpgo", choices=["kcpgo", "go", "tcp"])
    ap.add_argument("--compare", action="store_true", help="kcpgo pair vs Go pair (and TCP)")
    ap.add_argument("--mixed", action="store_true", help="with --compare: also kcpgo<->Go")
    ap.add_argument("--runs", type=int, default=None,
                    help="repeat and report medians (default 1; 3 with --compare-runtimes)")
    ap.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                    help="how kcpgo ends run: patched (gevent.monkey.patch_all(), threads), "
                         "unpatched (plain threads, kcpgo's thread runtime), hub (plain "
                         "greenlets, KCPGO_RUNTIME=hub); default %(default)s (see below)")
    ap.add_argument("--compare-runtimes", action="store_true",
                    help="sink, ping or echo: kcpgo->kcpgo with both ends patched vs both "
                         "unpatched, --runs interleaved; medians and ratios unpatched/patched "
                         "(MB/s, 10^6 B/s; p50/p99 round trip, µs)")
    ap.add_argument("--crypt", default="", help="cipher name (default: no crypto header)")
    ap.add_argument("--key", default="it's a secrect")
    ap.add_argument("--fec", default="0/0", help="data/parity shards, e.g. 10/3")
    ap.add_argument("--mtu", type=int, default=1400)
    ap.add_argument("--sndwnd", type=int, default=1024)
    ap.add_argument("--rcvwnd", type=int, default=1024)
    ap.add_argument("--size", type=int, default=None, help="write/message size in bytes")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    ap.add_argument("--mb", type=float, default=0.0,
                    help="sink: send exactly this many MB (10^6 bytes) instead of --duration")
    ap.add_argument("--after-accept", action="store_true",
                    help="kcpgo server: configure each session after accept() (kcp-go style)")
    ap.add_argument("--count", type=int, default=2000, help="ping: round trips")
    ap.add_argument("--sessions", type=int, default=1000, help="conc: sessions")
    ap.add_argument("--rtt", type=float, default=50.0, help="lossy: round-trip delay, ms")
    ap.add_argument("--loss", type=float, default=0.05, help="lossy: loss each way")
    ap.add_argument("--idle", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--stall", type=float, default=10.0,
                    help="sink: seconds without progress that make a run stalled (reported)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--verbose", action="store_true", help="also kcpgo's retransmission rate")
    a = ap.parse_args()
    a.mode = a.mode_opt or a.mode
    if a.mode is None:
        ap.error("a mode is required")
    if a.size is None:
        a.size = 64 if a.mode in ("ping",) else 100 if a.mode == "conc" else 65536
    if a.runs is None:
        a.runs = 3 if a.compare_runtimes else 1
    if a.role == "server":
        return kcpgo_server(a)
    if a.role == "client":
        return kcpgo_client(a)
    if a.mode == "lossy" and a.idle < 3:
        a.idle = 3.0
    if a.mb and a.duration < 60:
        # --mb: the duration only bounds the client process (a stalled run is one whose
        # client made no progress for --stall s, reported as such): a slow run is measured.
        a.duration = 60.0
    if a.compare_runtimes:
        if a.mode not in RATIO_FIGURES or a.compare or a.mixed \
                or (a.server, a.client) != ("kcpgo", "kcpgo"):
            ap.error("--compare-runtimes: mode sink, ping or echo, kcpgo ends, no --compare")
        doc = compare_runtimes(a)
        print_runtime_comparison(a, doc)
        if any(r["stalls"] for r in doc["results"]):
            sys.exit(STALLED)
        return
    results = []
    for server, client in pairs_for(a):
        runs, stalls = [], []
        for i in range(a.runs):
            try:
                runs.append(run_pair(server, client, a))
            except Stalled as e:                # reported, not measured; the others go on
                stalls.append(dict(e.info, run=i + 1))
                print(describe_stall(stalls[-1]), file=sys.stderr, flush=True)
        results.append(summarise(server, client, runs, stalls))
    print_results(a, results)
    if any(r["stalls"] for r in results):
        sys.exit(STALLED)


def summarise(server: str, client: str, runs: List[Dict[str, Any]],
              stalls: List[dict]) -> dict:
    """One pair's result: its numeric figures' medians and maxima over ``runs``, the runs
    themselves, the stalls, and (kcpgo client) the kcpgo runtimes its client ends reported."""
    keys = [k for k, v in (runs[0] if runs else {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    worst = {k: max(r[k] for r in runs) for k in keys}
    out = {"server": server, "client": client, "median": med, "max": worst,
           "runs": runs, "stalls": stalls}
    ends = sorted({r["client_end"]["kcpgo_runtime"] for r in runs if "client_end" in r})
    if ends:
        out["kcpgo_runtime"] = "/".join(ends)
    return out


def compare_runtimes(a: argparse.Namespace) -> dict:
    """--compare-runtimes: kcpgo -> kcpgo with both ends under each of COMPARED_RUNTIMES,
    ``a.runs`` rounds, each round running every contender once in order (interleaved, so a
    machine's drift touches both alike). Returns the JSON document: mode and settings,
    "results" (one :func:`summarise` per contender, with its "runtime"), "ratios" (figure ->
    unpatched median / patched median, None when either has no median) and "targets"
    (issue 12's bounds for this mode: figure -> {"op", "bound", "met"})."""
    runs: Dict[str, list] = {rt: [] for rt in COMPARED_RUNTIMES}
    stalls: Dict[str, list] = {rt: [] for rt in COMPARED_RUNTIMES}
    for i in range(a.runs):
        for rt in COMPARED_RUNTIMES:
            b = argparse.Namespace(**dict(vars(a), runtime=rt))
            try:
                runs[rt].append(run_pair("kcpgo", "kcpgo", b))
            except Stalled as e:                # reported, not measured; the others go on
                stalls[rt].append(dict(e.info, run=i + 1, runtime=rt))
                print(describe_stall(stalls[rt][-1]), file=sys.stderr, flush=True)
    results = [dict(summarise("kcpgo", "kcpgo", runs[rt], stalls[rt]), runtime=rt)
               for rt in COMPARED_RUNTIMES]
    base, other = (r["median"] for r in results)
    ratios: Dict[str, Optional[float]] = {}
    for k in RATIO_FIGURES[a.mode]:
        ratios[k] = other[k] / base[k] if base.get(k) and k in other else None
    targets = {}
    for (mode, k), (op, bound) in RUNTIME_TARGETS.items():
        if mode == a.mode:
            r = ratios.get(k)
            met = None if r is None else (r >= bound if op == ">=" else r <= bound)
            targets[k] = {"op": op, "bound": bound, "met": met}
    return {"mode": a.mode, "crypt": a.crypt or None, "fec": a.fec, "size": a.size,
            "runs_per_runtime": a.runs, "compare_runtimes": list(COMPARED_RUNTIMES),
            "results": results, "ratios": ratios, "targets": targets}


def print_runtime_comparison(a: argparse.Namespace, doc: dict) -> None:
    """The --compare-runtimes table (or ``doc`` as JSON with --json)."""
    if a.json:
        print(json.dumps(doc, indent=1))
        return
    results = doc["results"]
    keys = list(next((r["median"] for r in results if r["median"]), {}))
    what = (f"{a.count} round trips of {a.size} B" if a.mode == "ping"
            else f"{a.mb:g} MB" if a.mb and a.mode == "sink"
            else f"{a.size} B writes for {a.duration:g} s")
    print(f"\n{a.mode}: kcpgo -> kcpgo, both ends patched vs both ends unpatched; "
          f"{what} per run;\ncrypt={a.crypt or 'off'} fec={a.fec} mtu={a.mtu} "
          f"wnd={a.sndwnd}/{a.rcvwnd}; medians of {a.runs} interleaved runs each")
    print(f"{'--runtime':12}{'kcpgo runtime':>14}" + "".join(f"{k:>12}" for k in keys))
    for r in results:
        print(f"{r['runtime']:12}{r.get('kcpgo_runtime', '-'):>14}"
              + "".join(f"{r['median'].get(k, float('nan')):12.2f}" for k in keys)
              + (f"   {len(r['stalls'])} of {a.runs} runs STALLED" if r["stalls"] else ""))
    for r in results:
        for st in r["stalls"]:
            print(describe_stall(st))
    unpatched = results[COMPARED_RUNTIMES.index("unpatched")].get("kcpgo_runtime")
    if unpatched not in (None, "thread"):
        print(f"note: the unpatched ends ran kcpgo's {unpatched!r} runtime, not 'thread' (this "
              f"kcpgo has no set_runtime()?): the ratios do not measure the thread runtime")
    for k, ratio in doc["ratios"].items():
        line = (f"ratio unpatched / patched, {k}: "
                + ("n/a (a contender has no figure)" if ratio is None else f"{ratio:.2f}"))
        tgt = doc["targets"].get(k)
        if tgt:
            verdict = {True: "met", False: "NOT met", None: "not measured"}[tgt["met"]]
            line += f"   (issue 12 target {tgt['op']} {tgt['bound']:.2f}: {verdict})"
        print(line)
    print("figures:")
    for k in keys:
        print(f"  {k:8} {FIGURE_MEANINGS.get(k, '')}")
    print("  kcpgo runtime: what kcpgo.get_runtime() returned in the client end (thread: "
          "sessions in the kcpgo-io thread; hub: on the main thread's gevent hub)")


def print_results(a: argparse.Namespace, results: List[dict]) -> None:
    if a.json:
        print(json.dumps({"mode": a.mode, "crypt": a.crypt or None, "fec": a.fec,
                          "results": results}, indent=1))
        return
    keys = list(next((r["median"] for r in results if r["median"]), {}))
    print(f"\n{a.mode}: crypt={a.crypt or 'off'} fec={a.fec} mtu={a.mtu} "
          f"wnd={a.sndwnd}/{a.rcvwnd} size={a.size} runs={a.runs} runtime={a.runtime} "
          f"{'after accept' if a.after_accept else 'kcpgo server at listen'}"
          f"{f' {a.mb:g} MB' if a.mb else ''} (medians)")
    print(f"{'client -> server':22}" + "".join(f"{k:>16}" for k in keys))
    for r in results:
        print(f"{r['client'] + ' -> ' + r['server']:22}"
              + "".join(f"{r['median'].get(k, float('nan')):16.2f}" for k in keys)
              + (f"   slowest run {r['max']['s']:.2f} s" if "s" in r["max"] else "")
              + (f"   {len(r['stalls'])} of {a.runs} runs STALLED" if r["stalls"] else ""))
    for r in results:
        for st in r["stalls"]:
            print(describe_stall(st))
    base = next((r for r in results if r["server"] == "go" and r["client"] == "go"), None)
    if base is not None and base["median"]:
        for r in results:
            if r is base or not r["median"]:
                continue
            k = keys[0]
            ratio = r["median"][k] / base["median"][k] if base["median"][k] else float("nan")
            print(f"ratio {r['client']}->{r['server']} / go->go ({k}): {ratio:.2f}")


if __name__ == "__main__":
    main()
