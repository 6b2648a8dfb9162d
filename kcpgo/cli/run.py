"""``python -m kcpgo run`` (also ``python -m kcpgo.monkey``): run an unmodified Python program
with chosen TCP addresses switched to KCP, like ``python -m gevent.monkey``::

    python -m kcpgo run [--gevent] [--server [HOST:]PORT]... [--client HOST:PORT|PORT]...
                        [--crypt NAME --key PASS] [--mode fast3] [--fec 10/3]
                        [--no-stream] [--idle-timeout S] (script.py | -m module) [args...]

:func:`kcpgo.monkey.patch` is applied with the same session options for every listed
address, then the script (or ``-m module``, found on the current directory and ``sys.path``
as ``python -m`` does) runs as ``__main__`` with ``sys.argv`` set to it and its arguments.
Sessions are byte streams by default, like the TCP they replace; ``--no-stream`` selects
message mode. Everything before the script or ``-m`` is the runner's; everything after it
is the program's.

Argument errors (a malformed address, ``--fec 10``, a cipher without ``--key``, a missing
script or module) are usage errors: exit status 2 and a message, before anything runs.
SIGINT ends the program quietly with status 130 after :func:`kcpgo.monkey.unpatch` (which
closes the shared smux sessions); with ``--gevent`` the interrupt is raised in the program's
main greenlet rather than inside gevent's hub (which would print it).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import runpy
import sys
from typing import List, Optional, Sequence, Tuple

from ..monkey import _address, patch, unpatch
from ..options import add_arguments, from_arguments
from . import EXIT_INTERRUPTED, HelpFormatter, interrupt_main_on_sigint

__all__ = ["main", "build_parser", "split_argv"]

_EXAMPLES = """examples:
  python -m kcpgo run --server 8000 --crypt aes --key s3cret -m http.server 8000
  python -m kcpgo run --client 127.0.0.1:8000 --crypt aes --key s3cret client.py 8000
  python -m kcpgo run --gevent --server :9000 --mode fast3 --fec 10/3 my_server.py

Keys: PORT (any host), HOST:PORT, [IPV6]:PORT or :PORT. Both ends need the same --crypt,
--key and --fec; --mode fast3 and --fec 10/3 are kcptun's usual choices."""


def build_parser(prog: str = "python -m kcpgo run") -> argparse.ArgumentParser:
    """The runner's options (what comes before the script or ``-m module``)."""
    ap = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False, formatter_class=HelpFormatter, epilog=_EXAMPLES,
        usage=f"{prog} [options] (script.py | -m module) [args ...]",
        description="Run an unmodified Python program with the listed TCP servers and "
                    "connection destinations switched to KCP.")
    ap.add_argument("-m", dest="module", metavar="MODULE",
                    help="run a library module as the program, like 'python -m MODULE'; "
                         "the rest of the command line is its arguments")
    ap.add_argument("--gevent", action="store_true",
                    help="call gevent.monkey.patch_all() first")
    ap.add_argument("--server", action="append", default=[], type=_address,
                    metavar="[HOST:]PORT",
                    help="a socketserver.TCPServer constructed for this address serves KCP "
                         "on that UDP port (PORT, HOST:PORT or [IPV6]:PORT; repeatable)")
    ap.add_argument("--client", action="append", default=[], type=_address,
                    metavar="[HOST:]PORT",
                    help="socket.create_connection() and socket.connect() to this address "
                         "make KCP sessions (PORT, HOST:PORT or [IPV6]:PORT; repeatable)")
    add_arguments(ap)
    # Stream mode is the default here (a byte stream, like the TCP it replaces), so --stream
    # alone would change nothing: --no-stream selects message mode.
    ap.add_argument("--no-stream", dest="stream", action="store_false", default=None,
                    help="message mode (the default here is stream mode, like TCP; --stream "
                         "says so explicitly)")
    return ap


def split_argv(ap: argparse.ArgumentParser, argv: Sequence[str]
               ) -> Tuple[List[str], Optional[str], Optional[str], List[str]]:
    """``(runner options, script, module, program arguments)``: the runner's options end at
    the first argument that is not an option or an option's value (the script), at ``-m
    MODULE`` (or ``-mMODULE``), or after ``--``. Unknown options are left to argparse."""
    args = list(argv)
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            script = args[i + 1] if i + 1 < len(args) else None
            return args[:i], script, None, args[i + 2:]
        if tok == "-m":
            if i + 1 >= len(args):
                return args, None, None, []         # argparse: "expected one argument"
            return args[:i], None, args[i + 1], args[i + 2:]
        if tok.startswith("-m") and not tok.startswith("--"):
            return args[:i], None, tok[2:], args[i + 1:]
        if tok.startswith("-") and tok != "-":
            action = ap._option_string_actions.get(tok.partition("=")[0])
            takes_value = action is not None and action.nargs != 0 and "=" not in tok
            i += 2 if takes_value else 1
            continue
        return args[:i], tok, None, args[i + 1:]
    return args, None, None, []


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m kcpgo run") -> int:
    """Patch, then run the script or module as ``__main__``; returns the exit status (the
    program's own ``sys.exit`` propagates as ``SystemExit``). Usage errors raise
    ``SystemExit(2)`` (argparse), before anything is patched or run."""
    ap = build_parser(prog)
    options, script, module, rest = split_argv(ap, sys.argv[1:] if argv is None else argv)
    ns = ap.parse_args(options)
    if script is None and module is None:
        ap.error("name the program to run: script.py or -m module")
    if ns.gevent:
        from gevent import monkey as gmonkey
        gmonkey.patch_all()
    try:
        opts = from_arguments(ns)
    except ValueError as e:
        ap.error(str(e))
    if script is not None and not os.path.isfile(script):
        ap.error(f"can't open file {script!r}: no such file")
    if module is not None:
        if not os.environ.get("PYTHONSAFEPATH"):
            sys.path.insert(0, os.getcwd())          # as 'python -m' finds modules
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            ap.error(f"no module named {module!r}")
    if not ns.server and not ns.client:
        print(f"{prog}: warning: no --server or --client given: nothing is switched to KCP",
              file=sys.stderr)
    patch(servers={a: dict(opts) for a in ns.server},
          clients={a: dict(opts) for a in ns.client})
    cancel = interrupt_main_on_sigint() if ns.gevent else None
    try:
        if module is not None:
            sys.argv = [module] + rest
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            assert script is not None
            sys.argv = [script] + rest
            sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python script.py`
            runpy.run_path(script, run_name="__main__")
    except KeyboardInterrupt:
        unpatch()
        return EXIT_INTERRUPTED
    finally:
        if cancel is not None:
            cancel()
    return 0
