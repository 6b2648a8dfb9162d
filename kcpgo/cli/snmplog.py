"""kcptun's ``--snmplog``/``--snmpperiod``: the kcp-go SNMP counters appended as CSV rows.

kcptun (``std.SnmpLogger``; docs/kcptun.md §5.5) formats the file *name* (not the directory)
with Go's time layout, so ``./snmp-20060102.log`` starts a new file each day; a new (empty)
file gets the header ``Unix,BytesSent,BytesReceived,...`` (kcp-go ``Snmp.Header()``) first;
each row is the Unix time in seconds followed by the counters (``Snmp.ToSlice()``). kcpgo's
counters are :data:`kcpgo.DEFAULT_SNMP` with kcp-go's names and order (docs/protocol.md §5.11):
5.6.1's 24 columns by default (Debian's kcptun), the latest kcp-go's 30 with
``version="latest"`` (current kcptun releases).
"""
from __future__ import annotations

import csv
import os
import re
import time
from typing import Callable, Dict, Optional

from ..snmp import DEFAULT_SNMP, Snmp

__all__ = ["go_time_format", "snmp_path", "write_record"]

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _zone(t: time.struct_time, sep: str, short: bool = False) -> str:
    off = t.tm_gmtoff or 0
    sign = "-" if off < 0 else "+"
    h, m = divmod(abs(off) // 60, 60)
    return f"{sign}{h:02d}" if short else f"{sign}{h:02d}{sep}{m:02d}"


def _zulu(fmt: Callable[[time.struct_time], str]) -> Callable[[time.struct_time], str]:
    return lambda t: "Z" if not t.tm_gmtoff else fmt(t)


#: Go's layout elements (``time.Format``; reference time Mon Jan 2 15:04:05 MST 2006).
_ELEMENTS: Dict[str, Callable[[time.struct_time], str]] = {
    "January": lambda t: _MONTHS[t.tm_mon - 1],
    "Jan": lambda t: _MONTHS[t.tm_mon - 1][:3],
    "Monday": lambda t: _DAYS[t.tm_wday],
    "Mon": lambda t: _DAYS[t.tm_wday][:3],
    "MST": lambda t: t.tm_zone or "",
    "2006": lambda t: f"{t.tm_year:04d}",
    "002": lambda t: f"{t.tm_yday:03d}",
    "01": lambda t: f"{t.tm_mon:02d}",
    "02": lambda t: f"{t.tm_mday:02d}",
    "03": lambda t: f"{(t.tm_hour % 12) or 12:02d}",
    "04": lambda t: f"{t.tm_min:02d}",
    "05": lambda t: f"{t.tm_sec:02d}",
    "06": lambda t: f"{t.tm_year % 100:02d}",
    "_2006": lambda t: f"_{t.tm_year:04d}",       # Go: "_" then the year, not day "_2"
    "__2": lambda t: f"{t.tm_yday:3d}",           # Go: the space-padded day of the year
    "_2": lambda t: f"{t.tm_mday:2d}",
    "15": lambda t: f"{t.tm_hour:02d}",
    "1": lambda t: str(t.tm_mon),
    "2": lambda t: str(t.tm_mday),
    "3": lambda t: str((t.tm_hour % 12) or 12),
    "4": lambda t: str(t.tm_min),
    "5": lambda t: str(t.tm_sec),
    "PM": lambda t: "PM" if t.tm_hour >= 12 else "AM",
    "pm": lambda t: "pm" if t.tm_hour >= 12 else "am",
    "-07:00": lambda t: _zone(t, ":"),
    "-0700": lambda t: _zone(t, ""),
    "-07": lambda t: _zone(t, "", True),
    "Z07:00": _zulu(lambda t: _zone(t, ":")),
    "Z0700": _zulu(lambda t: _zone(t, "")),
    "Z07": _zulu(lambda t: _zone(t, "", True)),
}
# Longest first at each position, as Go's scanner; "Jan"/"Mon" not before a lower-case letter
# (Go's rule: "Month" is not a weekday).
_TOKENS = re.compile("|".join(
    re.escape(k) + ("(?![a-z])" if k in ("Jan", "Mon") else "")
    for k in sorted(_ELEMENTS, key=len, reverse=True)))


def go_time_format(layout: str, when: Optional[float] = None) -> str:
    """``layout`` formatted like Go's ``time.Now().Format(layout)`` at ``when`` (seconds since
    the epoch, default now; local time). Fractional seconds are not supported (left as is)."""
    t = time.localtime(when)
    return _TOKENS.sub(lambda m: _ELEMENTS[m.group(0)](t), layout)


def snmp_path(path: str, when: Optional[float] = None) -> str:
    """The file kcptun writes for ``--snmplog path`` at ``when``: the directory part as
    given, the file name through :func:`go_time_format`."""
    head, tail = os.path.split(path)
    return os.path.join(head, go_time_format(tail, when)) if head else go_time_format(tail, when)


def write_record(path: str, snmp: Snmp = DEFAULT_SNMP, when: Optional[float] = None,
                 version: str = "5.6.1") -> str:
    """Append one CSV row of ``snmp`` to the file for ``path`` (header first in an empty
    file) in the column layout of kcp-go ``version`` (``"5.6.1"`` or ``"latest"``,
    :meth:`kcpgo.snmp.Snmp.header`); returns the file written. Raises ``OSError`` if it cannot
    be written, ``ValueError`` for an unknown version (before writing). Blocks on the file
    system (a local append: short)."""
    header = snmp.header(version)
    now = time.time() if when is None else when
    target = snmp_path(path, now)
    with open(target, "a", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        if fh.tell() == 0:
            w.writerow(["Unix"] + header)
        w.writerow([str(int(now))] + snmp.to_list(version))
    return target
