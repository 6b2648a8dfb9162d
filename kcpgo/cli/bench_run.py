"""One ``python -m kcpgo bench`` measurement: a server end and a client end, each its own
process, and the figures of the run (:func:`run_pair`).

The ends (``impl``):

* ``kcpgo``: :mod:`kcpgo.cli.bench_role` on this kcpgo (``python -c BOOT``, run from the
  directory that holds this ``kcpgo`` package, so it is this very code);
* ``pytcp``: the same role on Python's plain TCP sockets;
* ``go``: kcp-go 5.6.1 and ``tcp``: Go's net, both ``tools/gobench/gobench.go``, built on first
  use (:mod:`kcpgo.testing.golang`) from Debian's ``golang-go`` and
  ``golang-github-xtaci-kcp-dev``. Its source is in kcpgo's source tree, not in an installed
  package: there :func:`unavailable` says why these ends cannot run, and the benchmark skips
  them with that reason.

A sink run whose client makes no progress for --stall seconds raises :class:`Stalled` with
:func:`stall_report` (which pair, how long, both ends' counters and, when recognised, the
cause, :data:`STALL_CAUSES`), instead of measuring it.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..testing.golang import build_go_program, go_available, go_program_path
from ..testing.process import reap
from .bench_progress import Progress, RunProgress
from .bench_role import BOOT, STALLED
from .bench_workers import (children_cpu, multi, process_tree, session_reports, sink_figures,
                            tree_stat, wait_gone)

__all__ = ["STALLED", "Stalled", "Child", "IMPLS", "PACKAGE_ROOT", "GOBENCH_SRC",
           "unavailable", "build_gobench", "role_argv", "role_env", "start_server",
           "run_pair", "stall_report", "describe_stall", "diagnose_stall", "STALL_CAUSES",
           "last_json", "SAMPLE_EVERY"]

#: The directory that holds this ``kcpgo`` package (a checkout's root, or site-packages): the
#: kcpgo ends run there, so they import this kcpgo.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
#: The Go ends' source: in kcpgo's source tree only (not installed with the package).
GOBENCH_SRC = PACKAGE_ROOT / "tools" / "gobench" / "gobench.go"
#: Every kind of end: kcpgo, Python TCP, kcp-go (Go), Go TCP.
IMPLS = ("kcpgo", "pytcp", "go", "tcp")
#: Seconds between the counting end's ``SAMPLE`` lines (progress and ``--plot``).
SAMPLE_EVERY = 0.1
#: kcp-go 5.6.1's default receive window (IKCP_WND_RCV): a listener's session has it until the
#: application accepts and configures the session.
KCP_GO_WND_RCV = 32
KCP_OVERHEAD = 24


def unavailable(impl: str) -> Optional[str]:
    """Why ends of ``impl`` cannot run here (one line), or None if they can."""
    if impl not in ("go", "tcp"):
        return None
    if not GOBENCH_SRC.is_file():
        return (f"the Go peer's source ({GOBENCH_SRC.relative_to(PACKAGE_ROOT)}) comes with "
                f"kcpgo's source tree, not with an installed kcpgo: run from a checkout")
    ok, reason = go_available()
    return None if ok else reason


def build_gobench(progress: Optional[Progress] = None) -> str:
    """The Go ends' binary, built once (cached by source hash; tens of seconds the first
    time, said on ``progress``). Raises ``RuntimeError`` with the reason when it cannot be
    built (:func:`unavailable`, or go's output)."""
    reason = unavailable("go")
    if reason:
        raise RuntimeError(reason)
    if progress is not None and not go_program_path(GOBENCH_SRC, "gobench").is_file():
        progress.note("building the Go peer (tools/gobench/gobench.go, once; cached)...")
    return str(build_go_program(GOBENCH_SRC, "gobench"))


def role_env(impl: str, a: argparse.Namespace) -> Optional[Dict[str, str]]:
    """Environment of one end: a kcpgo end gets KCPGO_RUNTIME=hub for --runtime hub and no
    KCPGO_RUNTIME otherwise (kcpgo's "auto": hub when patched, else thread); other ends inherit
    the benchmark's (None)."""
    if impl != "kcpgo":
        return None
    env = dict(os.environ)
    env.pop("KCPGO_RUNTIME", None)
    if getattr(a, "runtime", "patched") == "hub":
        env["KCPGO_RUNTIME"] = "hub"
    return env


def role_argv(impl: str, role: str, a: argparse.Namespace, addr: str) -> List[str]:
    """Command line of one end (module docstring): ``impl`` of :data:`IMPLS`, ``role`` server
    or client, ``addr`` to listen on or dial (``host:port``)."""
    mode = a.mode if a.mode != "lossy" else "sink"
    if impl in ("kcpgo", "pytcp"):
        # a TCP baseline is plain blocking code on OS threads: no patching
        runtime = getattr(a, "runtime", "patched") if impl == "kcpgo" else "unpatched"
        return ([sys.executable, "-c", BOOT, "--role", role, "--mode", mode, "--addr", addr,
                 "--transport", "kcp" if impl == "kcpgo" else "tcp",
                 "--crypt", a.crypt or "", "--key", a.key, "--fec", a.fec,
                 "--mtu", str(a.mtu), "--sndwnd", str(a.sndwnd), "--rcvwnd", str(a.rcvwnd),
                 "--size", str(a.size), "--duration", str(a.duration), "--count", str(a.count),
                 "--idle", str(a.idle), "--mb", str(a.mb), "--stall", str(a.stall),
                 "--sample", str(SAMPLE_EVERY), "--runtime", runtime]
                + (["--after-accept"] if getattr(a, "after_accept", False) else [])
                + (["--workers", str(a.workers)] if role == "server" and multi(a) else []))
    ds, ps = a.fec.split("/")
    return [build_gobench(), "-role", role, "-mode", mode, "-addr", addr,
            "-transport", "tcp" if impl == "tcp" else "kcp", "-crypt", a.crypt or "",
            "-key", a.key, "-ds", ds, "-ps", ps, "-mtu", str(a.mtu), "-sndwnd", str(a.sndwnd),
            "-rcvwnd", str(a.rcvwnd), "-size", str(a.size), "-duration", str(a.duration),
            "-count", str(a.count), "-sessions", str(getattr(a, "sessions", 100)),
            "-period", str(getattr(a, "period", 1.0)),
            "-ramp", str(-1 if getattr(a, "ramp", None) is None else a.ramp),
            "-idle", str(a.idle), "-sockbuf", str(4 << 20), "-bytes", str(int(a.mb * 1e6)),
            "-stall", str(a.stall), "-sample", str(SAMPLE_EVERY)] + (
                ["-nodelay", f"1,{a.client_interval},2,1"]      # fast3 with that interval
                if role == "client" and getattr(a, "client_interval", None) else [])


class Child:
    """A benchmark end as a child process; threads read its output as it comes: ``SAMPLE``
    lines go to ``samples`` (and ``on_sample(seconds, count)``), other stdout lines to
    ``lines``, stderr to ``errors``. ``stdin``: its standard input is a pipe, for
    :meth:`send_line` (else ``/dev/null``)."""

    def __init__(self, argv: List[str], env: Optional[Dict[str, str]] = None,
                 on_sample: Optional[Callable[[float, int], None]] = None,
                 stdin: bool = False) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, bufsize=1,
                                     cwd=str(PACKAGE_ROOT), env=env)
        self.on_sample = on_sample
        self.lines: List[str] = []
        self.errors: List[str] = []
        self.samples: List[Tuple[float, int]] = []
        self._line = threading.Event()          # a stdout line (not a sample) came, or EOF
        self._readers = [threading.Thread(target=self._read_out, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._readers:
            t.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("SAMPLE "):
                try:
                    t, n = float(line.split()[1]), int(line.split()[2])
                except (ValueError, IndexError):
                    continue
                self.samples.append((t, n))
                if self.on_sample is not None:
                    self.on_sample(t, n)
            else:
                self.lines.append(line.rstrip("\n"))
                self._line.set()
        self._line.set()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send_line(self, text: str) -> None:
        """Write ``text`` and a newline to its standard input, then close that."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.close()
        except OSError:                         # it died: its exit status will say why
            pass

    def first_line(self, timeout: float) -> str:
        """The first stdout line that is not a sample (``""`` after EOF or ``timeout`` s)."""
        self._line.wait(timeout)
        return self.lines[0] if self.lines else ""

    def wait(self, timeout: float, tick: Optional[Callable[[], None]] = None) -> int:
        """Wait up to ``timeout`` seconds for the process to end, calling ``tick`` about
        every 100 ms; its exit status, once its output is read. Raises
        ``subprocess.TimeoutExpired``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.proc.wait(min(0.1, max(0.0, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise
            if tick is not None:
                tick()
        for t in self._readers:
            t.join(5)
        return self.proc.returncode

    def stdout(self) -> str:
        return "\n".join(self.lines)

    def stderr(self) -> str:
        return "".join(self.errors)

    def stop(self) -> None:
        """SIGTERM (then SIGKILL after 5 s) if still running; then its pipes are closed
        (once the reader threads have read them out)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        reap(self.proc, timeout=5, before_close=self._join_readers)

    def _join_readers(self) -> None:
        for t in self._readers:
            t.join(5)


def start_server(impl: str, a: argparse.Namespace,
                 on_sample: Optional[Callable[[float, int], None]] = None) -> Tuple[Child, str]:
    """Start a server end; (the child, its ``host:port``) once it listens. ``RuntimeError``
    with its output if it does not within 30 s."""
    srv = Child(role_argv(impl, "server", a, "127.0.0.1:0"), role_env(impl, a), on_sample)
    try:
        line = srv.first_line(30)
        if not line.startswith("LISTENING "):
            srv.stop()
            raise RuntimeError(f"{impl} server did not start: {line!r} {srv.stderr()[-2000:]}")
    except BaseException:       # Ctrl-C while it starts: the caller never holds it
        srv.stop()
        raise
    return srv, line.split()[1]


def start_relay(server_addr: str, a: argparse.Namespace) -> Tuple[subprocess.Popen, str]:
    """The lossy-link relay between client and server, in its own process (this kcpgo's
    ``kcpgo.testing.relay``): --rtt ms round trip, --loss each way."""
    argv = [sys.executable, "-m", "kcpgo.testing.relay", "--upstream", server_addr,
            "--listen", "127.0.0.1:0",
            "--both", f"loss={a.loss * 100:g}%,delay={a.rtt / 2:g}ms", "--seed", "1"]
    # its impairment line on stderr is progress: not with --quiet
    quiet = subprocess.DEVNULL if getattr(a, "quiet", False) else None
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=quiet, text=True,
                            cwd=str(PACKAGE_ROOT))
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        if not line.startswith("LISTENING "):
            raise RuntimeError(f"netem did not start: {line!r}")
    except BaseException:       # as start_server: the caller never holds it
        proc.kill()
        reap(proc, timeout=5)
        raise
    return proc, line.split()[1]


def last_json(text: str) -> Dict[str, Any]:
    """The last JSON object line of an end's output. ``RuntimeError`` if there is none."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no result in output: {text[-500:]!r}")


def run_pair(server: str, client: str, a: argparse.Namespace,
             progress: Optional[RunProgress] = None) -> Dict[str, Any]:
    """One measurement; returns the figures of the mode (numbers, named as in
    ``kcpgo.cli.bench.FIGURE_MEANINGS``), for throughput modes "samples" (the counting end's
    ``[seconds, bytes]``, cumulative, every ~0.1 s: sink and lossy the server's from its first
    byte, echo the client's from its start) and, with a kcpgo client, "client_end": how that
    end ran (runtime, patched, kcpgo_runtime). With ``--workers`` or several ``--clients``
    (:mod:`kcpgo.cli.bench_workers`) the server serves them all and the figures add up its
    processes and sessions. Raises :class:`Stalled`, or ``RuntimeError`` when an end fails."""
    on_sample = progress.sample if progress is not None else None
    tick = progress.tick if progress is not None else None
    nclients = max(1, getattr(a, "clients", 1))
    each = a if nclients == 1 else argparse.Namespace(**dict(vars(a), mb=a.mb / nclients))
    sampled = on_sample if not multi(a) else None
    # A Python client starts (imports kcpgo) while the server does, and reads the address
    # from its stdin ("--addr -"): a second less per run.
    early = client in ("kcpgo", "pytcp")
    clis: List[Child] = []       # each appended as it starts: the finally stops them all
    cpu_clients0 = children_cpu()
    srv: Optional[Child] = None
    relay = None
    workers: List[int] = []
    try:
        if early:
            for _ in range(nclients):
                clis.append(Child(role_argv(client, "client", each, "-"), role_env(client, a),
                                  sampled, stdin=True))
        srv, addr = start_server(server, a, sampled)
        target = addr
        if a.mode == "lossy":
            relay, target = start_relay(addr, a)
        stat0 = tree_stat(process_tree(srv.pid))
        t0 = time.monotonic()
        if early:
            for cli in clis:
                cli.send_line(target)
        else:
            for _ in range(nclients):
                clis.append(Child(role_argv(client, "client", each, target),
                                  role_env(client, a), sampled))
        codes = []
        for cli in clis:
            left = max(1.0, t0 + a.duration + 120 - time.monotonic())
            try:
                codes.append(cli.wait(left, tick))
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{client} client did not finish ({client} -> {server}) "
                                   f"within {a.duration + 120:g} s") from None
        wall = time.monotonic() - t0
        workers = process_tree(srv.pid)
        stat1 = tree_stat(workers)
        cpu = sum(c - stat0.get(pid, (0.0, 0))[0] for pid, (c, _) in stat1.items())
        hwm = sum(h for _, h in stat1.values())
        cpu_clients = children_cpu() - cpu_clients0
        for cli, code in zip(clis, codes):
            if code == STALLED:
                raise Stalled(stall_report(server, client, a, last_json(cli.stdout()),
                                           None if multi(a) else _server_result(srv, a, tick)))
        for cli, code in zip(clis, codes):
            if code != 0:
                raise RuntimeError(f"{client} client failed ({client} -> {server}): "
                                   f"{cli.stderr()[-2000:]}")
        result = last_json(clis[0].stdout())
        if multi(a) and a.mode in ("sink", "lossy"):
            sessions = session_reports(srv.lines, nclients, a.idle + 30, tick)
            figures = sink_figures(sessions)
        else:
            figures = _figures(a, srv, result, cpu, wall, hwm, tick)
        if multi(a) or a.mode == "conc":
            figures.update({"server CPU %": cpu / wall * 100, "server RSS MB": hwm / 1e6,
                            "client CPU %": cpu_clients / wall * 100})
        if a.mode in ("sink", "lossy", "echo") and not multi(a):
            counting = clis[0] if a.mode == "echo" else srv
            figures["samples"] = [[round(t, 4), n] for t, n in counting.samples]
        if "kcpgo_runtime" in result:
            figures["client_end"] = {k: result[k] for k in ("runtime", "patched",
                                                             "kcpgo_runtime")}
        return figures
    finally:
        for cli in clis:
            cli.stop()
        if srv is not None:
            srv.stop()
            wait_gone(workers)
        if relay is not None:
            relay.terminate()
            reap(relay, timeout=5)


def _server_report(srv: Child, a: argparse.Namespace,
                   tick: Optional[Callable[[], None]]) -> Dict[str, Any]:
    """The sink server's report: it ends --idle s after its last byte."""
    srv.wait(a.idle + 30, tick)
    return last_json(srv.stdout())


def _figures(a: argparse.Namespace, srv: Child, result: Dict[str, Any], cpu: float,
             wall: float, hwm: int, tick: Optional[Callable[[], None]]) -> Dict[str, Any]:
    """The figures of one run from the client's report (and the sink server's); ``cpu`` is
    the server's CPU seconds over ``wall`` seconds, ``hwm`` its peak RSS in bytes."""
    if a.mode in ("sink", "lossy"):
        s = _server_report(srv, a, tick)
        figures: Dict[str, Any] = {"MB/s": s["bytes"] / max(s["seconds"], 1e-9) / 1e6,
                                   "s": s["seconds"]}
        if getattr(a, "verbose", False):
            snmp = result.get("snmp")          # a kcpgo client's (gobench's prints none)
            if snmp:
                figures["retrans %"] = 100 * snmp["RetransSegs"] / max(snmp["OutSegs"], 1)
            snmp = s.get("snmp")               # both servers print theirs
            if snmp and "RepeatSegs" in snmp:
                figures["dup %"] = 100 * snmp["RepeatSegs"] / max(snmp["InSegs"], 1)
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
                "p50 µs": result["p50_us"], "msgs/s": _rate(result, a.duration),
                "up s": result.get("up_s", float("nan")),
                "error kinds": result.get("error_kinds") or []}
    raise AssertionError(a.mode)


def _rate(result: Dict[str, Any], duration: float) -> float:
    """conc: messages echoed per second over the Go client's window (once every session had
    its first echo: "window_messages" / "window_s"), else over the whole run."""
    if result.get("window_s"):
        return result["window_messages"] / result["window_s"]
    return result["messages"] / duration


# --------------------------------------------------------------------------- stalls


class Stalled(Exception):
    """A run whose client made no progress for --stall s; ``info`` is :func:`stall_report`'s."""

    def __init__(self, info: Dict[str, Any]) -> None:
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


def _server_result(srv: Child, a: argparse.Namespace,
                   tick: Optional[Callable[[], None]] = None) -> Optional[Dict[str, Any]]:
    """The server's report, if it made one (a sink server ends --idle s after the last data)."""
    try:
        return _server_report(srv, a, tick)
    except (subprocess.TimeoutExpired, RuntimeError, ValueError):
        return None


def diagnose_stall(server: str, client: str, a: argparse.Namespace,
                   srv: Optional[Dict[str, Any]]) -> Optional[str]:
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


def stall_report(server: str, client: str, a: argparse.Namespace, cli: Dict[str, Any],
                 srv: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """What a stalled run leaves: how long (s), how far each end got (bytes), both ends'
    counters, the cause if known."""
    cause = diagnose_stall(server, client, a, srv)
    return {"server": server, "client": client,
            "stalled_s": round(cli.get("stalled_s", float("nan")), 2),
            "elapsed_s": round(cli.get("elapsed", float("nan")), 2),
            "client_bytes": cli.get("bytes"),
            "server_bytes": srv.get("bytes") if srv else None,
            "client_snmp": cli.get("snmp"), "server_snmp": srv.get("snmp") if srv else None,
            "client_kcp": cli.get("kcp"), "server_kcp": srv.get("kcp") if srv else None,
            "cause": cause, "explanation": STALL_CAUSES.get(cause or "", "unknown: investigate")}


def describe_stall(st: Dict[str, Any]) -> str:
    """A stall report (:func:`stall_report`, with its "run") as text for people."""
    def segs(snmp: Optional[Dict[str, Any]]) -> str:
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
