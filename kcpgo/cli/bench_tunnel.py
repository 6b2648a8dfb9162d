"""``python -m kcpgo bench tunnel``: TCP through a kcptun tunnel, kcptun's and ours, in one run.

Pairs (client + server, same flags on both, one process each, restarted for every
measurement as in docs/kcptun.md §10):

  kcptun        (i)   kcptun-client + kcptun-server        (Debian 20210922, the anchor)
  ours-kcptun   (ii)  python -m kcpgo tunnel client + kcptun-server
  ours          (iii) python -m kcpgo tunnel client + python -m kcpgo tunnel server
  kcptun-ours         kcptun-client + our server (optional, --pairs)

Measurements (docs/kcptun.md §10's method), traffic from this process (threads on plain
sockets), the tunnel ends in their own processes:

* upload: --mb MB (10^6 bytes) of random data (incompressible: snappy sends uncompressed
  chunks, kcptun.md §3.2) written into the tunnel client's TCP port; a TCP sink behind the
  server counts and hashes it (sha256 checked against what was sent). MB/s from the first
  write to the sink's last byte; CPU seconds (user + system) of each tunnel process over the
  transfer;
* rr: one TCP connection through the tunnel to an echo target, --size-byte request, wait for
  the whole echo, --count round trips after --warmup; p50/p90/p99 in µs, and each tunnel
  process's CPU µs per round trip.

Reported: medians over --runs runs per pair (runs interleaved across pairs), the ratios
(ii)/(i) and (iii)/(i), a table or --json; progress on stderr as it runs; --plot FILE.png
draws each pair's upload MB/s over time. Without kcptun's binaries (Debian: apt-get install
kcptun), the pairs that need them are skipped with the reason. Flags default to ``--mode
fast3`` plus the key and ``--quiet``; kcptun's defaults otherwise (aes, snappy, smux v1, FEC
10/3, MTU 1350, windows 128/512 and 1024/1024; kcptun.md §5.5). ``--extra "--nocomp"``
adds flags to every process.

examples:
  python -m kcpgo bench tunnel --runs 3
  python -m kcpgo bench tunnel --runs 3 --mb 200 --json --plot upload.png
  python -m kcpgo bench tunnel --pairs kcptun,ours-kcptun --extra "--nocomp --smuxver 2"

``KCPGO_TUNNEL_PROFILE=DIR``: our tunnel processes run under cProfile (``python -m cProfile
-o DIR/<pair>-<role>-<run>-<what>.prof``; the profile is written when they exit on SIGINT).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import signal
import statistics
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..testing.tunnel import (EchoServer, SinkServer, TunnelProcess, kcptun_available,
                              tunnel_cli_available)
from . import HelpFormatter
from .bench_progress import Progress, RunProgress, plot_available, plot_throughput

__all__ = ["main", "run", "PAIRS", "BenchError", "measure_upload", "measure_rr",
           "quantiles_us", "ratios"]

#: pair name -> (client implementation, server implementation)
PAIRS = {
    "kcptun": ("kcptun", "kcptun"),
    "ours-kcptun": ("kcpgo", "kcptun"),
    "ours": ("kcpgo", "kcpgo"),
    "kcptun-ours": ("kcptun", "kcpgo"),
}
DEFAULT_PAIRS = "kcptun,ours-kcptun,ours"
BASE = "kcptun"
KEY = "kcpgo bench"
#: Random data is sent as this buffer over and over (each smux frame / snappy chunk is far
#: smaller, so repetition gives the compressor nothing, kcptun.md §3.1).
BLOCK = 8 * 1024 * 1024
WRITE = 65536


class BenchError(RuntimeError):
    """A measurement failed (the tunnel lost or garbled data, or an end died)."""


# --------------------------------------------------------------------------- processes


def _python(impl: str, name: str) -> Optional[List[str]]:
    """The interpreter command for our CLI: under cProfile with ``KCPGO_TUNNEL_PROFILE``."""
    prof_dir = os.environ.get("KCPGO_TUNNEL_PROFILE")
    if impl != "kcpgo" or not prof_dir:
        return None
    os.makedirs(prof_dir, exist_ok=True)
    return [sys.executable, "-m", "cProfile", "-o", os.path.join(prof_dir, name + ".prof")]


class Tunnel:
    """A started pair: server (target ``target``) then client; ``address`` is the client's
    TCP port. ``stop()`` ends both (SIGINT first, so a profiled process writes its file)."""

    def __init__(self, pair: str, flags: List[str], target: Tuple[str, int],
                 tag: str) -> None:
        cimpl, simpl = PAIRS[pair]
        self.server = _process(simpl, "server", target, flags, f"{pair}-server-{tag}")
        self.client: Optional[TunnelProcess] = None
        try:
            self.server.start()
            self.client = _process(cimpl, "client", self.server.address, flags,
                                   f"{pair}-client-{tag}")
            self.client.start()
        except BaseException:
            self.stop()
            raise
        self.address = self.client.address

    def cpu(self) -> Tuple[Optional[float], Optional[float]]:
        assert self.client is not None
        return self.client.cpu_seconds(), self.server.cpu_seconds()

    def output(self) -> str:
        parts = [f"--- server ({self.server.impl}):\n{self.server.output()[-3000:]}"]
        if self.client is not None:
            parts.append(f"--- client ({self.client.impl}):\n{self.client.output()[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for p in (self.client, self.server):
            if p is not None and p.proc is not None and p.proc.poll() is None:
                p.signal(signal.SIGINT)
                try:
                    p.proc.wait(5)
                except Exception:
                    pass
            if p is not None:
                p.close()


def _process(impl: str, role: str, peer: Tuple[str, int], flags: List[str],
             name: str) -> TunnelProcess:
    return TunnelProcess(impl, role, peer, flags, python=_python(impl, name))


# --------------------------------------------------------------------------- measurements


#: Seconds between upload samples (progress and --plot).
SAMPLE_EVERY = 0.1


def _connect(address: Tuple[str, int], timeout: float) -> Any:
    import socket
    s = socket.create_connection(address, timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def measure_upload(pair: str, flags: List[str], nbytes: int, block: bytes, expect: str,
                   tag: str, timeout: float,
                   progress: Optional[RunProgress] = None) -> Dict[str, Any]:
    """One upload run: fresh processes, ``nbytes`` through the tunnel into a sink. Figures:
    upload_MBps (10^6 B/s from the first write to the sink's last byte), upload_s, bytes,
    cpu_client_s / cpu_server_s (CPU seconds of each process over the transfer) and
    "upload_samples" (``[seconds since the first write, bytes at the sink]`` every ~0.1 s)."""
    done = threading.Event()
    samples: List[List[float]] = []
    next_sample = 0.0

    def sample(now: float) -> None:
        nonlocal next_sample
        if now >= next_sample:
            next_sample = now + SAMPLE_EVERY
            samples.append([round(now - t0, 4), sink.bytes])
            if progress is not None:
                progress.sample(now - t0, sink.bytes)
                progress.tick()
    with SinkServer(on_done=lambda _: done.set()) as sink:
        tunnel = Tunnel(pair, flags, sink.address, tag)
        try:
            cpu0 = tunnel.cpu()
            sock = _connect(tunnel.address, timeout)
            view = memoryview(block)
            t0 = time.monotonic()
            left = nbytes
            try:
                while left:
                    off = (nbytes - left) % len(block)
                    n = min(WRITE, left, len(block) - off)
                    sock.sendall(view[off:off + n])
                    left -= n
                    sample(time.monotonic())
                # all bytes handed to the tunnel: wait for the sink to have them all, then
                # close (our EOF ends the tunnelled connection, kcptun.md §5.3)
                deadline = time.monotonic() + timeout
                while sink.bytes < nbytes and time.monotonic() < deadline:
                    time.sleep(0.005)
                    sample(time.monotonic())
                cpu1 = tunnel.cpu()
            finally:
                sock.close()
            if not done.wait(max(1.0, deadline - time.monotonic())):
                raise BenchError(f"{pair}: the sink got {sink.bytes} of {nbytes} bytes "
                                 f"within {timeout:g} s\n{tunnel.output()}")
        finally:
            tunnel.stop()
    n, digest, _first, last = sink.results[0]
    if n != nbytes or digest != expect:
        raise BenchError(f"{pair}: the sink got {n} bytes, sha256 {digest}; sent {nbytes}, "
                         f"{expect}")
    secs = last - t0
    samples.append([round(secs, 4), n])
    out: Dict[str, Any] = {"upload_MBps": nbytes / secs / 1e6, "upload_s": secs, "bytes": n,
                           "upload_samples": samples}
    for i, role in enumerate(("client", "server")):
        if cpu0[i] is not None and cpu1[i] is not None:
            out[f"cpu_{role}_s"] = cpu1[i] - cpu0[i]
    return out


def measure_rr(pair: str, flags: List[str], count: int, warmup: int, size: int, tag: str,
               timeout: float, progress: Optional[RunProgress] = None) -> Dict[str, Any]:
    """One request/response run: fresh processes, one TCP connection to an echo target.
    Figures: rr_p50_us / rr_p90_us / rr_p99_us (round trip, µs) and rr_cpu_client_us /
    rr_cpu_server_us (CPU µs of each process per round trip)."""
    msg = os.urandom(size)
    samples: List[float] = []
    with EchoServer() as echo:
        tunnel = Tunnel(pair, flags, echo.address, tag)
        try:
            with _connect(tunnel.address, timeout) as sock:
                for i in range(warmup + count):
                    if i == warmup:
                        cpu0 = tunnel.cpu()
                    t0 = time.perf_counter()
                    sock.sendall(msg)
                    got = 0
                    while got < size:
                        piece = sock.recv(size - got)
                        if not piece:
                            raise BenchError(f"{pair}: EOF after {i} round trips\n"
                                             f"{tunnel.output()}")
                        got += len(piece)
                    if i >= warmup:
                        samples.append(time.perf_counter() - t0)
                    if progress is not None:
                        progress.sample(time.monotonic(), i + 1)
                        progress.tick()
                cpu1 = tunnel.cpu()
        finally:
            tunnel.stop()
    q = quantiles_us(samples)
    out = {"rr_p50_us": q[50], "rr_p90_us": q[90], "rr_p99_us": q[99]}
    for i, role in enumerate(("client", "server")):
        if count and cpu0[i] is not None and cpu1[i] is not None:
            out[f"rr_cpu_{role}_us"] = (cpu1[i] - cpu0[i]) / count * 1e6
    return out


def quantiles_us(samples: Sequence[float]) -> Dict[int, float]:
    """Nearest-rank percentiles 50/90/99 of ``samples`` (seconds), in µs."""
    s = sorted(samples)

    def rank(p: int) -> float:
        return s[min(len(s) - 1, max(0, -(-p * len(s) // 100) - 1))] * 1e6
    return {p: rank(p) for p in (50, 90, 99)}


# --------------------------------------------------------------------------- driver


def random_block() -> bytes:
    """:data:`BLOCK` bytes of seeded random data (the upload repeats it)."""
    import random
    return random.Random(11).randbytes(BLOCK)


def expected_sha(block: bytes, nbytes: int) -> str:
    """SHA-256 (hex) of the ``nbytes`` the upload sends: ``block`` repeated."""
    h = hashlib.sha256()
    view = memoryview(block)
    left = nbytes
    while left:
        n = min(len(block), left)
        h.update(view[:n])
        left -= n
    return h.hexdigest()


def skip_reasons(pairs: List[str]) -> Dict[str, str]:
    """pair -> why it cannot run here (kcptun's binaries or our tunnel missing)."""
    missing = {"kcptun": kcptun_available(), "kcpgo": tunnel_cli_available()}
    out = {}
    for p in pairs:
        for impl in PAIRS[p]:
            ok, reason = missing[impl]
            if not ok:
                out[p] = reason
                break
    return out


def run(a: argparse.Namespace, progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Every run of every pair; the JSON document (module docstring): flags, sizes, "results"
    (per pair: median figures, runs; "skipped" with the reason for a pair that cannot run
    here) and "ratios". Raises :class:`BenchError` when a measurement fails."""
    progress = progress or Progress(enabled=False)
    pairs = [p.strip() for p in a.pairs.split(",") if p.strip()]
    for p in pairs:
        if p not in PAIRS:
            raise SystemExit(f"unknown pair {p!r}; valid: {', '.join(PAIRS)}")
    skipped = skip_reasons(pairs)
    progress.note(f"tunnel: {', '.join(pairs)}; {a.runs} run{'s' if a.runs > 1 else ''} each "
                  f"of a {a.mb:g} MB upload and {a.count} round trips")
    for p, why in skipped.items():
        progress.note(f"skipped {p}: {why}")
    flags = ["--mode", "fast3", "--key", a.key, "--quiet"] + shlex.split(a.extra)
    nbytes = int(a.mb * 1e6)
    block = random_block()
    expect = expected_sha(block, nbytes)
    timeout = max(60.0, nbytes / 0.5e6)             # a stall is an error, not a slow run
    runs: Dict[str, List[Dict[str, Any]]] = {p: [] for p in pairs}
    for i in range(a.runs):
        for p in pairs:
            if p in skipped:
                continue
            r: Dict[str, Any] = {}
            label = f"tunnel {p}" + (f", run {i + 1}/{a.runs}" if a.runs > 1 else "")
            if nbytes:
                with progress.run(f"{label}, upload", total=nbytes) as up:
                    r.update(measure_upload(p, flags, nbytes, block, expect, f"{i}-up",
                                            timeout, up))
                    up.done(f"{r['upload_MBps']:,.1f} MB/s")
            if a.count:
                with progress.run(f"{label}, request/response", total=a.warmup + a.count,
                                  unit="round trips") as rr:
                    r.update(measure_rr(p, flags, a.count, a.warmup, a.size, f"{i}-rr",
                                        timeout, rr))
                    rr.done(f"p50 {r['rr_p50_us']:,.0f} µs")
            runs[p].append(r)
            if a.verbose:
                print(f"run {i} {p}: " + ", ".join(f"{k}={v:.3g}" for k, v in r.items()
                                                   if isinstance(v, (int, float))),
                      file=sys.stderr, flush=True)
    results = []
    for p in pairs:
        entry: Dict[str, Any] = {"pair": p, "client": PAIRS[p][0], "server": PAIRS[p][1]}
        if p in skipped:
            results.append(dict(entry, median={}, runs=[], skipped=skipped[p]))
            continue
        keys = [k for k, v in runs[p][0].items() if isinstance(v, (int, float))]
        med = {k: statistics.median(r[k] for r in runs[p]) for k in keys}
        results.append(dict(entry, median=med, runs=runs[p]))
    return {"flags": flags, "mb": a.mb, "count": a.count, "warmup": a.warmup,
            "size": a.size, "runs": a.runs, "results": results,
            "ratios": ratios(results)}


def ratios(results: List[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    """Each pair against kcptun's: upload MB/s and RR p50 (issue 11's Done-when: (ii)
    upload >= 1.2, (ii) p50 <= 1.0)."""
    base = next((r for r in results if r["pair"] == BASE), None)
    out: Dict[str, Dict[str, float]] = {}
    if base is None or not base["median"]:
        return out
    for r in results:
        if r is base or not r["median"]:
            continue
        entry = {}
        for key, name in (("upload_MBps", "upload"), ("rr_p50_us", "rr_p50"),
                          ("rr_p99_us", "rr_p99")):
            b, v = base["median"].get(key), r["median"].get(key)
            if b and v is not None:
                entry[name] = v / b
        out[f"{r['pair']}/{BASE}"] = entry
    return out


def print_table(doc: Dict[str, Any]) -> None:
    """The results as a table, then the ratios."""
    print(f"\ntunnel: {' '.join(doc['flags'])} (kcptun defaults otherwise); upload "
          f"{doc['mb']:g} MB random; RR {doc['size']} B x {doc['count']} after "
          f"{doc['warmup']}; medians of {doc['runs']} run(s)\n"
          f"(cli s, srv s: CPU seconds of each process over the upload; cli µs, srv µs: CPU "
          f"per round trip)")
    # upload MB/s and the CPU seconds of each process over it; RR percentiles and the CPU
    # µs of each process per round trip
    cols = [("upload_MBps", "MB/s", 8, 2), ("cpu_client_s", "cli s", 7, 2),
            ("cpu_server_s", "srv s", 7, 2), ("rr_p50_us", "p50 µs", 8, 0),
            ("rr_p90_us", "p90 µs", 8, 0), ("rr_p99_us", "p99 µs", 8, 0),
            ("rr_cpu_client_us", "cli µs", 8, 0), ("rr_cpu_server_us", "srv µs", 8, 0)]
    print(f"{'client + server':18}" + "".join(f"{h:>{w}}" for _, h, w, _ in cols))
    for r in doc["results"]:
        med = r["median"]
        if r.get("skipped"):
            print(f"{r['client'] + ' + ' + r['server']:18}  skipped: {r['skipped']}")
            continue
        cells = [f"{med[k]:{w}.{p}f}" if k in med else f"{'-':>{w}}" for k, _, w, p in cols]
        print(f"{r['client'] + ' + ' + r['server']:18}" + "".join(cells))
    for name, entry in doc["ratios"].items():
        print(f"ratio {name}: " + ", ".join(f"{k} {v:.2f}x" for k, v in entry.items()))


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m kcpgo bench tunnel"
         ) -> int:
    """Run the tunnel benchmark with ``argv``; the exit status (0; 1 when a measurement
    failed or no pair can run here; 2 for a usage error, through ``SystemExit``)."""
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0],
                                 formatter_class=HelpFormatter, epilog=doc.split("\n", 1)[1])
    ap.add_argument("--pairs", default=DEFAULT_PAIRS,
                    help=f"comma-separated, of {', '.join(PAIRS)}")
    ap.add_argument("--runs", type=int, default=3, help="runs per pair; medians reported")
    ap.add_argument("--mb", type=float, default=100.0,
                    help="upload size in MB (10^6 bytes); 0 skips the upload")
    ap.add_argument("--count", type=int, default=2000, help="RR round trips (0 skips)")
    ap.add_argument("--warmup", type=int, default=20, help="RR round trips not counted")
    ap.add_argument("--size", type=int, default=64, help="RR message size in bytes")
    ap.add_argument("--key", default=KEY, help="--key for every process")
    ap.add_argument("--extra", default="", help="more kcptun flags for every process")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--verbose", action="store_true", help="each run's figures on stderr")
    ap.add_argument("--plot", metavar="FILE.png",
                    help="draw each pair's upload MB/s over time (needs matplotlib)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    a = ap.parse_args(argv)
    if a.plot:
        missing = plot_available() or (None if a.mb else "--plot draws the upload: --mb > 0")
        if missing:
            ap.error(missing)
    progress = Progress(enabled=not a.quiet)
    try:
        doc = run(a, progress)
    except BenchError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    if all(r.get("skipped") for r in doc["results"]):
        print(f"{prog}: nothing to measure: " + "; ".join(
            f"{r['pair']}: {r['skipped']}" for r in doc["results"]), file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(doc, indent=1))
    else:
        print_table(doc)
    if a.plot:
        lines = [(f"{r['client']} + {r['server']}",
                  [run["upload_samples"] for run in r["runs"] if run.get("upload_samples")])
                 for r in doc["results"] if not r.get("skipped")]
        drawn = plot_throughput(a.plot, f"tunnel upload: {' '.join(doc['flags'])}", lines,
                                "seconds since the first write")
        print(f"plot: {a.plot} ({drawn} runs of {len(lines)} pairs)", file=sys.stderr)
    return 0
