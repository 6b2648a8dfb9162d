"""Addresses: the one parser and validator behind every kcpgo entry point and command line.

:func:`parse_address` accepts what a Python socket takes and what kcp-go takes:

* a tuple ``(host, port)``, or ``(host, port, flowinfo, scope_id)`` for IPv6, as
  ``socket.sendto``/``bind`` take them (hosts without brackets);
* a string in kcp-go's (Go's ``net.ResolveUDPAddr``) form ``"host:port"``, with IPv6 hosts in
  brackets: ``"127.0.0.1:9000"``, ``"[::1]:9000"``, ``"example.com:9000"``; ``":9000"`` (an
  empty host) is the wildcard, for listening only.

Ports must be ints in 0..65535 (1..65535 to send to). Anything else raises ``TypeError`` (wrong
type) or ``ValueError`` (wrong value) naming the forms above, instead of what a socket would do
with it (``"127.0.0.1:9000"`` taken as a sequence sends to ``('0.0.0.1', 2)``; port 70000
wraps to 4464). Host names are not resolved here.

The wildcard hosts ``""`` and ``"::"`` mean every address of both families when the system
allows an IPv6 socket to take IPv4 too (``IPV6_V6ONLY=0``, as
``socket.create_server(..., dualstack_ipv6=True)``), which is what kcp-go's ``":port"`` means;
``"0.0.0.0"`` stays IPv4 only. :func:`bind_plan` makes that choice.

Only the standard library is used, so every layer and tool may import this module.
"""
from __future__ import annotations

import socket as _socket
from functools import lru_cache
from typing import Any, Tuple, Union

__all__ = ["Address", "AddressSpec", "parse_address", "parse_port", "format_address", "bind_plan",
           "is_wildcard", "dualstack_available", "WILDCARDS", "DUALSTACK_WILDCARDS",
           "ADDRESS_FORMS"]

#: A socket address: ``(host, port)`` or ``(host, port, flowinfo, scope_id)``.
Address = Tuple[Any, ...]
#: What callers may pass: a socket address tuple or kcp-go's ``"host:port"`` string.
AddressSpec = Union[str, Tuple[Any, ...]]

#: Hosts that mean "every local address" when listening.
WILDCARDS = ("", "0.0.0.0", "::")
#: Wildcard hosts served on both families where the system allows it (kcp-go's ``":port"``).
DUALSTACK_WILDCARDS = ("", "::")
#: The accepted forms, for error messages.
ADDRESS_FORMS = "(host, port), 'host:port' or '[ipv6]:port'"

_FLOWINFO_MAX = (1 << 20) - 1
_U32_MAX = (1 << 32) - 1


def parse_port(value: Any, where: str = "port", *, passive: bool = True) -> int:
    """``value`` as a port: an int (not a bool) in 0..65535, or 1..65535 unless ``passive``
    (0 asks the system for a free port when binding, and is no destination).

    Raises ``TypeError`` for a non-int, ``ValueError`` for one out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: the port must be an int, got {type(value).__name__} "
                        f"{value!r}")
    lo = 0 if passive else 1
    if not lo <= value <= 65535:
        raise ValueError(f"{where}: port {value} is out of range {lo}..65535")
    return value


def parse_address(address: Union[AddressSpec, int], where: str = "address", *,
                  passive: bool = False, port_only: bool = False) -> Address:
    """Validate ``address`` and return it as a socket address tuple.

    ``address`` is a tuple ``(host, port)`` / ``(host, port, flowinfo, scope_id)`` or a string
    ``"host:port"`` / ``"[ipv6]:port"`` (kcp-go's form). ``passive`` (listening, binding):
    an empty host is the wildcard (``":9000"``, ``("", 9000)``) and port 0 is allowed; otherwise
    (dialing) a host and a port in 1..65535 are required. ``port_only``: a bare port (an int or
    a string of digits) is accepted too and returned as ``("", port)``.

    Returns ``(host, port)`` or ``(host, port, flowinfo, scope_id)``; the host is a ``str``
    without brackets, not resolved. Raises ``TypeError`` for a value of the wrong type (a
    list, bytes, a ``str`` port in a tuple) and ``ValueError`` for a malformed string, an
    IPv6 host without brackets, an out-of-range port or a missing host; ``where`` starts the
    message.
    """
    forms = ADDRESS_FORMS + (" or a port" if port_only else "")
    if isinstance(address, str):
        return _parse_text(address, where, forms, passive, port_only)
    if port_only and isinstance(address, int) and not isinstance(address, bool):
        return ("", parse_port(address, where, passive=True))
    if not isinstance(address, tuple):
        raise TypeError(f"{where}: expected {forms}, got {type(address).__name__} {address!r}")
    if len(address) not in (2, 4):
        raise ValueError(f"{where}: expected {forms} (or (host, port, flowinfo, scope_id) for "
                         f"IPv6), got a {len(address)}-tuple {address!r}")
    host = address[0]
    if not isinstance(host, str):
        raise TypeError(f"{where}: the host must be a str, got {type(host).__name__} "
                        f"{host!r}; expected {forms}")
    if host.startswith("["):
        raise ValueError(f"{where}: write the IPv6 host without brackets in a tuple, "
                         f"e.g. ('::1', 9000), got {address!r}")
    _check_host(host, where, address, forms, passive)
    port = parse_port(address[1], where, passive=passive)
    if len(address) == 2:
        return (host, port)
    flow, scope = address[2], address[3]
    for name, value, hi in (("flowinfo", flow, _FLOWINFO_MAX), ("scope_id", scope, _U32_MAX)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
            raise ValueError(f"{where}: {name} must be an int in 0..{hi}, got {value!r}")
    return (host, port, flow, scope)


def _parse_text(text: str, where: str, forms: str, passive: bool, port_only: bool) -> Address:
    scheme, sep, rest = text.partition("://")
    if sep:
        raise ValueError(f"{where}: a scheme ({scheme + sep!r}) is not accepted: KCP runs over "
                         f"UDP, write {rest!r} ({forms}), got {text!r}")
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1:] if end > 0 else ""
        if end < 0 or not rest.startswith(":") or ":" not in host:
            raise ValueError(f"{where}: expected '[ipv6]:port' (e.g. '[::1]:9000'), got "
                             f"{text!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            if port_only and port_text.isdigit():
                return ("", _port_text(port_text, where, text, forms, True))
            hint = ""
            if port_text.isascii() and port_text.isdigit():     # a port without a host
                hint = (f"; to listen on port {port_text} of every address write "
                        f"':{port_text}'" if passive else
                        f"; a port alone has no host to send to: write 'host:{port_text}'")
            raise ValueError(f"{where}: expected {forms}, got {text!r}{hint}")
        if ":" in host:
            raise ValueError(f"{where}: write an IPv6 host in brackets, e.g. '[::1]:9000', "
                             f"got {text!r}")
    _check_host(host, where, text, forms, passive)
    return (host, _port_text(port_text, where, text, forms, passive))


def _port_text(port: str, where: str, text: str, forms: str, passive: bool) -> int:
    if port.startswith("-") and port[1:].isascii() and port[1:].isdigit():
        lo = 0 if passive else 1
        raise ValueError(f"{where}: port {port} of {text!r} is out of range {lo}..65535")
    if not (port.isascii() and port.isdigit()):
        raise ValueError(f"{where}: the port of {text!r} must be a number; expected {forms}")
    return parse_port(int(port), where, passive=passive)


def _check_host(host: str, where: str, given: Any, forms: str, passive: bool) -> None:
    if not host and not passive:
        raise ValueError(f"{where}: a host is needed to send to, got {given!r}; expected "
                         f"{forms}")
    if host != host.strip() or "\0" in host:
        raise ValueError(f"{where}: malformed host {host!r} in {given!r}")


def format_address(address: Address) -> str:
    """``"host:port"``, or ``"[ipv6]:port"`` for an IPv6 host: the form :func:`parse_address`
    (and kcp-go) read back. Anything else (for messages) as ``str()``."""
    try:
        host, port = address[0], address[1]
    except (TypeError, IndexError, KeyError):
        return str(address)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def is_wildcard(host: str) -> bool:
    """True for a host that binds every local address (``""``, ``"0.0.0.0"``, ``"::"``)."""
    return host in WILDCARDS


@lru_cache(maxsize=None)
def dualstack_available() -> bool:
    """Whether an IPv6 socket here can also serve IPv4 (``socket.has_dualstack_ipv6()``,
    asked once)."""
    try:
        return _socket.has_dualstack_ipv6()
    except Exception:  # pragma: no cover - platforms without IPv6 at all
        return False


def bind_plan(address: AddressSpec, where: str = "listen()") -> Tuple[int, Address, bool]:
    """How to bind a listening UDP socket for ``address``: ``(family, sockaddr, dualstack)``.

    ``""`` and ``"::"`` give ``(AF_INET6, ("::", port), True)`` where the system supports
    dual-stack sockets (then set ``IPV6_V6ONLY`` to 0 before binding), else ``""`` binds
    ``0.0.0.0`` and ``"::"`` IPv6 only. An IPv6 literal gives ``AF_INET6``; anything else
    (IPv4 literals, host names) ``AF_INET``, as a Python socket would. Validates like
    :func:`parse_address` with ``passive=True``.
    """
    addr = parse_address(address, where, passive=True)
    host = addr[0]
    if host in DUALSTACK_WILDCARDS and dualstack_available():
        return _socket.AF_INET6, ("::",) + addr[1:], True
    if host == "":
        if len(addr) == 4:
            return _socket.AF_INET6, ("::",) + addr[1:], False
        return _socket.AF_INET, ("0.0.0.0", addr[1]), False
    family = _socket.AF_INET6 if ":" in host or len(addr) == 4 else _socket.AF_INET
    return family, addr, False
