"""What a process and the kernel hold, for leak and load checks (Linux ``/proc``; elsewhere the
figures are 0)."""
from __future__ import annotations

__all__ = ["rss_kb", "udp_rcvbuf_errors"]


def rss_kb() -> int:
    """This process's resident set size in KiB (``VmRSS`` of /proc/self/status)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:  # pragma: no cover - non-Linux
        pass
    return 0  # pragma: no cover


def udp_rcvbuf_errors() -> int:
    """Kernel-wide UDP RcvbufErrors (datagrams the kernel dropped: a full socket buffer)."""
    try:
        with open("/proc/net/snmp") as f:
            lines = [ln.split() for ln in f if ln.startswith("Udp:")]
        return int(lines[1][lines[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        return 0
