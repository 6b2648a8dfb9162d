"""kcpgo's command line: ``python -m kcpgo <command> ...``.

Each command lives in its own module of this package and exposes ``main(argv) -> int``; the
table :data:`COMMANDS` maps a command name to that module, so adding a command (``echo``,
``bench``, ``stats``, ``capture``) is one module and one row. Modules are imported only when
their command runs, so ``python -m kcpgo --help`` loads nothing heavy.

* ``tunnel``: a kcptun-compatible client and server (:mod:`kcpgo.cli.tunnel`,
  docs/kcptun.md §5).
"""
from __future__ import annotations

import importlib
import sys
from typing import Dict, List, Optional, Tuple

__all__ = ["COMMANDS", "main"]

#: command name -> (module that implements it, one-line description for the usage text).
COMMANDS: Dict[str, Tuple[str, str]] = {
    "tunnel": ("kcpgo.cli.tunnel", "kcptun-compatible TCP tunnel: 'tunnel client' and "
                                   "'tunnel server' (kcptun's flags)"),
}


def usage() -> str:
    """The top-level usage text listing every command."""
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: python -m kcpgo <command> [arguments]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in sorted(COMMANDS.items())]
    lines += ["", "'python -m kcpgo <command> --help' describes a command."]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command named by ``argv[0]`` (default ``sys.argv[1:]``) with the rest of the
    arguments; returns the process exit status (2 for an unknown command, as argparse)."""
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
    return int(module.main(args[1:]) or 0)
