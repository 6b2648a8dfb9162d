"""Tunnels as child processes: Debian's kcptun 20210922 (``kcptun-client``, ``kcptun-server``)
and our own (``python -m kcpgo tunnel``), plus plain TCP targets for them.

Used by ``python -m kcpgo bench tunnel`` (:mod:`kcpgo.cli.bench_tunnel`) and kcpgo's tunnel
tests (``tests/support/kcptun.py`` re-exports it). Stdlib and gevent's ``get_original``: the
TCP targets and clients run in OS threads on the unpatched ``socket`` class, so they work
beside a gevent hub in the same process and whatever ``gevent.monkey`` did.

* :func:`kcptun_available` -> ``(ok, reason)`` for ``pytest.mark.skipif`` (or a benchmark that
  skips kcptun's contenders);
* :class:`TunnelProcess`: one end of a tunnel, kcptun's or ours, started with kcptun's flag
  names (docs/kcptun.md §5.5); ``start()`` waits until it listens and knows its address;
* :class:`EchoServer`, :class:`SinkServer`: threaded TCP targets (echo every byte back; read
  to EOF and count/hash);
* :func:`payload`: deterministic pseudo-random bytes (incompressible, so snappy sends them in
  uncompressed chunks, kcptun.md §3.2).
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import signal
import socket as _socket_mod
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

from gevent.monkey import get_original

__all__ = ["Address", "TunnelProcess", "EchoServer", "SinkServer", "kcptun_available",
           "tunnel_cli_available", "free_port", "hostport", "parse_hostport", "payload",
           "echo_exchange", "KCPTUN_CLIENT", "KCPTUN_SERVER", "INSTALL_HINT", "DEFAULT_KEY"]

_RealSocket = get_original("socket", "socket")

#: The directory that holds this ``kcpgo`` package: our tunnel processes run this very kcpgo
#: (their working directory, and ``PYTHONPATH``).
ROOT = Path(__file__).resolve().parents[2]
KCPTUN_CLIENT = "kcptun-client"
KCPTUN_SERVER = "kcptun-server"
INSTALL_HINT = "apt-get install kcptun (Debian's kcptun 20210922: kcptun-client, kcptun-server)"
#: kcptun's default passphrase (docs/kcptun.md §5.1, sic).
DEFAULT_KEY = "it's a secrect"
#: kcptun-client logs ``listening on: 127.0.0.1:40251`` (its real port, also for port 0).
_LISTENING = re.compile(r"listening on:\s*(\S+)")

Address = Tuple[str, int]


def kcptun_available() -> Tuple[bool, str]:
    """``(True, "")`` if both kcptun binaries are on ``PATH``, else ``(False, reason)``."""
    missing = [b for b in (KCPTUN_CLIENT, KCPTUN_SERVER) if shutil.which(b) is None]
    if missing:
        return False, f"{', '.join(missing)} not found: {INSTALL_HINT}"
    return True, ""


def tunnel_cli_available() -> Tuple[bool, str]:
    """``(True, "")`` if this kcpgo has ``python -m kcpgo tunnel`` (kcpgo/cli/tunnel.py)."""
    if not (ROOT / "kcpgo" / "cli" / "tunnel.py").is_file():
        return False, "kcpgo/cli/tunnel.py (python -m kcpgo tunnel) is not in this kcpgo"
    return True, ""


def free_port(kind: int = _socket_mod.SOCK_DGRAM) -> int:
    """A port the kernel just handed out on 127.0.0.1 (UDP by default), released again: a
    child binds it a moment later (kcptun-server does not report the port of ``:0``)."""
    s = _RealSocket(_socket_mod.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def hostport(addr: Address) -> str:
    """``"host:port"`` of ``addr``."""
    return f"{addr[0]}:{addr[1]}"


def parse_hostport(text: str) -> Address:
    """``(host, port)`` of a logged ``host:port`` (a wildcard host means 127.0.0.1)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if host in ("::", "0.0.0.0"):
        host = "127.0.0.1"
    return host, int(port)


def payload(n: int, seed: int) -> bytes:
    """``n`` deterministic pseudo-random bytes for ``seed`` (incompressible)."""
    return random.Random(seed).randbytes(n)


def _udp_bound(port: int) -> bool:
    """Whether some socket has UDP ``port`` bound (Linux ``/proc/net/udp*``; ``True``
    elsewhere). kcptun-server logs its settings before it derives the key and binds, and a
    datagram sent before the bind would earn an ICMP error."""
    want = f":{port:04X}"
    seen = False
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        seen = True
        if any(line.split()[1].endswith(want) for line in lines if len(line.split()) > 1):
            return True
    return not seen


# --------------------------------------------------------------------------- processes


class TunnelProcess:
    """One tunnel end as a child process.

    ``impl`` is ``"kcptun"`` (Debian's binaries) or ``"kcpgo"`` (``python -m kcpgo tunnel``);
    ``role`` ``"client"`` (TCP listen ``-l``, KCP ``-r``) or ``"server"`` (UDP listen ``-l``,
    TCP target ``-t``); ``flags``: further kcptun flags (docs/kcptun.md §5.5), e.g.
    ``["--crypt", "aes", "--mode", "fast3", "--nocomp", "--smuxver", "2"]``.

    ``start()`` binds a client to a free TCP port (``-l 127.0.0.1:0``, reading the address it
    logs) and a server to a free UDP port, and returns once the process listens; it raises
    ``RuntimeError`` with the process's output if it exits or stays silent within
    ``timeout`` seconds. ``address`` is then the ``(host, port)`` to connect/dial to.
    Output (stdout and stderr) goes to a temporary file: :meth:`output`.
    """

    def __init__(self, impl: str, role: str, peer: Address, flags: Optional[List[str]] = None,
                 env: Optional[dict] = None, python: Optional[List[str]] = None) -> None:
        if impl not in ("kcptun", "kcpgo") or role not in ("client", "server"):
            raise ValueError(f"impl kcptun|kcpgo and role client|server, got {impl} {role}")
        self.impl, self.role, self.peer = impl, role, peer
        self.flags = list(flags or [])
        self.env = env
        #: how our CLI's interpreter is started (e.g. under ``-m cProfile -o FILE``)
        self.python = list(python or [sys.executable])
        self.proc: Optional[subprocess.Popen] = None
        self.address: Optional[Address] = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"{impl}-{role}-", suffix=".log",
                                                delete=False)

    def argv(self, listen: str) -> List[str]:
        """The command line that starts this end listening on ``listen`` (``host:port``)."""
        other = "-r" if self.role == "client" else "-t"
        if self.impl == "kcptun":
            exe = KCPTUN_CLIENT if self.role == "client" else KCPTUN_SERVER
            head = [exe]
        else:
            head = self.python + ["-m", "kcpgo", "tunnel", self.role]
        return head + ["-l", listen, other, hostport(self.peer)] + self.flags

    def start(self, timeout: float = 15.0, port: int = 0) -> "TunnelProcess":
        # kcptun-server does not report the port of ":0", so it gets a free one; our CLI and
        # kcptun-client listen on port 0 and report the address. ``port``: a server's UDP
        # port (a server restarted on its port).
        if port and self.role != "server":
            raise ValueError("port= is for a server's UDP port")
        udp_port = port or (free_port() if (self.role, self.impl) == ("server", "kcptun")
                            else 0)
        listen = f"127.0.0.1:{udp_port}"
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.update(self.env or {})
        self.proc = subprocess.Popen(self.argv(listen), stdout=self._log, stderr=self._log,
                                     stdin=subprocess.DEVNULL, cwd=str(ROOT), env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.impl} {self.role} exited with {self.proc.returncode}:"
                                   f"\n{self.output()}")
            addr = self._listening()
            if addr is not None and (not udp_port or _udp_bound(udp_port)):
                self.address = ("127.0.0.1", udp_port) if udp_port else addr
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.impl} {self.role} did not report its address within "
                           f"{timeout} s:\n{self.output()}")

    def _listening(self) -> Optional[Address]:
        text = self.output()
        for line in text.splitlines():
            if line.startswith("LISTENING "):          # our CLI (kcpgo/cli)
                return parse_hostport(line.split()[1])
            m = _LISTENING.search(line)                 # kcptun's log
            if m:
                return parse_hostport(m.group(1))
        return None

    def output(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        try:
            return Path(self._log.name).read_text(errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> Optional[float]:
        """User + system CPU seconds of the running process (``/proc``), or ``None``."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError, AssertionError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate (then kill) the process; idempotent. The log file is removed."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGCONT)     # a stopped process ignores SIGTERM
                proc.terminate()
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def close(self) -> None:
        self.stop()
        self._log.close()
        try:
            os.unlink(self._log.name)
        except OSError:
            pass

    def __enter__(self) -> "TunnelProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- TCP targets


class _TCPServer:
    """A threaded TCP server on 127.0.0.1 (port 0) calling ``handle(conn)`` per connection."""

    def __init__(self) -> None:
        self.sock = _RealSocket(_socket_mod.AF_INET, _socket_mod.SOCK_STREAM)
        self.sock.setsockopt(_socket_mod.SOL_SOCKET, _socket_mod.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.address: Address = self.sock.getsockname()
        self.connections = 0
        self.errors: List[str] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: Any) -> None:
        try:
            with conn:
                conn.setsockopt(_socket_mod.IPPROTO_TCP, _socket_mod.TCP_NODELAY, 1)
                self.handle(conn)
        except OSError as e:
            with self._lock:
                self.errors.append(repr(e))

    def handle(self, conn: Any) -> None:        # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True
        try:
            self.sock.shutdown(_socket_mod.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> "_TCPServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class EchoServer(_TCPServer):
    """Echoes every byte back until the client's EOF, then closes. ``received`` gets
    ``(bytes, sha256 hex)`` of what each connection brought (appended at its EOF), so a test
    checks the upload on its own, not only through the echo."""

    def __init__(self) -> None:
        self.received: List[Tuple[int, str]] = []
        super().__init__()

    def handle(self, conn: Any) -> None:
        h = hashlib.sha256()
        n = 0
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                h.update(data)
                n += len(data)
                conn.sendall(data)
        finally:
            with self._lock:
                self.received.append((n, h.hexdigest()))


class SinkServer(_TCPServer):
    """Reads every connection to EOF; ``bytes`` counts as they come; ``results`` gets
    ``(bytes, sha256 hex, first, last)``
    per connection (``first``/``last``: ``time.monotonic()`` of its first and last byte), and
    ``on_done`` (if set) is called with that tuple."""

    def __init__(self, on_done: Optional[Callable[[tuple], None]] = None) -> None:
        self.results: List[tuple] = []
        self.on_done = on_done
        #: bytes received so far, all connections (updated as they arrive)
        self.bytes = 0
        super().__init__()

    def handle(self, conn: Any) -> None:
        h = hashlib.sha256()
        n = 0
        first = last = None
        buf = bytearray(1 << 18)
        view = memoryview(buf)
        while True:
            k = conn.recv_into(buf)
            if not k:
                break
            last = time.monotonic()
            if first is None:
                first = last
            h.update(view[:k])
            n += k
            self.bytes += k
        result = (n, h.hexdigest(), first, last)
        with self._lock:
            self.results.append(result)
        if self.on_done is not None:
            self.on_done(result)


# --------------------------------------------------------------------------- TCP clients


def echo_exchange(address: Address, data: bytes, timeout: float = 60.0,
                  chunk: int = 65536) -> bytes:
    """Connect to ``address``, send ``data`` (from a second thread) while reading the echo,
    return what came back once ``len(data)`` bytes did (or EOF), then close. Blocking, real
    sockets: from a gevent program call it through ``gevent.get_hub().threadpool``.

    No half-close: a kcptun end closes the whole tunnelled connection at the first FIN
    (docs/kcptun.md §5.3), so the echo is read completely first."""
    sock = _real_connect(address, timeout)
    errors: List[BaseException] = []

    def send() -> None:
        try:
            view = memoryview(data)
            for off in range(0, len(view), chunk):
                sock.sendall(view[off:off + chunk])
        except OSError as e:        # the reader reports the short echo
            errors.append(e)

    with sock:
        sock.setsockopt(_socket_mod.IPPROTO_TCP, _socket_mod.TCP_NODELAY, 1)
        t = threading.Thread(target=send, daemon=True)
        t.start()
        got = bytearray()
        while len(got) < len(data):
            piece = sock.recv(1 << 18)
            if not piece:
                break
            got += piece
        t.join(timeout)
    return bytes(got)


def _real_connect(address: Address, timeout: float) -> Any:
    s = _RealSocket(_socket_mod.AF_INET, _socket_mod.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(address)
    return s
