"""kcptun's flags, defaults and JSON config for ``python -m kcpgo tunnel client|server``.

Pure: argv, environment and a JSON file in, a validated :class:`TunnelConfig` out, plus the
kcpgo arguments it implies (:func:`session_options`, :func:`smux_arguments`). No sockets.

Names and defaults are kcptun's (docs/kcptun.md §5.5, §6; JSON keys from kcptun's ``Config``
struct tags, which are the long flag names). Parsing follows Go's ``flag`` package under
urfave/cli, as kcptun does: ``-name`` and ``--name`` are the same flag, a value is given as
``-name value`` or ``-name=value``, a bool flag takes no separate value (``-nocomp`` or
``-nocomp=false``), aliases (``-l``, ``-r``, ``-t``, ``-ds``, ``-ps``) work with one or two
dashes. ``-c FILE`` loads a JSON object whose values override the command line (kcptun
applies the file after the flags). ``KCPTUN_KEY`` in the environment replaces the default key
(an explicit ``--key`` still wins, as urfave/cli does).

Where kcpgo differs, on purpose (each is also in the flag's help text):

* ``--smuxver`` on the server defaults to ``auto``: follow each client's smux version and
  compression from its first bytes (kcptun.md §3.3), so kcptun 20210922 clients (v1) and
  newer ones (v2), with or without ``--nocomp``, all work against one server; ``1``/``2``
  enforce that version and ``--nocomp`` exactly as kcptun does. The client defaults to 1
  (Debian's kcptun 20210922; the newest kcptun defaults to 2, kcptun.md §6).
* ``--framesize`` (newest kcptun, default 8192 there) defaults to 32768, smux's own default:
  whole frames fill KCP segments (kcptun.md §10). Any size interoperates.
* ``--closewait`` defaults to 0 at both ends, kcptun 20210922's behaviour (the newest kcptun
  server uses 30, kcptun.md §6: against a Debian kcptun client, whose FIN is a full close,
  a server that keeps the other direction open sends into the void, and in smux v1 nothing
  bounds how much, which stalls the client's other streams). With N > 0 the ended direction
  is forwarded as a half-close while it waits (see :mod:`kcpgo.cli.pipe`): for protocols
  that half-close, between kcpgo ends.
* ``--workers N`` (server, beyond kcptun; also ``"workers"`` in ``-c``): N processes serve
  ``--listen``, each with its own ``SO_REUSEPORT`` socket and sessions (Linux; see
  :mod:`kcpgo.server_workers`), so the server uses N cores.
* ``--tcp`` (tcpraw) and ``--QPP`` change the wire and are refused; ``--pprof`` is
  accepted and ignored with a warning. ``--ratelimit`` paces every session (bytes/s, as
  current kcptun's ``SetRateLimit`` per session; Options ``rate_limit``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .. import MODES, Options, __version__

__all__ = ["TunnelConfig", "Flag", "FLAGS", "parse", "ConfigError", "go_argv", "kcptun_crypt",
           "as_dict", "KCPTUN_CIPHERS", "session_options", "smux_arguments", "nodelay_params",
           "startup_lines", "ROLES"]

ROLES = ("client", "server")

#: kcptun's ``--crypt`` names (newest kcptun's table, kcptun.md §5.1 and §6): anything else,
#: case included, silently becomes AES-256 (``aes``) as in kcptun. 20210922 lacks ``null`` and
#: ``aes-128-gcm`` (it maps them to ``aes`` too).
KCPTUN_CIPHERS = ("aes", "aes-128", "aes-128-gcm", "aes-192", "salsa20", "blowfish", "twofish",
                  "cast5", "3des", "tea", "xtea", "xor", "sm4", "none", "null")
#: kcptun.md §5.5, §4.6: smux refuses a keepalive interval of 0 or above its fixed 30 s timeout.
KEEPALIVE_MAX = 30
#: Go's ``strconv.ParseBool`` spellings.
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class ConfigError(ValueError):
    """A flag or config value kcptun would also refuse, or one kcpgo cannot honour; the
    message names the flag and what is valid."""


@dataclass(frozen=True)
class Flag:
    """One kcptun flag: its long name (the JSON key unless ``key`` says otherwise), aliases,
    type, default (a ``(client, server)`` pair when the roles differ) and help text."""

    name: str
    kind: type
    default: Any
    help: Any                           # text, or a (client, server) pair
    aliases: Tuple[str, ...] = ()
    role: Optional[str] = None          # "client" or "server" only; None: both
    hidden: bool = False                # kcptun hides it from --help
    key: Optional[str] = None           # JSON key when it differs from the name

    @property
    def json_key(self) -> str:
        return self.key or self.name

    @property
    def attr(self) -> str:
        return (self.key or self.name).replace("-", "_").lower()

    def default_for(self, role: str) -> Any:
        if isinstance(self.default, tuple):
            return self.default[ROLES.index(role)]
        return self.default

    def help_for(self, role: str) -> str:
        return self.help[ROLES.index(role)] if isinstance(self.help, tuple) else self.help


_B = bool
#: Every flag, in kcptun's --help order (kcptun.md §5.5; newest-only flags from §6).
FLAGS: Tuple[Flag, ...] = (
    Flag("localaddr", str, ":12948", "local TCP listen address (host:port, or a unix socket "
         "path)", ("l",), role="client"),
    Flag("remoteaddr", str, "vps:29900", "kcp server address (host:port)", ("r",),
         role="client"),
    Flag("listen", str, ":29900", "kcp server listen address (UDP host:port; port 0 picks a "
         "free one)", ("l",), role="server"),
    Flag("target", str, "127.0.0.1:12948", "target server address, or path/to/unix_socket",
         ("t",), role="server"),
    Flag("key", str, "it's a secrect", "pre-shared secret between client and server "
         "[$KCPTUN_KEY]"),
    Flag("crypt", str, "aes", ", ".join(KCPTUN_CIPHERS) + " (null: no cipher at all; unknown "
         "names mean aes, as in kcptun)"),
    Flag("mode", str, "fast", "profiles: fast3, fast2, fast, normal, manual (manual: "
         "--nodelay --interval --resend --nc)"),
    Flag("QPP", _B, False, "Quantum Permutation Pads: not supported by kcpgo (refused)",
         key="qpp"),
    Flag("QPPCount", int, 61, "QPP pads (ignored)", key="qpp-count", hidden=True),
    Flag("conn", int, 1, "number of KCP sessions (UDP connections) to the server, used round "
         "robin", role="client"),
    Flag("autoexpire", int, 0, "seconds after which a session takes no new connections (0: "
         "never)", role="client"),
    Flag("scavengettl", int, 600, "seconds an expired session may live on before it is "
         "closed", role="client"),
    Flag("mtu", int, 1350, "maximum UDP datagram size in bytes"),
    Flag("ratelimit", int, 0, "bytes/s pacing per session, wire bytes (0: off)"),
    Flag("sndwnd", int, (128, 1024), "send window in packets"),
    Flag("rcvwnd", int, (512, 1024), "receive window in packets"),
    Flag("datashard", int, 10, "Reed-Solomon FEC data shards", ("ds",)),
    Flag("parityshard", int, 3, "Reed-Solomon FEC parity shards", ("ps",)),
    Flag("dscp", int, 0, "DSCP of outgoing datagrams (6 bits)"),
    Flag("nocomp", _B, False, "disable snappy compression (must match the peer's)"),
    Flag("acknodelay", _B, False, "flush ACKs immediately", hidden=True),
    Flag("nodelay", int, 0, "KCP nodelay (--mode manual)", hidden=True),
    Flag("interval", int, 50, "KCP interval ms (--mode manual)", hidden=True),
    Flag("resend", int, 0, "KCP fast resend (--mode manual)", hidden=True),
    Flag("nc", int, 0, "KCP no congestion control (--mode manual)", hidden=True),
    Flag("sockbuf", int, 4194304, "UDP socket buffer in bytes"),
    Flag("smuxver", str, ("1", "auto"), (
        "smux version, 1 or 2: must match the server's (1 as Debian's kcptun 20210922; the "
        "newest kcptun uses 2)",
        "smux version: 'auto' (beyond kcptun) follows each client's smux version and "
        "compression from its first bytes, so kcptun clients of any version, with or without "
        "--nocomp, work with their defaults; 1 or 2 enforce that version and --nocomp, as "
        "kcptun does")),
    Flag("smuxbuf", int, 4194304, "smux session receive buffer in bytes"),
    Flag("framesize", int, 32768, "largest smux frame payload sent, bytes (newest kcptun "
         "default 8192; 32768 fills KCP segments better)"),
    Flag("streambuf", int, 2097152, "per-stream receive window in bytes (smux v2)"),
    Flag("keepalive", int, 10, f"seconds between smux keepalives (1..{KEEPALIVE_MAX})"),
    Flag("closewait", int, 0, "seconds a connection stays half-open after one direction "
         "ended (its end is forwarded as a FIN meanwhile; for half-closing protocols between "
         "kcpgo ends); 0 closes both directions at once like kcptun 20210922"),
    Flag("snmplog", str, "", "append SNMP counters as CSV to this file; Go time layout in the "
         "name, like ./snmp-20060102.log"),
    Flag("snmpperiod", int, 60, "SNMP collect period in seconds"),
    Flag("log", str, "", "log file (default: stderr)"),
    Flag("quiet", _B, False, "suppress the 'stream open/close' messages"),
    Flag("tcp", _B, False, "tcpraw fake TCP: not supported by kcpgo (refused)"),
    Flag("pprof", _B, False, "Go profiler: not available (ignored)"),
    Flag("workers", int, 1, "processes serving --listen, each with its own UDP socket "
         "(SO_REUSEPORT) and sessions, to use more than one core (kcpgo only; Linux)",
         role="server"),
    Flag("c", str, "", "JSON config file; its values override the command line"),
)


@dataclass
class TunnelConfig:
    """The effective settings of one tunnel process (kcptun's ``Config``), after the command
    line, ``KCPTUN_KEY`` and ``-c`` were applied and the values checked. Attribute names are
    the JSON keys (``qpp-count`` -> ``qpp_count``); fields of the other role keep defaults."""

    role: str
    localaddr: str = ":12948"
    remoteaddr: str = "vps:29900"
    listen: str = ":29900"
    target: str = "127.0.0.1:12948"
    key: str = "it's a secrect"
    crypt: str = "aes"
    mode: str = "fast"
    qpp: bool = False
    qpp_count: int = 61
    conn: int = 1
    autoexpire: int = 0
    scavengettl: int = 600
    mtu: int = 1350
    ratelimit: int = 0
    sndwnd: int = 128
    rcvwnd: int = 512
    datashard: int = 10
    parityshard: int = 3
    dscp: int = 0
    nocomp: bool = False
    acknodelay: bool = False
    nodelay: int = 0
    interval: int = 50
    resend: int = 0
    nc: int = 0
    sockbuf: int = 4194304
    smuxver: Any = 1                    # 1, 2 or (server) "auto"
    smuxbuf: int = 4194304
    framesize: int = 32768
    streambuf: int = 2097152
    keepalive: int = 10
    closewait: int = 0
    snmplog: str = ""
    snmpperiod: int = 60
    log: str = ""
    quiet: bool = False
    tcp: bool = False
    pprof: bool = False
    workers: int = 1
    c: str = ""
    #: What the operator should know (ignored settings, unknown JSON keys): log these.
    warnings: List[str] = field(default_factory=list)

    @property
    def effective_crypt(self) -> str:
        """The cipher kcptun would use for :attr:`crypt` (unknown names -> ``aes``)."""
        return kcptun_crypt(self.crypt)

    @property
    def auto_framing(self) -> bool:
        """Server: follow each client's smux version and compression."""
        return self.smuxver == "auto"


def flags_for(role: str) -> List[Flag]:
    """The flags of ``role`` (``"client"`` or ``"server"``)."""
    return [f for f in FLAGS if f.role in (None, role)]


# ---------------------------------------------------------------------- Go-style argv


def go_argv(role: str, argv: Sequence[str]) -> List[str]:
    """``argv`` with Go flag spellings turned into argparse's: ``-name``/``--name`` and
    aliases become ``--longname``; a bool flag's ``=value`` is read as Go's ``ParseBool``
    (``--nocomp=false`` drops the flag). Unknown tokens are left for argparse to refuse.
    ``ConfigError`` for a bool flag with a value Go would refuse."""
    names: Dict[str, Flag] = {}
    for f in flags_for(role):
        names[f.name] = f
        for a in f.aliases:
            names[a] = f
    out: List[str] = []
    pending: Optional[Flag] = None          # a value flag given without "=": takes the next
    for tok in argv:
        if pending is not None:
            out.append(f"{_opt(pending)}={tok}")        # Go takes it verbatim, even "-x"
            pending = None
            continue
        if tok == "--" or not tok.startswith("-") or tok in ("-", "--"):
            out.append(tok)
            continue
        body = tok[2:] if tok.startswith("--") else tok[1:]
        name, eq, value = body.partition("=")
        f = names.get(name)
        if f is None:
            if name in ("h", "help", "v", "version"):
                out.append("--" + ("help" if name in ("h", "help") else "version"))
            else:
                out.append(tok)
            continue
        if f.kind is bool:
            if not eq or value in _GO_TRUE:
                out.append(_opt(f))
            elif value not in _GO_FALSE:
                raise ConfigError(f"invalid boolean value {value!r} for flag -{name}")
            continue
        if eq:
            out.append(f"{_opt(f)}={value}")
        else:
            pending = f
    if pending is not None:
        out.append(_opt(pending))                      # argparse: "expected one argument"
    return out


def _opt(f: Flag) -> str:
    """The argparse spelling of ``f``: ``--name``, or ``-c`` for a one-letter name."""
    return ("-" if len(f.name) == 1 else "--") + f.name


def _go_int(text: str) -> int:
    """An int as Go's flag package reads one (decimal, or 0x/0o/0b prefixed)."""
    try:
        return int(text, 10)
    except ValueError:
        pass
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None


def build_parser(role: str, prog: str) -> argparse.ArgumentParser:
    """The argparse parser for ``role``'s flags, defaults per role (kcptun.md §5.5)."""
    p = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False, add_help=False,
        description=f"kcptun-compatible tunnel {role} (kcpgo {__version__}; see "
                    f"docs/kcptun.md §5). Flags take one or two dashes, as kcptun's.",
        epilog="Beyond kcptun: the first stdout line is 'LISTENING host:port' once the "
               "listening socket is bound (for scripts; port 0 picks a free port).")
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("--version", action="version", version=f"kcpgo tunnel {__version__}")
    for f in flags_for(role):
        opts = ["-" * (1 if len(n) == 1 else 2) + n for n in (f.name,) + f.aliases]
        help_text = argparse.SUPPRESS if f.hidden else f.help_for(role)
        default = f.default_for(role)
        if f.kind is bool:
            p.add_argument(*opts, dest=f.attr, action="store_true", default=default,
                           help=help_text)
            continue
        if not f.hidden and default != "":
            help_text += f" (default: {default!r})"
        p.add_argument(*opts, dest=f.attr, type=_go_int if f.kind is int else str,
                       default=default, metavar="VALUE", help=help_text)
    return p


# ---------------------------------------------------------------------- the whole parse


def parse(role: str, argv: Sequence[str], environ: Optional[Mapping[str, str]] = None,
          prog: Optional[str] = None) -> TunnelConfig:
    """The :class:`TunnelConfig` of ``role`` from ``argv`` (flags only), ``environ``
    (``KCPTUN_KEY``; default ``os.environ``) and the ``-c`` JSON file, checked.

    Raises ``SystemExit`` (argparse: usage errors, ``--help``), :class:`ConfigError` for a
    value kcptun or kcpgo refuses, ``OSError``/``json.JSONDecodeError`` for an unreadable
    config file."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    env = os.environ if environ is None else environ
    parser = build_parser(role, prog or f"python -m kcpgo tunnel {role}")
    if "KCPTUN_KEY" in env:
        parser.set_defaults(key=env["KCPTUN_KEY"])      # urfave/cli: env over the default
    ns = parser.parse_args(go_argv(role, argv))
    values = vars(ns)
    cfg = TunnelConfig(role=role)
    for name, value in values.items():
        setattr(cfg, name, value)
    if cfg.c:
        apply_json(cfg, load_json(cfg.c))
    check(cfg)
    return cfg


def load_json(path: str) -> Dict[str, Any]:
    """The JSON object in ``path`` (``ConfigError`` if it is not an object)."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ConfigError(f"-c {path}: the config must be a JSON object of flag names, got "
                          f"{type(data).__name__}")
    return data


def apply_json(cfg: TunnelConfig, data: Mapping[str, Any]) -> None:
    """Override ``cfg`` with ``data`` (JSON keys = long flag names, kcptun's ``Config``
    tags). Keys of neither role are ignored with a warning (Go's decoder ignores them);
    a value of the wrong JSON type is a :class:`ConfigError`, as Go's decoder refuses it."""
    by_key = {f.json_key: f for f in FLAGS}
    mine = {f.json_key for f in flags_for(cfg.role)}
    for key, value in data.items():
        f = by_key.get(key)
        if f is None or key not in mine:
            other = "the other role's" if f is not None else "an unknown"
            cfg.warnings.append(f"-c {cfg.c}: {other} key {key!r} ignored")
            continue
        if key == "smuxver" and value == "auto":
            pass
        elif f.kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"-c {cfg.c}: {key!r} must be true or false, got {value!r}")
        elif f.kind is int or key == "smuxver":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"-c {cfg.c}: {key!r} must be an integer, got {value!r}")
        elif not isinstance(value, str):
            raise ConfigError(f"-c {cfg.c}: {key!r} must be a string, got {value!r}")
        setattr(cfg, f.attr, value)


def check(cfg: TunnelConfig) -> None:
    """Validate and normalise ``cfg`` in place (kcptun's checks, and kcpgo's limits).
    :class:`ConfigError` names the flag; settings kcpgo ignores add to ``cfg.warnings``."""
    sv = cfg.smuxver
    if isinstance(sv, str) and sv.strip().isdigit():
        sv = int(sv)
    if sv == "auto" and cfg.role == "client":
        raise ConfigError("--smuxver auto is for the server: a client must pick 1 or 2 (the "
                          "server's version)")
    if sv not in (1, 2, "auto"):
        raise ConfigError(f"--smuxver {cfg.smuxver!r}: unsupported smux version (1 or 2"
                          f"{', or auto' if cfg.role == 'server' else ''})")
    cfg.smuxver = sv
    if cfg.role == "client" and cfg.conn <= 0:
        raise ConfigError("--conn must be greater than 0")
    if cfg.workers < 1:
        raise ConfigError(f"--workers {cfg.workers}: must be at least 1")
    if cfg.workers > 1 and not sys.platform.startswith("linux"):
        raise ConfigError(f"--workers {cfg.workers} needs Linux (SO_REUSEPORT spreading UDP "
                          f"clients over the workers' sockets); this is {sys.platform}")
    if not 1 <= cfg.keepalive <= KEEPALIVE_MAX:
        raise ConfigError(f"--keepalive {cfg.keepalive}: must be 1..{KEEPALIVE_MAX} seconds "
                          f"(smux declares the session dead after 30 s without a frame)")
    if not 1 <= cfg.framesize <= 65535:
        raise ConfigError(f"--framesize {cfg.framesize}: must be 1..65535 bytes")
    if cfg.smuxbuf <= 0 or cfg.streambuf <= 0:
        raise ConfigError("--smuxbuf and --streambuf must be > 0 bytes")
    if cfg.streambuf > cfg.smuxbuf:
        raise ConfigError(f"--streambuf {cfg.streambuf} must not be larger than --smuxbuf "
                          f"{cfg.smuxbuf} (smux's rule)")
    for name in ("closewait", "autoexpire", "scavengettl", "dscp", "sockbuf"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"--{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.snmpperiod <= 0 and cfg.snmplog:
        cfg.warnings.append("--snmpperiod <= 0: no SNMP log is written (as kcptun)")
    if cfg.tcp:
        raise ConfigError("--tcp (tcpraw fake TCP) is not supported by kcpgo: run both ends "
                          "without --tcp")
    if cfg.qpp:
        raise ConfigError("--QPP (Quantum Permutation Pads) is not supported by kcpgo: run "
                          "both ends without --QPP")
    if cfg.ratelimit < 0:
        cfg.ratelimit = 0
    if cfg.pprof:
        cfg.warnings.append("--pprof ignored: there is no Go profiler in kcpgo")
    if cfg.autoexpire and cfg.scavengettl > cfg.autoexpire:
        cfg.warnings.append("scavengettl is bigger than autoexpire, connections may race hard "
                            "to use bandwidth; try limiting scavengettl to a smaller value")
    if cfg.mode not in MODES and cfg.mode != "manual":
        n = nodelay_params(cfg)
        cfg.warnings.append(f"--mode {cfg.mode!r} is not a kcptun profile (fast3, fast2, fast, "
                            f"normal): using --nodelay/--interval/--resend/--nc, "
                            f"{n[0]} {n[1]} {n[2]} {n[3]}, as kcptun's manual mode does")
    if cfg.crypt not in KCPTUN_CIPHERS:
        cfg.warnings.append(f"--crypt {cfg.crypt!r} is not a kcptun cipher name: using aes, "
                            f"as kcptun does")
    try:
        session_options(cfg)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid KCP settings: {e}") from None
    try:
        from ..facade.smux import SmuxConfig
        SmuxConfig(**smux_arguments(cfg))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid smux settings: {e}") from None


# ---------------------------------------------------------------------- what it implies


def kcptun_crypt(name: str) -> str:
    """kcptun's effective cipher for ``--crypt name``: the name itself if kcptun knows it
    (exact spelling), else ``aes`` (kcptun.md §5.1, §6)."""
    return name if name in KCPTUN_CIPHERS else "aes"


def nodelay_params(cfg: TunnelConfig) -> Tuple[int, int, int, int]:
    """``(nodelay, interval, resend, nc)``: the ``--mode`` preset (docs/protocol.md §7), or
    the hidden flags for any other mode (``manual``), as kcptun's switch does."""
    return MODES.get(cfg.mode, (cfg.nodelay, cfg.interval, cfg.resend, cfg.nc))


def session_options(cfg: TunnelConfig) -> Options:
    """The KCP session options (kcptun.md §5.2): stream mode, write delay off, windows, MTU,
    FEC, ACK nodelay, the cipher from the PBKDF2-derived key (``null``: no cipher header),
    and the mode when it is a preset (other modes: see :func:`nodelay_params`)."""
    name = cfg.effective_crypt
    crypt: Optional[str] = None if name == "null" else name
    return Options(crypt=crypt, key=None if crypt is None else cfg.key,
                   data_shards=cfg.datashard, parity_shards=cfg.parityshard,
                   mode=cfg.mode if cfg.mode in MODES else None, stream=True, mtu=cfg.mtu,
                   window=(cfg.sndwnd, cfg.rcvwnd), ack_nodelay=cfg.acknodelay,
                   write_delay=False, rate_limit=cfg.ratelimit)


def smux_arguments(cfg: TunnelConfig) -> Dict[str, Any]:
    """The smux keywords of ``dial_smux``/``listen_smux`` (kcptun.md §4, §5.5): version and
    compression (``None`` for both with the server's ``auto``), keepalive, buffers, frame
    size."""
    auto = cfg.smuxver == "auto"
    return dict(smux_version=None if auto else cfg.smuxver,
                compression=None if auto else not cfg.nocomp, keepalive=cfg.keepalive,
                max_receive_buffer=cfg.smuxbuf, max_stream_buffer=cfg.streambuf,
                max_frame_size=cfg.framesize)


def startup_lines(cfg: TunnelConfig, listening: str) -> List[str]:
    """kcptun's startup log lines (one setting each), for the log."""
    nd = nodelay_params(cfg)
    if cfg.auto_framing:
        framing = ["smux version: auto (follows each client)",
                   "compression: auto (follows each client)"]
    else:
        framing = [f"smux version: {cfg.smuxver}", f"compression: {str(not cfg.nocomp).lower()}"]
    lines = [f"version: kcpgo {__version__}", framing[0], f"listening on: {listening}"]
    if cfg.role == "client":
        lines.append(f"remote address: {cfg.remoteaddr}")
    else:
        lines.append(f"target: {cfg.target}")
        if cfg.workers > 1:
            lines.append(f"workers: {cfg.workers}")
    crypt = cfg.effective_crypt
    lines += [f"encryption: {crypt}" + ("" if crypt == cfg.crypt else f" (from {cfg.crypt!r})"),
              f"nodelay parameters: {nd[0]} {nd[1]} {nd[2]} {nd[3]} (mode {cfg.mode})",
              f"sndwnd: {cfg.sndwnd} rcvwnd: {cfg.rcvwnd}", framing[1], f"mtu: {cfg.mtu}",
              f"datashard: {cfg.datashard} parityshard: {cfg.parityshard}",
              f"acknodelay: {str(cfg.acknodelay).lower()}", f"dscp: {cfg.dscp}",
              f"sockbuf: {cfg.sockbuf}", f"smuxbuf: {cfg.smuxbuf}",
              f"framesize: {cfg.framesize}", f"streambuf: {cfg.streambuf}",
              f"keepalive: {cfg.keepalive}", f"closewait: {cfg.closewait}"]
    if cfg.role == "client":
        lines += [f"conn: {cfg.conn}", f"autoexpire: {cfg.autoexpire}",
                  f"scavengettl: {cfg.scavengettl}"]
    lines += [f"snmplog: {cfg.snmplog}", f"snmpperiod: {cfg.snmpperiod}",
              f"quiet: {str(cfg.quiet).lower()}"]
    return lines


def as_dict(cfg: TunnelConfig) -> Dict[str, Any]:
    """The settings of ``cfg``'s role by JSON key (what ``-c`` accepts)."""
    attrs = {f.name for f in fields(cfg)}
    return {f.json_key: getattr(cfg, f.attr) for f in flags_for(cfg.role) if f.attr in attrs}
