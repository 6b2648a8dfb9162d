"""``python -m kcpgo stats``: kcp-go SNMP CSV logs as a table of per-interval rates.

Reads the files kcptun's ``--snmplog`` writes (and kcpgo's tunnel, :mod:`kcpgo.cli.snmplog`):
a header ``Unix,BytesSent,BytesReceived,...`` (kcp-go 5.6.1's 24 columns or the latest's 30,
:mod:`kcpgo.snmp`; any other column set is read by its names too), then one row per period,
the Unix time in seconds and cumulative counters. Each row after the first becomes one table
line: the time, the seconds since the previous row, and each chosen counter's increase per
second (bytes as B/s, kB/s, MB/s). Gauges (``CurrEstab``, ``MaxConn``, the FEC shard-set and
ring-buffer gauges of the latest kcp-go) are shown as they are. A counter that went down
means the process restarted: that interval counts from zero and is marked ``*``.

``--follow`` prints what is there, then new rows as they are written (like ``tail -f``;
a truncated or replaced file is read again from its start). ``--plot FILE.png`` draws the
chosen rates over time with matplotlib (the ``cli`` extra: ``pip install 'kcpgo[cli]'``).
A path that does not exist is also tried with its name expanded as kcptun expands it (Go's
time layout: ``./snmp-20060102.log`` is today's file). SIGINT ends ``--follow`` with status 130.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from . import EXIT_INTERRUPTED, HelpFormatter
from .snmplog import snmp_path

__all__ = ["main", "Sample", "read_samples", "rates", "GAUGES", "DEFAULT_COLUMNS"]

#: Columns that hold a current value, not a running count: shown as they are.
GAUGES = frozenset({"MaxConn", "CurrEstab", "FECShardSet", "FECShardMin", "RingBufferSndQueue",
                    "RingBufferRcvQueue", "RingBufferSndBuffer"})
#: The table's columns unless ``--columns`` says otherwise (those the file has).
DEFAULT_COLUMNS = ("BytesSent", "BytesReceived", "OutBytes", "InBytes", "OutPkts", "InPkts",
                   "RetransSegs", "LostSegs", "FECRecovered", "InCsumErrors", "CurrEstab")
#: Seconds between checks for new rows with ``--follow``.
FOLLOW_POLL = 0.5

_EXAMPLES = """examples:
  python -m kcpgo stats snmp-20260101.log
  python -m kcpgo stats --follow ./snmp-20060102.log      # kcptun's --snmplog value works
  python -m kcpgo stats --columns OutBytes,RetransSegs,FECRecovered snmp.log
  python -m kcpgo stats --plot rates.png snmp.log

Write such a file with 'python -m kcpgo tunnel server --snmplog snmp.log --snmpperiod 10'
(or kcptun's own --snmplog)."""

Sample = Tuple[float, Dict[str, int]]


def read_samples(lines: Iterator[str], header: Optional[List[str]] = None
                 ) -> Iterator[Tuple[List[str], Sample]]:
    """``(header, (unix time, {column: value}))`` for each data row of CSV ``lines``; a
    ``Unix,...`` row sets the header (a new file, or files one after another). Rows before
    any header, or malformed, are skipped."""
    for row in csv.reader(lines):
        if not row:
            continue
        if row[0] == "Unix":
            header = row[1:]
            continue
        if header is None:
            continue
        try:
            when = float(row[0])
            values = {name: int(v) for name, v in zip(header, row[1:])}
        except ValueError:
            continue
        yield header, (when, values)


def rates(prev: Sample, cur: Sample, columns: Sequence[str]
          ) -> Tuple[float, List[Optional[float]], bool]:
    """``(seconds, values, restarted)`` between two samples: per second for counters, the
    current value for :data:`GAUGES`, ``None`` for a column a sample lacks. ``restarted`` is
    true when a counter went down (the increase is then counted from zero)."""
    dt = cur[0] - prev[0]
    out: List[Optional[float]] = []
    restarted = False
    for name in columns:
        now, before = cur[1].get(name), prev[1].get(name)
        if now is None:
            out.append(None)
        elif name in GAUGES:
            out.append(float(now))
        elif before is None or dt <= 0:
            out.append(None)
        else:
            delta = now - before
            if delta < 0:
                delta, restarted = now, True
            out.append(delta / dt)
    return dt, out, restarted


def _human(value: Optional[float], is_bytes: bool) -> str:
    if value is None:
        return "-"
    if is_bytes:
        for unit, scale in (("MB/s", 1e6), ("kB/s", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.2f} {unit}"
        return f"{value:.0f} B/s"
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2f}"


class Table:
    """Fixed-width text rows (widths chosen up front, so ``--follow`` can print as it goes)."""

    def __init__(self, columns: Sequence[str], out: io.TextIOBase) -> None:
        self.columns = list(columns)
        self.widths = [max(len(c) + (0 if c in GAUGES else 2), 11) for c in self.columns]
        self.out = out

    def header(self) -> None:
        names = [c if c in GAUGES else c + "/s" for c in self.columns]
        cells = ["time".ljust(19), "secs".rjust(5)]
        cells += [n.rjust(w) for n, w in zip(names, self.widths)]
        self.out.write("  ".join(cells) + "\n")

    def row(self, prev: Sample, cur: Sample) -> None:
        dt, values, restarted = rates(prev, cur, self.columns)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(cur[0]))
        cells = [stamp, f"{dt:>4.0f}" + ("*" if restarted else " ")]
        cells += [_human(v, "Bytes" in c and c not in GAUGES).rjust(w)
                  for v, c, w in zip(values, self.columns, self.widths)]
        self.out.write("  ".join(cells) + "\n")
        self.out.flush()


def _resolve(path: str) -> str:
    """``path``, or kcptun's expansion of its name (Go time layout) when only that exists."""
    if os.path.exists(path):
        return path
    expanded = snmp_path(path)
    return expanded if os.path.exists(expanded) else path


def _columns(spec: Optional[str], header: List[str], ap: argparse.ArgumentParser) -> List[str]:
    if spec is None:
        return [c for c in DEFAULT_COLUMNS if c in header] or header[:8]
    if spec == "all":
        return list(header)
    wanted = [c.strip() for c in spec.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in header]
    if unknown:
        ap.error(f"--columns: {', '.join(unknown)} not in the file; it has: {', '.join(header)}")
    return wanted


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    ap = argparse.ArgumentParser(
        prog="python -m kcpgo stats", formatter_class=HelpFormatter, epilog=_EXAMPLES,
        description="Print or follow kcp-go SNMP CSV logs (kcptun --snmplog) as a table of "
                    "per-interval rates.")
    ap.add_argument("files", nargs="+", metavar="FILE",
                    help="CSV files, read in order (with --follow, the last one is followed)")
    ap.add_argument("--follow", "-f", action="store_true",
                    help="keep printing rows as they are appended, like tail -f")
    ap.add_argument("--columns", metavar="A,B,...",
                    help="counters to show, by the header's names, or 'all' (default: "
                         + ",".join(DEFAULT_COLUMNS) + ")")
    ap.add_argument("--plot", metavar="FILE.png",
                    help="also draw the rates over time into this image (needs matplotlib)")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the table (and the plot); returns the exit status (2 for a usage error, 1 for
    an unreadable file or a missing matplotlib, 130 after SIGINT)."""
    ap = build_parser()
    ns = ap.parse_args(argv)
    if ns.follow and ns.plot:
        ap.error("--plot draws a finished log: it does not go with --follow")
    paths = [_resolve(p) for p in ns.files]
    try:
        return _run(ap, ns, paths)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise                       # the reader left (| head): the dispatcher ends quietly
    except OSError as e:
        print(f"python -m kcpgo stats: {e}", file=sys.stderr)
        return 1


def _run(ap: argparse.ArgumentParser, ns: argparse.Namespace, paths: List[str]) -> int:
    table: Optional[Table] = None
    prev: Optional[Sample] = None
    header: Optional[List[str]] = None
    history: List[Tuple[float, List[Optional[float]]]] = []

    def feed(lines: Iterator[str]) -> None:
        nonlocal table, prev, header
        for header, sample in read_samples(lines, header):
            if table is None:
                table = Table(_columns(ns.columns, header, ap), sys.stdout)  # type: ignore
                table.header()
            if prev is not None:
                table.row(prev, sample)
                history.append((sample[0], rates(prev, sample, table.columns)[1]))
            prev = sample

    last = paths[-1]
    for path in paths[:-1] if ns.follow else paths:
        with open(path, newline="", encoding="utf-8") as fh:
            feed(iter(fh))
    if ns.follow:
        for lines in _follow(last):
            feed(iter(lines))
    if table is None:
        print("python -m kcpgo stats: no SNMP rows found (a 'Unix,...' header, then rows)",
              file=sys.stderr)
        return 1
    if ns.plot:
        return _plot(ns.plot, table.columns, history)
    return 0


def _follow(path: str) -> Iterator[List[str]]:
    """Complete new lines of ``path`` as they appear, forever (the file may not exist yet;
    a truncated or replaced file is read again from its start)."""
    pos, ident, partial = 0, None, ""
    while True:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            time.sleep(FOLLOW_POLL)
            continue
        if (st.st_dev, st.st_ino) != ident or st.st_size < pos:
            pos, ident, partial = 0, (st.st_dev, st.st_ino), ""
        if st.st_size > pos:
            with open(path, newline="", encoding="utf-8") as fh:
                fh.seek(pos)
                text = partial + fh.read()
                pos = fh.tell()
            *lines, partial = text.split("\n")
            if lines:
                yield [line + "\n" for line in lines]
        time.sleep(FOLLOW_POLL)


def _plot(target: str, columns: List[str], history: List[Tuple[float, List[Optional[float]]]]
          ) -> int:
    """Draw the rates of ``history`` into ``target``: byte rates (MB/s) above, the others
    below. 1 with a message if matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("python -m kcpgo stats: --plot needs matplotlib: pip install 'kcpgo[cli]' "
              "(or pip install matplotlib)", file=sys.stderr)
        return 1
    import datetime
    times = [datetime.datetime.fromtimestamp(t) for t, _ in history]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    for i, name in enumerate(columns):
        values = [row[i] for _, row in history]
        if "Bytes" in name and name not in GAUGES:
            top.plot(times, [v / 1e6 if v is not None else None for v in values], label=name)
        else:
            bottom.plot(times, values, label=name if name in GAUGES else name + "/s")
    top.set_ylabel("MB/s")
    bottom.set_ylabel("per second (gauges: value)")
    for ax in (top, bottom):
        if ax.lines:
            ax.legend(fontsize="small")
        ax.grid(True, alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(target)
    plt.close(fig)
    print(f"plot written to {target}")
    return 0
