"""The tables (or the JSON document) that ``python -m kcpgo bench`` prints on stdout at the
end of a run: :func:`print_results` for pairs of ends, :func:`print_runtime_comparison` for
``--compare-runtimes``.

JSON (``--json``): ``{"mode", "crypt", "fec", "results": [...]}``; each result has "server",
"client", "median" and "max" (figure -> value over the runs; the figures and their units are
:data:`kcpgo.cli.bench.FIGURE_MEANINGS`'s), "runs" (each run's figures, plus "samples":
``[seconds, bytes]`` cumulative every ~0.1 s for sink, echo and lossy), "stalls", and
"skipped" (why, one line) for a contender that could not run here.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List

from .bench_run import describe_stall
from .bench_workers import error_lines

__all__ = ["print_results", "print_runtime_comparison", "FIGURE_MEANINGS", "COMPARED_RUNTIMES"]

#: --compare-runtimes: the contenders, in the order they run within each round.
COMPARED_RUNTIMES = ("patched", "unpatched")
#: What each figure of the tables is, with its unit.
FIGURE_MEANINGS = {
    "MB/s": "10^6 bytes per second: sink, received by the server from its first to its last "
            "byte; echo, echoed back to the client over the client's run",
    "s": "seconds from the server's first to its last received byte",
    "p50 µs": "median round-trip time of one --size-byte message (client's sendall until the "
              "whole echo is read), microseconds",
    "p90 µs": "90th percentile of the same round-trip time, microseconds",
    "p99 µs": "99th percentile of the same round-trip time, microseconds",
    "msgs/s": "conc: messages echoed per second, all sessions together, from the moment "
              "every session had its first echo (and the --ramp ended) to the end of the run",
    "messages": "conc: messages echoed, all sessions together, over the whole run",
    "errors": "conc: sessions that ended with an error (a write or an echo over 10 s, gobench's "
              "-deadline); the lines under the table give each run's kinds",
    "up s": "conc: seconds from the client's start until every session had its first echo "
            "(--period 0: when the closed loops began together)",
    "server CPU %": "CPU time of the server's processes (its --workers included) over the run, "
                    "percent of one core",
    "server RSS MB": "peak resident memory (VmHWM) of the server's processes, added up, 10^6 "
                     "bytes",
    "client CPU %": "CPU time of the client processes (start-up included) over the run, "
                    "percent of one core",
    "retrans %": "sink, lossy with --verbose and a kcpgo client: segments the client "
                 "retransmitted, percent of the segments it sent (RetransSegs / OutSegs)",
    "dup %": "sink, lossy with --verbose: segments the server received again (a spurious "
             "retransmission), percent of the segments it received (RepeatSegs / InSegs)",
    "sessions": "sink with --workers/--clients: sessions that received data",
    "workers used": "sink with --workers/--clients: server processes that received data",
    "busiest %": "sink with --workers/--clients: the sessions on the busiest of those "
                 "processes, percent of all (the kernel's SO_REUSEPORT hash places them)",
}


def _runs_text(runs: int) -> str:
    return "1 run" if runs == 1 else f"medians of {runs} runs"


def print_results(a: argparse.Namespace, results: List[Dict[str, Any]]) -> None:
    """The table of pairs (or the JSON document with --json), then the ratios to kcp-go's
    pair when it ran."""
    if a.json:
        print(json.dumps({"mode": a.mode, "crypt": a.crypt or None, "fec": a.fec,
                          "results": results}, indent=1))
        return
    keys = list(next((r["median"] for r in results if r["median"]), {}))
    interval = getattr(a, "client_interval", None)
    print(f"\n{a.mode}: crypt={a.crypt or 'off'} fec={a.fec} mtu={a.mtu} "
          f"wnd={a.sndwnd}/{a.rcvwnd} size={a.size} runtime={a.runtime} "
          f"{'after accept' if a.after_accept else 'kcpgo server at listen'}"
          f"{f' {a.mb:g} MB' if a.mb else ''}"
          f"{f' client interval {interval} ms' if interval else ''}"
          f" ({_runs_text(a.runs)})")
    print(f"{'client -> server':22}" + "".join(f"{k:>16}" for k in keys))
    for r in results:
        name = f"{r['client'] + ' -> ' + r['server']:22}"
        if r.get("skipped"):
            print(f"{name}  skipped: {r['skipped']}")
            continue
        print(name + "".join(f"{r['median'].get(k, float('nan')):16.2f}" for k in keys)
              + (f"   slowest run {r['max']['s']:.2f} s" if "s" in r["max"] else "")
              + (f"   {len(r['stalls'])} of {a.runs} runs STALLED" if r["stalls"] else ""))
    for r in results:
        for st in r["stalls"]:
            print(describe_stall(st))
        for line in error_lines(r, f"{r['client']} -> {r['server']}"):
            print(line)
    if any(r["server"] == "pytcp" for r in results):
        print("pytcp: TCP between two Python processes (plain sockets), kcp-go's Go TCP "
              "being unavailable here")
    base = next((r for r in results if r["server"] == "go" and r["client"] == "go"), None)
    if base is not None and base["median"] and keys:
        k = keys[0]
        for r in results:
            if r is base or not r["median"]:
                continue
            ratio = r["median"][k] / base["median"][k] if base["median"][k] else float("nan")
            print(f"ratio {r['client']}->{r['server']} / go->go ({k}): {ratio:.2f}")


def print_runtime_comparison(a: argparse.Namespace, doc: Dict[str, Any]) -> None:
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
          f"wnd={a.sndwnd}/{a.rcvwnd}; {_runs_text(a.runs)} each, interleaved")
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
            line += f"   (goal {tgt['op']} {tgt['bound']:.2f}: {verdict})"
        print(line)
    print("figures:")
    for k in keys:
        print(f"  {k:8} {FIGURE_MEANINGS.get(k, '')}")
    print("  kcpgo runtime: what kcpgo.get_runtime() returned in the client end (thread: "
          "sessions in the kcpgo-io thread; hub: on the main thread's gevent hub)")
