"""Session options: one schema for ``dial``, ``listen``, ``serve_conn``, the servers, ``monkey``
and command lines, validated once.

:class:`Options` is a frozen dataclass. Every public entry point takes its fields as keywords
(``kcpgo.dial(addr, crypt="aes", key="pw", mode="fast3")``) or a ready ``options=Options(...)``
(keywords then override its fields). A bad name raises ``TypeError`` listing the valid ones; a
bad value raises ``ValueError`` with the valid range, at construction, not at first use.

:data:`KCPTUN_CLIENT` and :data:`KCPTUN_SERVER` are kcptun's defaults (docs/protocol.md §7);
:data:`kcpgo.sansio.MODES` holds its nodelay presets (``mode=``).
"""
from __future__ import annotations

import dataclasses
import functools
import sys
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Union

from .codec import crypt as _crypt
from .codec.crypt import BlockCrypt, derive_key
from .sansio.connection import MODES, MTU_DEFAULT, MTU_MIN, Connection, kcp_mtu_for
from .sansio.kcpdefs import MAX_WINDOW
from .sansio.packet import fec_enabled, pipeline_overhead
from .sansio.wire import MTU_LIMIT
from .snmp import DEFAULT_SNMP, Snmp

__all__ = ["Options", "KCPTUN_CLIENT", "KCPTUN_SERVER", "add_arguments", "from_arguments",
           "CryptSpec", "KeySpec"]

if TYPE_CHECKING:  # pragma: no cover - argparse is loaded by command lines only
    import argparse

CryptSpec = Union[str, BlockCrypt, None]
KeySpec = Union[str, bytes, None]


@dataclass(frozen=True)
class Options:
    """The options of a KCP session (kcp-go's ``DialWithOptions`` / ``Set*`` calls).

    Fields (all optional):

    * ``crypt``: cipher name (``"aes"``, ``"salsa20"``, ``"none"``, ..., docs/protocol.md
      §4.3) or a ready :class:`~kcpgo.codec.crypt.BlockCrypt`; ``None`` sends no crypto header;
    * ``key``: with a cipher name, a kcptun passphrase (``str``, derived with PBKDF2 as kcptun
      does, §4.7) or the derived key bytes;
    * ``data_shards``, ``parity_shards``: Reed-Solomon FEC, sent when both are > 0 (§2);
      ``data_shards + parity_shards <= 256``;
    * ``mode``: a kcptun preset (``normal``, ``fast``, ``fast2``, ``fast3``; §7);
    * ``stream``: stream mode (writes packed into full segments, as kcptun);
    * ``mtu``: largest wire datagram in bytes, headers included (50..1500; default 1400);
    * ``window``: ``(sndwnd, rcvwnd)`` in segments (0..65535 each, 0 keeps the default of 32;
      any two-item sequence, stored as a tuple);
    * ``ack_nodelay``, ``write_delay``: kcp-go's ``SetACKNoDelay`` / ``SetWriteDelay``;
    * ``idle_timeout``: seconds without any datagram after which the peer is declared dead
      (``TimeoutError``; ``None``: never, as kcp-go);
    * ``rate_limit``: pacing in bytes per second on the wire, headers included (an int >= 0;
      0, the default: off), kcp-go latest's ``SetRateLimit`` (docs/protocol.md §5.9): a token
      bucket with a burst of 64 x 1500 bytes (:class:`~kcpgo.sansio.ratelimit.TokenBucket`);
    * ``fast_retransmit_once``: kcp-go latest's rule that a segment fast- or
      early-retransmitted is not fast-retransmitted again before its RTO fires
      (docs/protocol.md §1.9 phase 5). ``False``, the default, keeps 5.6.1's rule, which
      completed bulk transfers over a lossy link faster in kcpgo's measurement
      (docs/deviations.md D50); either is wire-compatible with both versions;
    * ``snmp``: the :class:`~kcpgo.snmp.Snmp` counters to add to (default: the global one).
    """

    crypt: CryptSpec = None
    key: KeySpec = field(default=None, repr=False)
    data_shards: int = 0
    parity_shards: int = 0
    mode: Optional[str] = None
    stream: bool = False
    mtu: Optional[int] = None
    window: Optional[Tuple[int, int]] = None
    ack_nodelay: bool = False
    write_delay: bool = False
    idle_timeout: Optional[float] = None
    rate_limit: int = 0
    fast_retransmit_once: bool = False
    snmp: Optional[Snmp] = field(default=None, compare=False)
    #: The cipher built from ``crypt``/``key`` (derived once, here).
    block: Optional[BlockCrypt] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        block = _make_crypt(self.crypt, self.key)
        object.__setattr__(self, "block", block)
        ds = _int("data_shards", self.data_shards, 0, None)
        ps = _int("parity_shards", self.parity_shards, 0, None)
        fec = fec_enabled(ds, ps)
        if not fec and (ds or ps):
            # kcp-go's rule (both > 0, or no FEC), but a half-set pair is usually a slip
            warnings.warn(f"FEC is off: data_shards={ds}, parity_shards={ps} (Reed-Solomon "
                          f"FEC needs both > 0, e.g. 10 and 3; set both to 0 to say no FEC)",
                          UserWarning, stacklevel=_callers_level())
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid: {', '.join(MODES)}")
        for name in ("stream", "ack_nodelay", "write_delay", "fast_retransmit_once"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.mtu is not None:
            _int("mtu", self.mtu, MTU_MIN, MTU_LIMIT)
        # the MTU must leave room for data after the cipher and FEC headers
        kcp_mtu_for(self.mtu or MTU_DEFAULT, pipeline_overhead(block, fec))
        w = self.window
        if w is not None:
            if isinstance(w, (str, bytes)) or not hasattr(w, "__len__") or len(w) != 2:
                raise ValueError(f"window must be (sndwnd, rcvwnd) in segments, got {w!r}")
            w = (_int("window[0] (sndwnd)", w[0], 0, MAX_WINDOW),
                 _int("window[1] (rcvwnd)", w[1], 0, MAX_WINDOW))
            object.__setattr__(self, "window", w)      # a list from a JSON config is fine
        t = self.idle_timeout
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or
                              not t > 0):
            raise ValueError(f"idle_timeout must be > 0 seconds or None, got {t!r}")
        _int("rate_limit (bytes/s)", self.rate_limit, 0, None)
        if self.snmp is not None and not isinstance(self.snmp, Snmp):
            raise ValueError(f"snmp must be a kcpgo.Snmp or None, got {self.snmp!r}")

    def __reduce__(self) -> Any:
        # the cipher object holds OpenSSL state: rebuild it from the fields instead
        return (_rebuild, (self.as_dict(),))

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, where: str, options: Optional["Options"] = None,
              **changes: Any) -> "Options":
        """``options`` (or the defaults) with ``changes`` applied. ``TypeError`` names
        ``where`` and the valid fields when a change has an unknown name."""
        unknown = set(changes) - FIELDS
        if unknown:
            raise TypeError(f"{where} got unexpected option(s) {', '.join(sorted(unknown))}; "
                            f"valid: {', '.join(sorted(FIELDS))}")
        if options is None:
            return cls(**changes)
        if not isinstance(options, Options):
            raise TypeError(f"{where}: options must be a kcpgo.Options, not "
                            f"{type(options).__name__}")
        if not changes:
            return options
        if "crypt" in changes and "key" not in changes:
            # a new cipher name keeps the passphrase; a ready BlockCrypt needs none
            changes["key"] = options.key if isinstance(changes["crypt"], str) else None
        return dataclasses.replace(options, **changes)

    def replace(self, **changes: Any) -> "Options":
        """A copy with ``changes`` (validated like the constructor)."""
        return Options.build("Options.replace()", self, **changes)

    @property
    def counters(self) -> Snmp:
        """The counters sessions with these options add to."""
        return self.snmp if self.snmp is not None else DEFAULT_SNMP

    def connection(self, conv: int, **policy: Any) -> Connection:
        """The sans-IO :class:`~kcpgo.sansio.Connection` for conversation ``conv``; ``policy``
        is passed on (``admit_limit``, ``probe_init``). Stream mode, window, ACK and write
        delay and ``fast_retransmit_once`` are applied too; ``idle_timeout`` and
        ``rate_limit`` are the driver's business (``kcpgo.runtime.channel.Channel``)."""
        conn = Connection(conv, crypt=self.block, data_shards=self.data_shards,
                          parity_shards=self.parity_shards, mtu=self.mtu or MTU_DEFAULT,
                          mode=self.mode, snmp=self.counters, stream=self.stream,
                          window=self.window, ack_nodelay=self.ack_nodelay,
                          write_delay=self.write_delay, **policy)
        conn.kcp.fastack_lock = self.fast_retransmit_once
        return conn

    def as_dict(self) -> Dict[str, Any]:
        """The settable fields and their values."""
        return {name: getattr(self, name) for name in FIELDS}


#: The field names accepted as keywords.
FIELDS = frozenset(f.name for f in dataclasses.fields(Options) if f.init)
_dataclass_init = Options.__init__


@functools.wraps(_dataclass_init)
def _checked_init(self: Options, *args: Any, **fields: Any) -> None:
    """The dataclass constructor, whose ``TypeError`` for an unknown keyword also lists the
    valid ones (as ``dial``/``listen`` do)."""
    unknown = set(fields) - FIELDS
    if unknown:
        raise TypeError(f"Options() got unexpected option(s) {', '.join(sorted(unknown))}; "
                        f"valid: {', '.join(sorted(FIELDS))}")
    _dataclass_init(self, *args, **fields)


Options.__init__ = _checked_init        # type: ignore[method-assign]

def _rebuild(fields: Dict[str, Any]) -> Options:
    return Options(**fields)


def _int(name: str, value: Any, lo: int, hi: Optional[int]) -> int:
    """``value`` if it is an int (not a bool) in lo..hi, else ``ValueError`` with the range."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or \
            (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an int in {rng}, got {value!r}")
    return value


def _make_crypt(spec: CryptSpec, key: KeySpec) -> Optional[BlockCrypt]:
    """``crypt`` is a cipher name (with ``key``: a kcptun passphrase str, or the derived key
    bytes) or a ready :class:`BlockCrypt`; ``None`` means no crypto header at all."""
    if spec is None:
        if key is not None:
            raise ValueError("key given without crypt; name a cipher, e.g. crypt='aes'")
        return None
    if isinstance(spec, str):
        _crypt.check_name(spec)
        if key is None:
            if spec.lower() == "none":
                key = b""                   # the "none" cipher has no key (kcptun ignores it)
            else:
                raise ValueError(f"crypt={spec!r} needs a key (a passphrase str or key bytes)")
        if isinstance(key, str):
            key = derive_key(key)
        return _crypt.new(spec, key)
    if not isinstance(spec, BlockCrypt):
        raise TypeError(f"crypt must be a cipher name or a BlockCrypt, not {type(spec).__name__}")
    if key is not None:
        raise ValueError("key is only used with a cipher name, not with a BlockCrypt object")
    return spec


#: kcptun's client defaults (§7) except the cipher, which kcptun also sets (aes) but which
#: needs your key: ``KCPTUN_CLIENT.replace(crypt="aes", key="passphrase")``.
KCPTUN_CLIENT = Options(data_shards=10, parity_shards=3, mode="fast", stream=True, mtu=1350,
                        window=(128, 512))
#: kcptun's server defaults (§7), likewise without the cipher.
KCPTUN_SERVER = KCPTUN_CLIENT.replace(window=(1024, 1024))


def _callers_level() -> int:
    """``stacklevel`` for a warning raised in kcpgo on behalf of the first frame outside it
    (``dial``, ``listen``, ``Options.replace`` and the dataclass machinery skipped)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_globals.get("__name__", "") or "").partition(".")[0] \
            in ("kcpgo", "dataclasses"):
        frame, level = frame.f_back, level + 1
    return level


# ---------------------------------------------------------------------- command lines


def add_arguments(parser: "argparse.ArgumentParser") -> None:
    """The shared session flags: ``--crypt``, ``--key``, ``--fec D/P``, ``--mode``, ``--mtu``,
    ``--window S/R``, ``--stream``, ``--idle-timeout``."""
    g = parser.add_argument_group("KCP session")
    g.add_argument("--crypt", help="cipher: " + ", ".join(_crypt.CIPHER_NAMES) +
                   " (needs --key)")
    g.add_argument("--key", help="kcptun-style passphrase")
    g.add_argument("--fec", metavar="DATA/PARITY", help="Reed-Solomon shards, e.g. 10/3")
    g.add_argument("--mode", choices=sorted(MODES), help="kcptun timing preset")
    g.add_argument("--mtu", type=int, help=f"wire MTU in bytes ({MTU_MIN}..{MTU_LIMIT})")
    g.add_argument("--window", metavar="SND/RCV", help="windows in segments, e.g. 1024/1024")
    g.add_argument("--stream", action="store_true", default=None, help="stream mode")
    g.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                   help="declare the peer dead after this long without a datagram")


def _pair(text: str, flag: str) -> Tuple[int, int]:
    a, sep, b = text.partition("/")
    try:
        if not sep:
            raise ValueError
        return int(a), int(b)
    except ValueError:
        raise ValueError(f"{flag} takes two numbers as A/B (e.g. 10/3), got {text!r}") from None


def from_arguments(ns: "argparse.Namespace") -> Dict[str, Any]:
    """The :class:`Options` keywords given by :func:`add_arguments` flags (only those set).
    Raises ``ValueError`` with a usage message for a malformed value."""
    opts: Dict[str, Any] = {}
    if ns.crypt is not None or ns.key is not None:
        opts.update(crypt=ns.crypt, key=ns.key)
    if ns.fec:
        opts["data_shards"], opts["parity_shards"] = _pair(ns.fec, "--fec")
    if ns.window:
        opts["window"] = _pair(ns.window, "--window")
    for name in ("mode", "mtu", "stream", "idle_timeout"):
        value = getattr(ns, name, None)
        if value is not None:
            opts[name] = value
    Options(**opts)                          # validate now: ValueError with the valid range
    return opts

