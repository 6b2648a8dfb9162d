"""The tunnel's log (``--log`` file or stderr): Go's ``log`` layout for its own lines, level
and logger names for warnings and kcpgo's library records, and a ``worker N:`` tag in
``--workers`` processes (:mod:`kcpgo.cli.tunnel`)."""
from __future__ import annotations

import logging
import sys

from .kcptun_config import TunnelConfig

__all__ = ["setup_logging", "tag_log_lines"]

log = logging.getLogger("kcpgo.tunnel")


class _Formatter(logging.Formatter):
    """Go's ``log`` layout (``2006/01/02 15:04:05 message``) for the tunnel's own lines;
    warnings and kcpgo's library records also name their level and logger. ``tag`` goes
    before the message (``"worker 1: "`` in a ``--workers`` process)."""

    def __init__(self, tag: str = "") -> None:
        tag = tag.replace("%", "%%")
        super().__init__(f"%(asctime)s {tag}%(message)s", "%Y/%m/%d %H:%M:%S")
        self._named = logging.Formatter(
            f"%(asctime)s {tag}%(levelname)s %(name)s: %(message)s", "%Y/%m/%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING or record.name != log.name:
            return self._named.format(record)
        return super().format(record)


def setup_logging(cfg: TunnelConfig) -> logging.Handler:
    """Log to ``--log`` (appended) or stderr: the tunnel's INFO lines and kcpgo's WARNINGs."""
    handler: logging.Handler
    if cfg.log:
        handler = logging.FileHandler(cfg.log, mode="a", encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    pkg = logging.getLogger("kcpgo")
    pkg.addHandler(handler)
    if pkg.level == logging.NOTSET or pkg.level > logging.WARNING:
        pkg.setLevel(logging.WARNING)
    log.setLevel(logging.INFO)
    return handler


def tag_log_lines(tag: str) -> None:
    """From now on this process's log lines (the handler :func:`setup_logging` installed)
    carry ``tag`` before the message."""
    for handler in logging.getLogger("kcpgo").handlers:
        if isinstance(handler.formatter, _Formatter):
            handler.setFormatter(_Formatter(tag))
