"""Multi-core runs of ``python -m kcpgo bench``: a kcpgo server with ``--workers N`` (N
processes on one UDP port, :class:`kcpgo.server.ThreadingKCPServer` with ``workers=N``),
``--clients N`` concurrent sink clients, and ``--compare-workers`` (1 worker against N,
interleaved, medians and the ratio N ÷ 1; the project's goal: >= 1.3 with 2 workers).

How a run is counted when the server is several processes, or there are several clients:

* the server's figures add up its processes (the one the benchmark started and the workers
  it forked, found through ``/proc``): CPU seconds over the run, and peak RSS (``VmHWM``,
  which counts the pages a worker still shares with its parent once per process: an upper
  bound);
* a sink's MB/s is every session's bytes over the span from the first byte any worker
  received to the last (each session's handler reports its own, :mod:`kcpgo.cli.bench_role`);
* the clients' CPU is what the benchmark's finished child processes used
  (``RUSAGE_CHILDREN``), start-up included, over the same wall time as the server's.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections import Counter
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Type

from ..testing.process import running

__all__ = ["multi", "process_tree", "tree_stat", "children_cpu", "wait_gone",
           "session_reports", "sink_figures", "compare_workers", "print_workers_comparison",
           "error_lines", "WORKER_FIGURES", "WORKERS_TARGET"]

#: --compare-workers: the figure compared per mode (its ratio N workers / 1 worker).
WORKER_FIGURES = {"sink": "MB/s", "conc": "msgs/s"}
#: Issue 15, item 4: with 2 workers, >= 1.3 x one worker's saturated rate.
WORKERS_TARGET = 1.3


def multi(a: argparse.Namespace) -> bool:
    """Whether the server end serves every session and reports per session (``--workers``,
    or a sink with several ``--clients``), rather than one session and then exiting."""
    return bool(getattr(a, "workers", None)) or getattr(a, "clients", 1) > 1


def process_tree(pid: int) -> List[int]:
    """``pid`` and its descendants (``/proc/PID/task/*/children``; Linux)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except (OSError, ValueError):
                pass
    return out


def tree_stat(pids: Iterable[int]) -> Dict[int, Tuple[float, int]]:
    """pid -> (CPU seconds, peak RSS bytes) of each process still there (``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: Dict[int, Tuple[float, int]] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            hwm = 0
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm = int(line.split()[1]) * 1024
        except (OSError, IndexError, ValueError):
            continue
        out[pid] = ((int(fields[11]) + int(fields[12])) / tick, hwm)
    return out


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's children that ended and were waited
    for."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_gone(pids: Iterable[int], timeout: float = 10.0) -> None:
    """Wait until none of ``pids`` runs (gone, or a zombie), at most ``timeout`` s: a stopped
    server's workers end on their own (they die with it), and must not use the next run's
    CPU."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if running(pid)]
        if left:
            time.sleep(0.05)


def session_reports(lines: List[str], count: int, timeout: float,
                    tick: Optional[Callable[[], None]] = None) -> List[Dict[str, Any]]:
    """The sink sessions' JSON reports among a server's stdout ``lines`` (a list that its
    reader thread appends to), once ``count`` came or after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for line in list(lines):
            if line.startswith("{"):
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if doc.get("session"):
                    found.append(doc)
        if len(found) >= count or time.monotonic() >= deadline:
            return found
        if tick is not None:
            tick()
        time.sleep(0.05)


def sink_figures(sessions: List[Dict[str, Any]]) -> Dict[str, Any]:
    """MB/s over all sessions (first byte of any to last byte of any), how many sessions
    and worker processes received data, and the busiest worker's share of those sessions
    (percent). ``RuntimeError`` if none did."""
    got = [s for s in sessions if s.get("bytes")]
    if not got:
        raise RuntimeError(f"no session received data: {sessions!r}")
    total = sum(s["bytes"] for s in got)
    span = max(s["last"] for s in got) - min(s["first"] for s in got)
    per_worker = Counter(s.get("pid") for s in got)
    return {"MB/s": total / max(span, 1e-9) / 1e6, "s": span, "sessions": len(got),
            "workers used": len(per_worker),
            "busiest %": 100.0 * max(per_worker.values()) / len(got)}


def compare_workers(a: argparse.Namespace, measure: Callable[..., Dict[str, Any]],
                    summarise: Callable[..., Dict[str, Any]], stalled: Type[Exception],
                    describe: Callable[[Dict[str, Any]], str]) -> Dict[str, Any]:
    """--compare-workers: ``a.runs`` rounds, each measuring the server with 1 worker, then
    with ``a.workers`` (interleaved, so that a machine's drift touches both alike), clients as
    ``a.client`` and ``a.clients`` say. ``measure(server, client, a, label)`` is one run.
    Returns the JSON document: settings, the load average before and after, "results" (one
    ``summarise`` per worker count, with its "workers"), "ratio" (figure median with N workers
    / with 1; None when either has none) and "target"."""
    counts = (1, a.workers)
    runs: Dict[int, list] = {n: [] for n in counts}
    stalls: Dict[int, list] = {n: [] for n in counts}
    load = [os.getloadavg()]
    for i in range(a.runs):
        for n in counts:
            b = argparse.Namespace(**dict(vars(a), workers=n))
            label = (f"{a.mode} {a.clients if a.mode == 'sink' else a.sessions} x "
                     f"{a.client} -> kcpgo, {n} worker{'s' if n > 1 else ''}, "
                     f"run {i + 1}/{a.runs}")
            try:
                runs[n].append(measure("kcpgo", a.client, b, label))
            except stalled as e:                # reported, not measured; the others go on
                stalls[n].append(dict(e.info, run=i + 1, workers=n))    # type: ignore[attr-defined]
                print(describe(stalls[n][-1]), file=sys.stderr, flush=True)
    load.append(os.getloadavg())
    results = [dict(summarise("kcpgo", a.client, runs[n], stalls[n]), workers=n)
               for n in counts]
    k = WORKER_FIGURES[a.mode]
    one, many = (r["median"].get(k) for r in results)
    ratio = many / one if one and many is not None else None
    return {"mode": a.mode, "crypt": a.crypt or None, "fec": a.fec, "size": a.size,
            "client": a.client, "clients": a.clients, "sessions": a.sessions,
            "period": a.period, "ramp": getattr(a, "ramp", None), "runs_per_count": a.runs,
            "client_interval": getattr(a, "client_interval", None),
            "workers": list(counts),
            "loadavg": [list(x) for x in load], "nproc": os.cpu_count(),
            "results": results, "figure": k, "ratio": ratio,
            "target": {"op": ">=", "bound": WORKERS_TARGET,
                       "met": None if ratio is None else ratio >= WORKERS_TARGET}}


def _interval_text(a: argparse.Namespace) -> str:
    """", client interval N ms" with --client-interval, else ""."""
    ms = getattr(a, "client_interval", None)
    return f", client interval {ms} ms" if ms else ""


def error_lines(r: Dict[str, Any], name: str) -> List[str]:
    """conc: what the client's failed sessions met, one line per run and kind ("errors in
    go -> kcpgo run 2: 3 x read: timeout, after 10.0 s (first at 15.6 s)": how long the
    failed calls had waited, a range if they differ, and when the first failed); a count in
    the table alone would not say whether they were timeouts, resets or failed dials."""
    out = []
    for i, run in enumerate(r.get("runs", []), 1):
        for e in sorted(run.get("error kinds") or [], key=lambda e: e["first_s"]):
            waited = ""
            if "wait_min_s" in e and "wait_max_s" in e:
                lo, hi = f"{e['wait_min_s']:.1f}", f"{e['wait_max_s']:.1f}"
                waited = f", after {lo} s" if lo == hi else f", after {lo}-{hi} s"
            out.append(f"errors in {name} run {i}: {e['count']} x {e['kind']}{waited} "
                       f"(first at {e['first_s']:.1f} s)")
    return out


def print_workers_comparison(a: argparse.Namespace, doc: Dict[str, Any]) -> None:
    """The --compare-workers table (or ``doc`` as JSON with --json)."""
    if a.json:
        print(json.dumps(doc, indent=1))
        return
    results = doc["results"]
    keys = list(next((r["median"] for r in results if r["median"]), {}))
    what = (f"{a.clients} {a.client} client{'s' if a.clients > 1 else ''}, "
            + (f"{a.mb:g} MB in all" if a.mb else f"{a.duration:g} s")
            if a.mode == "sink" else
            f"{a.sessions} {a.client} sessions x {a.size} B, "
            + ("closed loop" if not a.period else f"every {a.period:g} s")
            + f", {a.duration:g} s" + _interval_text(a))
    la = doc["loadavg"]
    print(f"\n{a.mode}: kcpgo server, 1 worker vs {doc['workers'][1]} workers; {what}; "
          f"crypt={a.crypt or 'off'} fec={a.fec}; runtime={a.runtime}; "
          f"{'1 run' if a.runs == 1 else f'medians of {a.runs} runs'} each, interleaved")
    print(f"load average before {la[0][0]:.2f} {la[0][1]:.2f} {la[0][2]:.2f}, after "
          f"{la[1][0]:.2f} {la[1][1]:.2f} {la[1][2]:.2f} ({doc['nproc']} CPUs)")
    print(f"{'workers':>8}" + "".join(f"{k:>16}" for k in keys))
    for r in results:
        print(f"{r['workers']:>8}" + "".join(f"{r['median'].get(k, float('nan')):16.2f}"
                                             for k in keys)
              + (f"   {len(r['stalls'])} of {a.runs} runs STALLED" if r["stalls"] else ""))
    for r in results:
        n = r["workers"]
        for line in error_lines(r, f"{n} worker{'s' if n > 1 else ''},"):
            print(line)
    ratio, tgt = doc["ratio"], doc["target"]
    verdict = {True: "met", False: "NOT met", None: "not measured"}[tgt["met"]]
    print(f"ratio {doc['workers'][1]} workers / 1 worker, {doc['figure']}: "
          + ("n/a" if ratio is None else f"{ratio:.2f}")
          + f"   (goal {tgt['op']} {tgt['bound']:.2f}: {verdict})")
    print("server CPU %: all the server's processes; client CPU %: all client processes, "
          "start-up included (100 = one core)")
