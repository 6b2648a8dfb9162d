#!/usr/bin/env python3
"""Churn: open, use and close many kcpgo sessions in waves; report leaks.

Each wave dials ``--wave`` client sessions (each with its own UDP socket and reader greenlet)
to one listener of this process, echoes one message per session, then closes both ends.
Before the first measured wave (after one warm-up wave) and after the last one, it records
RSS (/proc/self/status VmRSS), live greenlets (kcpgo's by name, and every greenlet the GC
knows), open file descriptors (/proc/self/fd), the runtime's timer heap and the listener's
session table, and prints both::

    python tools/churn.py --sessions 10000 --wave 500
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import time
from typing import Any, Dict, List, Optional

import gevent
from greenlet import greenlet

import kcpgo
from kcpgo.runtime.scheduler import Runtime
from kcpgo.runtime.udp import spawn_count
from kcpgo.snmp import Snmp
from kcpgo.testing import rss_kb


def snapshot(ln: Any = None) -> Dict[str, Any]:
    """Process-level resource counts (after a full GC)."""
    gc.collect()
    gevent.sleep(0.05)
    gc.collect()
    alive = [g for g in gc.get_objects() if isinstance(g, greenlet) and not g.dead]
    snap = dict(rss_kb=rss_kb(), fds=len(os.listdir("/proc/self/fd")),
                gc_objects=len(gc.get_objects()),
                greenlets=len(alive), kcpgo_greenlets=sum(spawn_count().values()),
                kcpgo_by_name=spawn_count(),
                sockets=sum(1 for o in gc.get_objects()
                            if type(o).__name__ == "KCPSocket"))
    rt = Runtime.existing()
    if rt is not None:
        snap["live_timers"] = rt.live_timers
    if ln is not None:
        snap["listener_sessions"] = ln.session_count
    return snap


def wave(ln: Any, n: int, msg_size: int = 200) -> int:
    """Open n sessions, echo one message on each, close everything. Returns failures."""
    addr = ln.getsockname()
    failures = [0]
    clients = [kcpgo.dial(addr, mode="fast3", timeout=10) for _ in range(n)]

    def server_side() -> None:
        for _ in range(n):
            s, _ = ln.accept()
            gevent.spawn(echo_once, s)

    def echo_once(s: Any) -> None:
        try:
            s.settimeout(10)
            s.sendall(s.recv(65536))
            s.drain(timeout=10)
        except OSError:
            failures[0] += 1
        finally:
            s.close()

    def client_side(c: Any, i: int) -> None:
        msg = (b"%d " % i) * (msg_size // 8)
        try:
            c.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += c.recv(65536)
            if got != msg:
                failures[0] += 1
        except OSError:
            failures[0] += 1
        finally:
            c.close()

    ln.settimeout(30)
    srv = gevent.spawn(server_side)
    gevent.joinall([gevent.spawn(client_side, c, i) for i, c in enumerate(clients)],
                   timeout=60)
    srv.join(timeout=30)
    if not srv.successful():
        failures[0] += 1
    srv.kill()
    return failures[0]


def run(sessions: int = 10_000, per_wave: int = 500) -> Dict[str, Any]:
    ln = kcpgo.listen(("127.0.0.1", 0), mode="fast3", snmp=Snmp())
    try:
        wave(ln, min(per_wave, 100))                          # warm-up: caches, code paths
        gevent.sleep(0.5)
        before = snapshot(ln)
        t0 = time.monotonic()
        failures = 0
        waves = 0
        done = 0
        rss_trace = []
        while done < sessions:
            n = min(per_wave, sessions - done)
            failures += wave(ln, n)
            done += n
            waves += 1
            rss_trace.append(rss_kb())
        seconds = time.monotonic() - t0
        gevent.sleep(0.5)                                    # stale timer entries surface
        after = snapshot(ln)
    finally:
        ln.close()
    return dict(sessions=sessions, waves=waves, per_wave=per_wave, failures=failures,
                seconds=round(seconds, 1), before=before, after=after,
                rss_growth_mb=round((after["rss_kb"] - before["rss_kb"]) / 1024, 1),
                rss_after_wave_mb=[round(r / 1024, 1) for r in rss_trace],
                # Growth after the first two waves: the allocator's high-water mark is
                # reached by then, so anything more is a leak.
                rss_growth_after_wave2_mb=round((after["rss_kb"] - rss_trace[min(1, len(
                    rss_trace) - 1)]) / 1024, 1),
                fd_growth=after["fds"] - before["fds"],
                greenlet_growth=after["greenlets"] - before["greenlets"],
                kcpgo_greenlet_growth=after["kcpgo_greenlets"] - before["kcpgo_greenlets"],
                socket_growth=after["sockets"] - before["sockets"],
                gc_object_growth=after["gc_objects"] - before["gc_objects"])


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--wave", type=int, default=500)
    ap.add_argument("--json", default=None, help="write the full result (snapshots before and "
                                                 "after) to this file")
    args = ap.parse_args(argv)
    res = run(args.sessions, args.wave)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    for line in summary_lines(res):
        print(line, flush=True)
    return 1 if _leaked(res) or res["failures"] else 0


def _leaked(res: Dict[str, Any]) -> bool:
    """Growth only: in a process that ran other sessions before (a test worker), one of them
    may end during the churn (fds -1, kcpgo greenlets -1 in a full-suite run: no leak)."""
    return max(res["fd_growth"], res["kcpgo_greenlet_growth"], res["socket_growth"]) > 0


def summary_lines(res: Dict[str, Any]) -> List[str]:
    """A few readable lines: what ran, what grew, the verdict (main()'s exit status)."""
    leak = _leaked(res)
    verdict = "OK: no fd, kcpgo greenlet or socket left behind"
    if leak or res["failures"]:
        verdict = "FAIL: " + ("leak" if leak else f"{res['failures']} sessions failed")
    return [
        f"churn: {res['sessions']:,} sessions in {res['waves']} waves of {res['per_wave']:,}, "
        f"{res['failures']} failed, {res['seconds']} s",
        f"growth: fds {res['fd_growth']:+}, kcpgo greenlets {res['kcpgo_greenlet_growth']:+}, "
        f"sockets {res['socket_growth']:+}, greenlets {res['greenlet_growth']:+}, "
        f"gc objects {res['gc_object_growth']:+,}",
        f"RSS {res['before']['rss_kb'] / 1024:.1f} -> {res['after']['rss_kb'] / 1024:.1f} MB "
        f"({res['rss_growth_after_wave2_mb']:+} MB after wave 2); after each wave: "
        + ", ".join(f"{mb}" for mb in res["rss_after_wave_mb"]),
        verdict]


if __name__ == "__main__":
    raise SystemExit(main())
