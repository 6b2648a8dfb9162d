"""Why a session failed, or never heard its peer, in words a user can act on (docs/deviations.md
D33, D47, D62): the texts of :class:`kcpgo.runtime.channel.Channel`'s errors."""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..address import format_address

if TYPE_CHECKING:
    from .channel import Channel

__all__ = ["peer_failure", "unheard"]


def peer_failure(chan: "Channel", now: int) -> ConnectionResetError:
    """The error of a session whose peer restarted (D62) or stopped acknowledging (dead link,
    D47), with D33's diagnosis while the peer was never heard."""
    conn = chan.conn
    if conn.peer_restarted:
        return ConnectionResetError(
            errno.ECONNRESET, "the peer's KCP session restarted: it acknowledges our data "
            "from sn 0 again (a restarted server, or one that closed this session and made a "
            "new one for this address)")
    what = (f"its closed receive window was probed {conn.dead_link} times without an "
            f"answer" if conn.probes_unanswered >= conn.dead_link else
            f"a segment was sent {conn.dead_link} times")
    return ConnectionResetError(errno.ECONNRESET, f"peer stopped acknowledging ({what})"
                                + chan.unheard_suffix(now, failing=True))


def unheard(chan: "Channel", now: int, failing: bool) -> str:
    """Why nothing valid may have come from ``chan``'s peer yet, with the counters that say
    what did arrive (D33). Cheap to keep: the counts are taken on the failure paths only."""
    codec = chan.conn.codec
    csum, bad, other = codec.csum_errors, codec.input_errors, chan.foreign
    text = (f"no valid datagram received from {format_address(chan.peer)} in "
            f"{(now - chan.opened) / 1000:.1f} s")
    facts = []
    if csum:
        facts.append(f"{csum} datagram{'s' * (csum != 1)} from it failed the "
                     f"checksum/authentication (InCsumErrors)")
    if bad:
        facts.append(f"{bad} from it {'were' if bad != 1 else 'was'} not KCP for conv "
                     f"{chan.conv:#x} (KCPInErrors)")
    if other:
        facts.append(f"{other} came from other addresses and {'were' if other != 1 else 'was'}"
                     f" dropped (InErrs)")
    icmp = chan.endpoint.icmp
    unreachable = icmp.about(chan.peer) if icmp is not None else ""
    if unreachable:
        facts.append(unreachable)
    if facts:
        text += "; " + ", ".join(facts)
    if csum or bad:
        return text + ": check that key/crypt/FEC settings match the peer's"
    if unreachable:
        return text + (": check the address and port, and that the peer is running" + (
            "" if failing else " (the session keeps sending: a server that starts later "
                               "is reached)"))
    if other:
        return text + (": the peer may answer from another address (a multi-homed server: "
                       "dial the address it replies from, or make it listen on that one)")
    if not chan.conn.waitsnd:
        return text + (" (nothing was sent yet: KCP has no handshake, a peer hears of a "
                       "session from its first data)")
    return text + (": nothing came back; check the address and port, that the peer is "
                   "running, and that key/crypt/FEC settings match (a kcp-go or kcpgo "
                   "server drops datagrams it cannot decrypt without answering)")
