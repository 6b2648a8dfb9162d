"""Helpers for testing code that speaks KCP: kcpgo's own tests and tools use them, and so can
yours (as ``trio.testing`` and ``gevent.testing`` serve theirs).

* :class:`LinkProfile` (the relay calls it :data:`Impairment`): what one direction of a link
  does to datagrams (loss, delay and jitter, reordering, duplication, corruption, bandwidth
  cap, queue limit); :func:`parse_impairment` reads its text form, ``"loss=10%,delay=25ms"``;
* :class:`Network`: two sans-IO connections joined by such links in memory, with a fake
  clock (seeded, no sockets, no sleeping);
* :class:`Relay`, :class:`RelayProcess`: the same links on real UDP, a loopback relay in a
  thread of this process or in a child process (``python -m kcpgo.testing.relay``), with
  :class:`LinkCounters`;
* :class:`Mutator`: seeded hostile datagrams made from captured kcp-go ones
  (:func:`load_corpus`);
* :func:`read_line` (a child's output line with a timeout), :func:`reap` (a child collected,
  its pipes closed), :func:`rss_kb` and
  :func:`udp_rcvbuf_errors`, for tests that drive child processes or look for leaks.
* submodules imported by name: :mod:`kcpgo.testing.tunnel` (kcptun's and our tunnel as
  child processes, TCP echo and sink targets) and :mod:`kcpgo.testing.golang` (Go peers
  built against Debian's kcp-go 5.6.1); ``python -m kcpgo bench`` uses both.

``Relay``, ``Impairment`` and ``parse_impairment`` load :mod:`.relay` on first use (so that
``python -m kcpgo.testing.relay`` runs a module nothing imported yet).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, List

from ..sansio.memnet import LinkCounters, LinkModel, LinkProfile, Network
from .mutate import Corpus, Mutator, load_corpus
from .process import RelayProcess, read_line, reap
from .resources import rss_kb, udp_rcvbuf_errors

if TYPE_CHECKING:
    from .relay import Impairment, Relay, parse_impairment

__all__ = ["LinkProfile", "Impairment", "parse_impairment", "LinkCounters", "LinkModel",
           "Network", "Relay", "RelayProcess", "read_line", "reap", "Mutator", "Corpus",
           "load_corpus", "rss_kb", "udp_rcvbuf_errors"]

_FROM_RELAY = ("Relay", "Impairment", "parse_impairment")


def __getattr__(name: str) -> Any:
    if name in _FROM_RELAY:
        value = getattr(importlib.import_module(".relay", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
