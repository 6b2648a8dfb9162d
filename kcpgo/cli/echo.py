"""``python -m kcpgo echo server|client``: the echo demo, with kcptun's session flags.

* **server** (``--listen HOST:PORT``): every byte a client sends comes back. The first stdout
  line is ``LISTENING host:port`` once bound (port 0 picks a free one); each session's start
  and end, with what it echoed, follow as ``server:`` lines. ``--once``: exit when the first
  session ends. KCP has no FIN, so a session ends when its client has been silent for
  ``--idle-timeout`` seconds (2 with ``--once``, 60 otherwise).
* **client** (``--remote HOST:PORT``): sends ``--mb`` megabytes of random bytes while reading
  the echo, compares SHA-256 digests, and prints (as ``client:`` lines) the settings in use,
  the throughput and the session's SNMP counters (kcp-go's names, :class:`kcpgo.snmp.Snmp`,
  this session's own). Exit status 0 when the echo is intact, 1 otherwise.

Session flags, names and defaults are kcptun's (:mod:`kcpgo.cli.kcptun_config`): the same
flags on both ends make matching sessions, and a kcptun-configured kcp-go peer matches too.
The echo runs on plain KCP sessions in stream mode; smux and snappy are the tunnel's, so
``--nocomp``, ``--smuxver`` and the other smux flags belong to ``tunnel`` only. Both ends
run on this thread's gevent hub; SIGINT closes the sessions and exits with status 130.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import re
import sys
import time
from typing import Any, List, Optional, Sequence, Tuple

import gevent

from .. import MODES, dial, listen, set_runtime
from ..address import format_address, parse_address
from ..runtime.modes import ENV_VAR
from ..snmp import FIELDS, Snmp
from . import EXIT_INTERRUPTED, HelpFormatter, interrupt_main_on_sigint
from .kcptun_config import (ROLES, ConfigError, TunnelConfig, check, flags_for, nodelay_params,
                            session_options)

__all__ = ["main", "SESSION_FLAGS", "add_session_flags", "session_config"]

#: kcptun's flags (kcptun_config.FLAGS) that configure a KCP session: the echo takes these.
SESSION_FLAGS = ("crypt", "key", "mode", "mtu", "sndwnd", "rcvwnd", "datashard", "parityshard",
                 "ratelimit", "dscp", "sockbuf", "acknodelay", "nodelay", "interval", "resend",
                 "nc")
#: ``--mode`` values: kcptun's presets and ``manual`` (then --nodelay --interval --resend --nc).
MODE_CHOICES = tuple(sorted(MODES)) + ("manual",)
#: Seconds of silence that end a session: the server's default, and with ``--once``.
IDLE_TIMEOUT = 60.0
ONCE_IDLE_TIMEOUT = 2.0
#: Seconds between the server's checks for datagrams failing the checksum (wrong key/crypt).
ACCEPT_POLL = 5.0
#: Bytes per ``recv`` call.
CHUNK = 1 << 20

_EXAMPLES = """examples:
  python -m kcpgo echo server --listen 127.0.0.1:29900
  python -m kcpgo echo client --remote 127.0.0.1:29900 --mb 5
  python -m kcpgo echo server --listen :29900 --crypt salsa20 --key s3cret --ds 0 --ps 0 --once
  python -m kcpgo echo client --remote 127.0.0.1:29900 --crypt salsa20 --key s3cret --ds 0 \\
      --ps 0 --mode fast3 --sndwnd 1024 --rcvwnd 1024

Both ends must agree on --crypt, --key, --datashard/--parityshard (kcptun's rule). The smux
flags (--nocomp, --smuxver, ...) apply to 'python -m kcpgo tunnel' only: the echo is plain
KCP."""


def add_session_flags(parser: argparse.ArgumentParser, role: str) -> None:
    """Add kcptun's session flags (:data:`SESSION_FLAGS`, with kcptun's aliases ``--ds`` and
    ``--ps`` and its defaults for ``role``) to ``parser``."""
    by_name = {f.name: f for f in flags_for(role)}
    group = parser.add_argument_group("KCP session (kcptun's flags and defaults)")
    for name in SESSION_FLAGS:
        f = by_name[name]
        names = ["--" + n for n in (f.name,) + f.aliases]
        text = f.help_for(role).replace("%", "%%")
        if f.kind is bool:
            group.add_argument(*names, dest=f.attr, action="store_true", help=text)
        elif name == "mode":
            group.add_argument(*names, dest=f.attr, default=f.default_for(role),
                               choices=MODE_CHOICES, help=text)
        else:
            default = f.default_for(role)
            if name == "key":           # resolved in session_config: $KCPTUN_KEY, as kcptun
                default, text = None, text + f" (default: $KCPTUN_KEY, else {default!r})"
            group.add_argument(*names, dest=f.attr, type=f.kind, default=default,
                               metavar=name.upper(), help=text)


def session_config(ns: argparse.Namespace, role: str) -> TunnelConfig:
    """The checked :class:`TunnelConfig` of ``role`` with the session flags of ``ns``
    (everything else at kcptun's defaults). :class:`ConfigError` for a value kcptun or kcpgo
    refuses; ``cfg.warnings`` lists what the user should know."""
    cfg = TunnelConfig(role=role)
    for f in flags_for(role):
        if f.name in SESSION_FLAGS:
            value = getattr(ns, f.attr)
            if f.name == "key" and value is None:
                value = os.environ.get("KCPTUN_KEY", f.default_for(role))
            setattr(cfg, f.attr, value)
    check(cfg)
    return cfg


def describe(cfg: TunnelConfig) -> str:
    """One line naming the settings in use: cipher, FEC, mode, MTU, windows."""
    crypt = cfg.effective_crypt
    fec = (f"FEC {cfg.datashard}/{cfg.parityshard}" if cfg.datashard > 0 and cfg.parityshard > 0
           else "no FEC")
    nd = nodelay_params(cfg)
    return (f"crypt {crypt if crypt != 'null' else 'none (no crypto header)'}, {fec}, "
            f"mode {cfg.mode} (nodelay {nd[0]}, interval {nd[1]} ms, resend {nd[2]}, "
            f"nc {nd[3]}), mtu {cfg.mtu}, window {cfg.sndwnd}/{cfg.rcvwnd}, stream mode")


def _tune(sess: Any, cfg: TunnelConfig, socket_too: bool = True) -> None:
    """kcptun's per-session settings the Options do not carry: a manual mode's nodelay
    parameters, and unless ``socket_too`` is false (an accepted session shares its listener's
    socket), DSCP and socket buffers (failures are reported, not fatal, as kcptun). A
    listener takes the socket settings alone."""
    if cfg.mode not in MODES and hasattr(sess, "set_nodelay"):
        sess.set_nodelay(*nodelay_params(cfg))
    if not socket_too:
        return
    steps = [(sess.set_dscp, cfg.dscp)] if cfg.dscp else []
    steps += [(sess.set_read_buffer, cfg.sockbuf), (sess.set_write_buffer, cfg.sockbuf)]
    for setter, value in steps:
        try:
            setter(value)
        except (OSError, ValueError, AttributeError) as e:
            logging.getLogger("kcpgo.echo").warning("%s: %s", setter.__name__, e)


def counters_text(snmp: Snmp) -> List[str]:
    """The non-zero 5.6.1 counters of ``snmp`` as ``Name value`` text, a few per line."""
    items = [f"{name} {getattr(snmp, name):,}" for name in FIELDS if getattr(snmp, name)]
    return [", ".join(items[i:i + 6]) for i in range(0, len(items), 6)] or ["all zero"]


def _say(role: str, text: str) -> None:
    print(f"{role}: {text}", flush=True)


def _parser(role: str) -> argparse.ArgumentParser:
    other = "client" if role == "server" else "server"
    ap = argparse.ArgumentParser(
        prog=f"python -m kcpgo echo {role}", formatter_class=HelpFormatter, epilog=_EXAMPLES,
        description=f"The KCP echo {role} (see also 'python -m kcpgo echo {other}').")
    if role == "server":
        ap.add_argument("--listen", "-l", default="127.0.0.1:29900", metavar="HOST:PORT",
                        help="UDP address to listen on (':PORT' for every address; port 0 "
                             "picks a free one)")
        ap.add_argument("--once", action="store_true",
                        help="exit when the first session ends (its client silent for "
                             f"--idle-timeout, {ONCE_IDLE_TIMEOUT:g} s by default)")
        ap.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS",
                        help=f"end a session whose client is silent this long (KCP has no "
                             f"FIN); default {IDLE_TIMEOUT:g}, {ONCE_IDLE_TIMEOUT:g} with --once")
    else:
        ap.add_argument("--remote", "--remoteaddr", "-r", default="127.0.0.1:29900",
                        metavar="HOST:PORT", help="the echo server's UDP address")
        ap.add_argument("--mb", type=float, default=5.0, help="megabytes (10^6 bytes) to echo")
        ap.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="give up when no echo arrives for this long")
    add_session_flags(ap, role)
    return ap


def _settings(ap: argparse.ArgumentParser, ns: argparse.Namespace, role: str
              ) -> Tuple[TunnelConfig, Any]:
    try:
        cfg = session_config(ns, role)
    except ConfigError as e:
        ap.error(str(e))
    for warning in cfg.warnings:
        _say(role, f"warning: {warning}")
    return cfg, dataclasses.replace(session_options(cfg), snmp=Snmp())


def _setup() -> Any:
    if not os.environ.get(ENV_VAR):
        set_runtime("hub")          # a gevent program: the sessions run on this thread's hub
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    pkg = logging.getLogger("kcpgo")
    pkg.addHandler(handler)
    if pkg.level == logging.NOTSET or pkg.level > logging.WARNING:
        pkg.setLevel(logging.WARNING)
    return interrupt_main_on_sigint()


# ---------------------------------------------------------------------- server


def _serve_one(sess: Any, peer: Any, cfg: TunnelConfig, finished: List[Any]) -> None:
    conv = f"{sess.conv:#010x}"
    _say("server", f"session {conv} from {format_address(peer)}")
    echoed = 0
    t0 = t_last = time.perf_counter()
    reason = "closed"
    try:
        _tune(sess, cfg, socket_too=False)
        while True:
            data = sess.recv(CHUNK)
            if not data:
                break
            sess.sendall(data)
            echoed += len(data)
            t_last = time.perf_counter()
    except OSError as e:
        reason = str(getattr(e, "strerror", None) or e)
    finally:
        sess.close()
    _say("server", f"session {conv} ended ({reason}): echoed {echoed:,} bytes in "
                   f"{t_last - t0:.2f} s")
    _say("server", "listener counters: " + "; ".join(counters_text(sess.snmp)))
    finished.append(sess)


def run_server(ns: argparse.Namespace, cfg: TunnelConfig, options: Any) -> int:
    """Serve until SIGINT (``KeyboardInterrupt``) or, with ``--once``, the first session's
    end; returns the exit status (1 if it cannot listen)."""
    idle = ns.idle_timeout
    if idle is None:
        idle = ONCE_IDLE_TIMEOUT if ns.once else IDLE_TIMEOUT
    options = dataclasses.replace(options, idle_timeout=idle)
    try:
        ln = listen(ns.listen, options)
    except (OSError, ValueError) as e:
        print(f"server: cannot listen on {ns.listen}: {e}", file=sys.stderr)
        return 1
    handlers: List[Any] = []
    finished: List[Any] = []
    try:
        _tune(ln, cfg)
        print(f"LISTENING {format_address(ln.getsockname())}", flush=True)
        _say("server", describe(cfg))
        _say("server", f"a session ends after {idle:g} s of silence from its client"
                       + ("; exiting after the first one" if ns.once else ""))
        ln.settimeout(ACCEPT_POLL)
        while not (ns.once and finished):
            try:
                sess, peer = ln.accept()
            except TimeoutError as e:
                if str(e) != "timed out":       # datagrams failed the checksum meanwhile
                    _say("server", f"warning: {e}")
                continue
            handlers.append(gevent.spawn(_serve_one, sess, peer, cfg, finished))
            if ns.once:
                handlers[-1].join()
    finally:
        gevent.killall(handlers)
        ln.close()
    return 0


# ---------------------------------------------------------------------- client


def _send(sess: Any, total: int, digest: Any) -> Optional[OSError]:
    """Send ``total`` random bytes, a block at a time, hashing them into ``digest`` (memory
    stays at one block whatever ``--mb`` is). Returns the error that stopped it, if any
    (returned, not raised: gevent would print a raising greenlet's traceback, and the
    reader reports the failure)."""
    left = total
    try:
        while left > 0:
            block = os.urandom(min(CHUNK, left))
            digest.update(block)
            sess.sendall(block)
            left -= len(block)
    except OSError as e:
        return e
    return None


def run_client(ns: argparse.Namespace, cfg: TunnelConfig, options: Any) -> int:
    """Echo ``--mb`` MB once; returns 0 if the echo is intact, 1 otherwise."""
    try:
        remote = parse_address(ns.remote, "--remote")
    except (TypeError, ValueError) as e:
        print(f"client: {e}", file=sys.stderr)
        return 2
    total = int(ns.mb * 1_000_000)
    sent, echoed = hashlib.sha256(), hashlib.sha256()
    sess = dial(remote, options, timeout=ns.timeout)
    writer: Optional[Any] = None
    try:
        _tune(sess, cfg)
        _say("client", f"session {sess.conv:#010x} from {format_address(sess.getsockname())} "
                       f"to {format_address(remote)}")
        _say("client", describe(cfg))
        _say("client", f"sending {total:,} random bytes and reading them back ...")
        t0 = time.perf_counter()
        writer = gevent.spawn(_send, sess, total, sent)
        got = 0
        try:
            while got < total:
                data = sess.recv(CHUNK)
                if not data:
                    break
                echoed.update(data)
                got += len(data)
            error = writer.get()
            if error is not None:
                raise error
        except OSError as e:
            _say("client", f"failed after {got:,} of {total:,} bytes came back: {e}")
            if not got:
                _say("client", "no echo at all: is 'echo server' running there, with the same "
                               "--crypt, --key and --datashard/--parityshard?")
            return 1
        took = max(time.perf_counter() - t0, 1e-9)
        ok = got == total and echoed.digest() == sent.digest()
        _say("client", f"echoed {got:,} bytes in {took:.2f} s: "
                       f"{2 * got / took / 1e6:.1f} MB/s both ways "
                       f"({got / took / 1e6:.1f} MB/s each way); "
                       f"sha256 {'intact' if ok else 'MISMATCH'}")
        _say("client", f"srtt {sess.srtt} ms, rto {sess.rto} ms")
        for line in counters_text(sess.snmp):
            _say("client", f"counters: {line}")
        return 0 if ok else 1
    finally:
        if writer is not None:
            writer.kill()
        sess.close()


def _plain(text: str) -> str:
    """A docstring as --help text: reST roles and literals as plain words."""
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "").replace("**", "")


def main(argv: Sequence[str]) -> int:
    """``echo server|client [flags]``; returns the exit status (2 for a usage error, 130
    after SIGINT; the client: 0 when the echo is intact)."""
    if not argv or argv[0] not in ROLES:
        text = "usage: python -m kcpgo echo {server,client} [flags]  (--help for each)"
        if argv and argv[0] in ("-h", "--help", "help"):
            print(text + "\n\n" + _plain(__doc__ or "").strip())
            return 0
        print(text, file=sys.stderr)
        return 2
    role = argv[0]
    ap = _parser(role)
    ns = ap.parse_args(list(argv[1:]))
    if role == "client" and ns.mb < 0:
        ap.error("--mb must be >= 0")
    cfg, options = _settings(ap, ns, role)
    cancel = _setup()
    try:
        if role == "server":
            return run_server(ns, cfg, options)
        return run_client(ns, cfg, options)
    except KeyboardInterrupt:
        _say(role, "interrupted")
        return EXIT_INTERRUPTED
    finally:
        cancel()
