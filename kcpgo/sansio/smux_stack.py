"""What kcptun runs inside one KCP session: smux, optionally over snappy framing (sans-IO).

docs/kcptun.md §2: the KCP byte stream carries a snappy framed stream (kcptun's default) whose
decoded bytes are smux frames, or the smux frames themselves (``--nocomp``). This module puts
:class:`~kcpgo.sansio.smux.SmuxSession` and the snappy codec together, pure as both: KCP stream
bytes and an explicit ``now`` (ms) in, events and KCP writes out.

* :meth:`SmuxStack.receive` takes whatever KCP's ``recv`` returned (any split);
* :meth:`SmuxStack.writes` gives the KCP writes, one per smux frame: the frame itself, or its
  one snappy chunk (kcptun.md §3.2), so that every write fills KCP segments as one unit;
* everything else (streams, bucket, keepalive) is the :attr:`SmuxStack.smux` session's.

Framing may be left to the peer (``version=None`` and/or ``compression=None``, server role):
the first bytes decide (kcptun.md §3.3, as :mod:`kcpgo.sansio.kcptun_detect` describes, read
incrementally here); beyond kcptun.
With a fixed framing, a peer whose first bytes show another one fails the session at once with
an error naming both sides' kcptun flags (kcptun.md §4.9: kcptun itself only says "invalid
protocol", and its client hears nothing).
"""
from __future__ import annotations

from typing import Any, List, Optional

from ..codec.snappy import (MAX_CHUNK, STREAM_IDENTIFIER, SnappyDecoder, SnappyEncoder,
                            SnappyFramingError)
from .kcptun_detect import Framing, describe
from .smux import SessionError, SmuxSession
from .smux_frames import VERSIONS, SmuxProtocolError

__all__ = ["SmuxStack", "FramingMismatch"]

#: Bytes of a peer's stream kept while its framing is undecided: the stream identifier and the
#: longest legal first chunk (kcptun.md §3.1; a SYN or NOP takes about 30 bytes, but a server's
#: first frame may be a PSH of up to 64 KiB whose chunk arrives in KCP segments). More that
#: decides nothing is not kcptun.
_DETECT_LIMIT = len(STREAM_IDENTIFIER) + MAX_CHUNK


class FramingMismatch(SmuxProtocolError):
    """The peer's first bytes show a framing (compression, smux version) other than the one
    configured, or none at all (kcptun.md §3.3, 4.9). ``peer``: the detected
    :class:`~kcpgo.sansio.kcptun_detect.Framing`, ``None`` if unrecognisable."""

    def __init__(self, message: str, peer: Optional[Framing]) -> None:
        super().__init__(message, "framing")
        self.peer = peer


class SmuxStack:
    """smux over optional snappy over a KCP byte stream, either role (docs/kcptun.md §2).

    ``version``: smux version 1 or 2, ``None`` to follow the peer; ``compression``: snappy
    framing on/off, ``None`` to follow the peer. Undecided framing is for the accepting role
    only (``client=False``): the opener must speak first. ``smux_options`` go to
    :class:`SmuxSession` (``max_frame_size``, ``max_receive_buffer``, ``max_stream_buffer``,
    ``keepalive_interval``, ``keepalive_timeout`` in ms, ``may_open``). ``ValueError`` for a
    bad configuration.
    """

    def __init__(self, version: Optional[int] = 1, compression: Optional[bool] = False, *,
                 client: bool = True, now: int = 0, **smux_options: Any) -> None:
        if client and (version is None or compression is None):
            raise ValueError("a client must choose its smux version and compression (only an "
                             "accepting side can follow the peer's first bytes)")
        if version not in (None, 1, 2):
            raise ValueError(f"smux version {version!r}: must be 1, 2 or None (auto)")
        self.client = client
        self.configured = (compression, version)
        self._options = dict(smux_options, client=client)
        SmuxSession(version or 1, **self._options)      # check the options now, not later
        self._first: Optional[int] = None     # the peer's first byte
        self._probe: Optional[SnappyDecoder] = None     # decodes a snappy peer's first chunk
        self._probed = False                  # ... and became the decoder
        self._probe_failure: Optional[SnappyFramingError] = None
        self._ident = b""                     # the stream identifier bytes seen so far
        self._seen = 0                        # bytes fed while undecided
        #: The smux session once the framing is known (at once unless something is ``None``).
        self.smux: Optional[SmuxSession] = None
        #: The framing in use; ``None`` while it is still to be detected.
        self.framing: Optional[Framing] = None
        self._encoder: Optional[SnappyEncoder] = None
        self._decoder: Optional[SnappyDecoder] = None
        self._verified = False      # the peer's first bytes were checked against the framing
        self.error: Optional[SmuxProtocolError] = None
        if version is not None and compression is not None:
            self._start(Framing(compression, version), now)

    def _start(self, framing: Framing, now: int) -> None:
        self.framing = framing
        self.smux = SmuxSession(framing.smux_version, now=now, **self._options)
        if framing.compression:
            self._encoder, self._decoder = SnappyEncoder(), SnappyDecoder()

    # ------------------------------------------------------------------ input

    def receive(self, data: bytes, now: int) -> List[Any]:
        """The smux events (``kcpgo.sansio.smux``) for a piece of the peer's KCP stream. A
        framing mismatch, a snappy error or a smux protocol error ends the list with
        :class:`~kcpgo.sansio.smux.SessionError` (the session is then dead)."""
        if self.error is not None or not data:
            return []
        if not self._verified:
            decided = self._verify(data, now)
            if decided is None or self.error is not None:
                return [] if decided is None else decided
            if self._probed:                            # the probe decoded the first chunk(s)
                smux = self.smux
                assert smux is not None
                return smux.receive(decided[0], now) + self._probe_error(now)
            # decided on a bare smux version byte: ``data`` goes through as it is
        smux = self.smux
        assert smux is not None
        decoder = self._decoder
        if decoder is not None:
            try:
                data = decoder.feed(data)
            except SnappyFramingError as e:
                events = smux.receive(e.decoded, now) if e.decoded else []
                if smux.closed:
                    return events
                return events + self._fail(SmuxProtocolError(
                    f"bad snappy framing from the peer ({e.go_error}): {e}", "snappy"))
            if not data:
                return []
        return smux.receive(data, now)

    def _verify(self, data: bytes, now: int) -> Optional[List[Any]]:
        """Check the peer's first bytes (kcptun.md §3.3, 4.9), incrementally: each byte is
        looked at once, so a peer that dribbles its first chunk costs linear time. Returns
        ``None`` while undecided; ``[decoded]`` (a one-item list) when a snappy probe decided
        and decoded the first chunk(s); ``[]`` when decided on a bare smux version byte (the
        caller goes on with ``data``); or the failure events."""
        if self._first is None:
            self._first = first = data[0]
            if first in VERSIONS:
                return self._decided(Framing(False, first), now) or []
            if first != STREAM_IDENTIFIER[0]:
                hint = ("it looks like plain data (ASCII): is smux on at one end only?"
                        if 0x20 <= first < 0x7F or first in (9, 10, 13) else
                        "check key/crypt, or whether the peer runs smux at all")
                return self._fail(FramingMismatch(
                    f"the peer is not speaking kcptun's smux: its first byte {first:#04x} is "
                    f"neither snappy (0xff) nor a smux version (0x01, 0x02); {hint}"
                    f"{self._expected()}", None))
            self._probe = SnappyDecoder()
        probe = self._probe
        assert probe is not None
        have = len(self._ident)
        if have < len(STREAM_IDENTIFIER):
            self._ident += bytes(data[:len(STREAM_IDENTIFIER) - have])
            if not STREAM_IDENTIFIER.startswith(self._ident):
                return self._fail(FramingMismatch(
                    "the peer's stream starts like snappy (0xff) but not with its stream "
                    f"identifier{self._expected()}", None))
        self._seen += len(data)
        try:
            decoded = probe.feed(data)
        except SnappyFramingError as e:
            decoded = e.decoded
            self._probe_failure = e
            if not decoded:
                return self._fail(FramingMismatch(
                    f"snappy stream whose first chunk is bad: {e}{self._expected()}", None))
        if not decoded:
            if self._seen > _DETECT_LIMIT:
                return self._fail(FramingMismatch(
                    f"no smux frame in the peer's first {self._seen} bytes", None))
            return None
        if decoded[0] not in VERSIONS:
            return self._fail(FramingMismatch(
                f"snappy stream whose first byte {decoded[0]:#04x} is not a smux version "
                f"(0x01, 0x02){self._expected()}", None))
        failed = self._decided(Framing(True, decoded[0]), now)
        if failed:
            return failed
        self._decoder = probe                   # it has consumed the bytes so far
        self._probed = True
        return [decoded]

    def _decided(self, peer: Framing, now: int) -> Optional[List[Any]]:
        """The peer's framing is known: check it against ours, start the session if it
        waited for this. Returns the failure events on a mismatch."""
        self._verified = True
        self._probe = None
        mismatch = self._mismatch(peer)
        if mismatch:
            return self._fail(FramingMismatch(mismatch, peer))
        if self.smux is None:
            self._start(peer, now)
        return None

    def _probe_error(self, now: int) -> List[Any]:
        """The snappy error met in the same piece as the first good chunk (sticky in the
        decoder, so it was raised once, in :meth:`_verify`)."""
        e = self._probe_failure
        if e is None or self.error is not None:
            return []
        return self._fail(SmuxProtocolError(
            f"bad snappy framing from the peer ({e.go_error}): {e}", "snappy"))

    def _expected(self) -> str:
        compression, version = self.configured
        if compression is None or version is None:
            return ""
        return f"; this side expects {describe(Framing(compression, version))}"

    def _mismatch(self, peer: Framing) -> str:
        compression, version = self.configured
        if (compression is None or compression == peer.compression) and (
                version is None or version == peer.smux_version):
            return ""
        ours = Framing(peer.compression if compression is None else compression,
                       peer.smux_version if version is None else version)
        return (f"framing mismatch: the peer speaks kcptun's {describe(peer)}, this side "
                f"{describe(ours)} (kcptun negotiates nothing: set smux_version/compression, "
                f"or --smuxver/--nocomp, to match)")

    def _fail(self, err: SmuxProtocolError) -> List[Any]:
        self.error = err
        if self.smux is None:
            self.smux = SmuxSession(1, **self._options)
        self.smux.close()
        self.smux.error = err
        self._probe = None
        return [SessionError(err)]

    # ------------------------------------------------------------------ output

    def writes(self) -> List[bytes]:
        """The KCP writes due: one per queued smux frame, snappy-encoded when compression is
        on (kcptun.md §3.2: the first one starts with the stream identifier). Drains the
        session's queue; ``[]`` while the framing is undecided."""
        smux = self.smux
        if smux is None or not smux.pending:
            return []
        frames = smux.data_to_send()
        enc = self._encoder
        if enc is None:
            return frames
        return [enc.encode(f) for f in frames]

    @property
    def receive_paused(self) -> bool:
        """Stop reading KCP (the session bucket is exhausted, kcptun.md §4.7)."""
        smux = self.smux
        return smux is not None and smux.receive_paused

    def next_deadline(self, now: int) -> Optional[int]:
        """When :meth:`timer` must run (ms); ``None``: not before the next input."""
        smux = self.smux
        return None if smux is None or self.error is not None else smux.next_deadline(now)

    def timer(self, now: int) -> List[Any]:
        """Keepalive work at ``now`` (kcptun.md §4.6): may return ``[SessionError]``."""
        smux = self.smux
        return [] if smux is None or self.error is not None else smux.timer(now)

    @property
    def first_byte(self) -> Optional[int]:
        """The peer's first byte, for messages when a session dies early (kcptun.md §11)."""
        return self._first

    def describe(self) -> str:
        """The framing as kcptun flags (``"--smuxver 1"``, ``"... --nocomp"``), or
        ``"auto"`` while undecided."""
        return "auto" if self.framing is None else describe(self.framing)
