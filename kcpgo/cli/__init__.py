"""kcpgo's command line: ``python -m kcpgo <command> ...`` (or the ``kcpgo`` console script).

Each command lives in its own module of this package and exposes ``main(argv) -> int``; the
table :data:`COMMANDS` maps a command name to that module, so adding a command is one module
and one row. Modules are imported only when their command runs, so ``python -m kcpgo --help``
loads nothing heavy.

* ``echo``: the echo demo, ``echo server`` and ``echo client`` (:mod:`kcpgo.cli.echo`);
* ``bench``: throughput and latency benchmarks, kcpgo against kcp-go, TCP and kcptun
  (:mod:`kcpgo.cli.bench`; kcp-go's contenders need the source tree and Go);
* ``tunnel``: a kcptun-compatible client and server (:mod:`kcpgo.cli.tunnel`,
  docs/kcptun.md §5);
* ``run``: an unmodified Python program with chosen TCP addresses switched to KCP
  (:mod:`kcpgo.cli.run`, :mod:`kcpgo.monkey`);
* ``netem``: the loopback lossy-link relay (:mod:`kcpgo.cli.netem`, :mod:`kcpgo.testing`);
* ``stats``: kcp-go SNMP CSV logs as tables of rates (:mod:`kcpgo.cli.stats`);
* ``dissect``: kcp-go traffic in a pcap/pcapng capture, decrypted and decoded
  (:mod:`kcpgo.cli.dissect`).

Exit status: what the command returns; 2 for a usage error (as argparse); 130 (128 + SIGINT)
when SIGINT ended the command, quietly: no traceback, its sessions closed first; 141
(128 + SIGPIPE), quietly, when the reader of its output went away (``| head``).
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["COMMANDS", "EXIT_BROKEN_PIPE", "EXIT_INTERRUPTED", "HelpFormatter",
           "interrupt_main_on_sigint", "main", "usage"]

#: Exit status after SIGINT: 128 + the signal number, as a shell reports it.
EXIT_INTERRUPTED = 128 + int(signal.SIGINT)
#: Exit status when the reader of stdout went away (a pipe to ``head``), as after SIGPIPE.
EXIT_BROKEN_PIPE = 128 + int(signal.SIGPIPE)

#: command name -> (module that implements it, one-line description for the usage text).
COMMANDS: Dict[str, Tuple[str, str]] = {
    "echo": ("kcpgo.cli.echo", "echo demo: 'echo server' and 'echo client' (checks the echo, "
                               "prints throughput and counters)"),
    "bench": ("kcpgo.cli.bench", "throughput and latency benchmarks: kcpgo against kcp-go, "
                                 "TCP and kcptun"),
    "tunnel": ("kcpgo.cli.tunnel", "kcptun-compatible TCP tunnel: 'tunnel client' and "
                                   "'tunnel server' (kcptun's flags)"),
    "run": ("kcpgo.cli.run", "run a Python program (script or -m module) with chosen TCP "
                             "addresses switched to KCP"),
    "netem": ("kcpgo.cli.netem", "loopback UDP relay that impairs traffic (loss, delay, "
                                 "reorder...) like Linux netem"),
    "stats": ("kcpgo.cli.stats", "print or follow kcp-go SNMP CSV logs (--snmplog) as a "
                                 "table of rates"),
    "dissect": ("kcpgo.cli.dissect", "decode kcp-go traffic in a pcap/pcapng capture "
                                     "(decrypt, CRC, FEC, KCP, smux)"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                    argparse.RawDescriptionHelpFormatter):
    """Every command's ``--help``: defaults shown (except ``None`` and ``False``, which mean
    "not given"), description and epilog (the examples) kept as written."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        default = action.default
        if default is None or default is False or isinstance(default, list):
            return action.help
        return super()._get_help_string(action)


def interrupt_main_on_sigint() -> Callable[[], None]:
    """Make SIGINT raise ``KeyboardInterrupt`` in this thread's main greenlet, from the gevent
    hub's signal watcher (so gevent prints nothing, as it does when the signal lands in the
    hub). For commands whose main greenlet waits in gevent (``runtime "hub"``): the
    interrupt arrives when it next waits. Returns the function that removes the handler."""
    import gevent
    from greenlet import getcurrent
    target = getcurrent()
    watcher = gevent.signal_handler(signal.SIGINT, gevent.kill, target, KeyboardInterrupt)
    return watcher.cancel


def usage() -> str:
    """The top-level usage text listing every command."""
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: python -m kcpgo <command> [arguments]   (or: kcpgo <command> ...)", "",
             "commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "'python -m kcpgo <command> --help' describes a command; "
                  "'python -m kcpgo --version' prints the version."]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command named by ``argv[0]`` (default ``sys.argv[1:]``) with the rest of the
    arguments; returns the process exit status (2 for an unknown command, as argparse;
    :data:`EXIT_INTERRUPTED` when SIGINT ended the command)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        from .. import __version__
        print(f"kcpgo {__version__}")
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"python -m kcpgo: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(entry[0])
    try:
        return int(module.main(args[1:]) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output left (``dissect ... | head``): stop quietly, as a C tool
        # killed by SIGPIPE does; stdout goes to /dev/null so that the interpreter's final
        # flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
