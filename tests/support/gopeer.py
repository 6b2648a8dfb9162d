"""Helpers to drive the Go kcp-go peer (tests/interop/peer.go) from pytest and tools/soak.py.

Stdlib only. The Go program is built in GOPATH mode against the Debian
packages ``golang-go`` and ``golang-github-xtaci-kcp-dev`` (kcp-go v5.6.1);
no network / module proxy is needed.

ECHO protocol (see the package comment of peer.go for the authoritative text):

* client: writes exactly ``nbytes`` bytes of :func:`payload` in 64 KiB Write
  calls, concurrently reads the echo until ``nbytes`` came back, prints
  ``SENT <n> <sha256hex>`` and ``ECHOED <n> <sha256hex>``; exit 0 only if the
  echo equals the sent bytes.
* server: prints ``LISTENING <ip:port>`` once bound; per session echoes every
  Read back with one Write (message boundaries preserved in message mode),
  prints ``RECEIVED <n> <sha256hex>`` after ``nbytes`` bytes, then lingers
  until the peer has been silent for ``linger`` seconds (KCP has no FIN) and
  closes the session. Exits 0 after ``sessions`` sessions completed. Sessions
  that never receive a byte are ignored; more than ``nbytes`` is an error.
* both: errors on stderr, non-zero exit; overall ``timeout`` -> "TIMEOUT" on
  stderr and exit status 3.

Payload generator (identical in peer.go)::

    payload = SHA256(b"kcpgo-interop" + u64le(0)) + SHA256(b"kcpgo-interop" + u64le(1)) + ...
    truncated to n bytes

Options (keyword arguments of :func:`go_args`, :class:`GoServer`,
:func:`run_go_client`, with the Go flag they map to):

=============  ============  ==========================================
option         flag          default
=============  ============  ==========================================
crypt          -crypt        ""  (no BlockCrypt at all; "none" differs)
key            -key          "it's a secrect" (kcptun default)
ds, ps         -ds, -ps      0, 0 (no FEC)
nodelay        -nodelay      (1, 10, 2, 1)
mtu            -mtu          1400
sndwnd         -sndwnd       1024
rcvwnd         -rcvwnd       1024
stream         -stream       False (message mode)
acknodelay     -acknodelay   False
nbytes         -bytes        1048576
sockbuf        -sockbuf      4194304
timeout        -timeout      60 (seconds, overall)
sessions       -sessions     1 (server only)
linger         -linger       3 (seconds, server only)
=============  ============  ==========================================
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import queue
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Union

# The toolchain check and the Debian paths moved to kcpgo.testing.golang (the benchmark
# of python -m kcpgo bench uses them too); re-exported here for the tests.
from kcpgo.testing import reap
from kcpgo.testing.golang import (INSTALL_HINT, KCP_GO_DIR, PBKDF2_DIR,  # noqa: F401
                                  SYSTEM_GOPATH, go_available)

PEER_SOURCE = Path(__file__).resolve().parent.parent / "interop" / "peer.go"

#: Defaults, identical to the Go flag defaults.
DEFAULTS = {
    "crypt": "",
    "key": "it's a secrect",
    "ds": 0,
    "ps": 0,
    "nodelay": (1, 10, 2, 1),
    "mtu": 1400,
    "sndwnd": 1024,
    "rcvwnd": 1024,
    "stream": False,
    "acknodelay": False,
    "nbytes": 1 << 20,
    "sockbuf": 4194304,
    "timeout": 60,
    "sessions": 1,
    "linger": 3,
}

_FLAG = {"nbytes": "bytes"}  # option name -> flag name where they differ

#: kcptun cipher names understood by peer.go ("" = no BlockCrypt).
CIPHERS = ("aes", "aes-128", "aes-192", "salsa20", "blowfish", "twofish", "cast5",
           "3des", "tea", "xtea", "xor", "sm4", "none")

PAYLOAD_PREFIX = b"kcpgo-interop"


# --------------------------------------------------------------------------- toolchain
# (go_available: kcpgo.testing.golang, imported above)

_build_lock = threading.Lock()
_built: Optional[str] = None
#: Seconds the last build_peer() call spent compiling (0.0 when a cached binary was reused).
last_build_seconds = 0.0


def _cache_root() -> Path:
    return Path(tempfile.gettempdir())


def build_env(cache: Path) -> dict:
    """Environment for `go build` in GOPATH mode with writable GOPATH/GOCACHE."""
    env = dict(os.environ)
    env.update(
        GO111MODULE="off",
        GOPATH=f"{SYSTEM_GOPATH}:{cache / 'gopath'}",
        GOCACHE=str(_cache_root() / "kcpgo-interop-gocache"),
        GOFLAGS="",
        CGO_ENABLED="0",
    )
    return env


def build_peer() -> str:
    """Build peer.go (once per process, cached on disk by source hash); return the binary path.

    Raises RuntimeError with go's output if the build fails.
    """
    global _built, last_build_seconds
    with _build_lock:
        if _built is not None and os.access(_built, os.X_OK):
            return _built
        source = PEER_SOURCE.read_bytes()
        digest = hashlib.sha256(source).hexdigest()
        cache = _cache_root() / f"kcpgo-interop-{digest[:16]}"
        cache.mkdir(parents=True, exist_ok=True)
        binary = cache / "peer"
        stamp = cache / "peer.sha256"
        # Serialize concurrent builds (other processes, e.g. pytest-xdist workers).
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (binary.is_file() and stamp.is_file() and stamp.read_text().strip() == digest):
                src_copy = cache / "peer.go"
                src_copy.write_bytes(source)
                tmp = cache / f"peer.tmp{os.getpid()}"
                t0 = time.monotonic()
                proc = subprocess.run(
                    ["go", "build", "-o", str(tmp), "peer.go"],
                    cwd=cache, env=build_env(cache),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                )
                last_build_seconds = time.monotonic() - t0
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"go build of {PEER_SOURCE} failed (exit {proc.returncode}):\n"
                        f"{proc.stderr}{proc.stdout}")
                os.replace(tmp, binary)
                stamp.write_text(digest + "\n")
            else:
                last_build_seconds = 0.0
        _built = str(binary)
        return _built


# --------------------------------------------------------------------------- payload

_payload_buf = bytearray()
_payload_lock = threading.Lock()


def payload(n: int) -> bytes:
    """First n bytes of SHA-256 in counter mode (the bytes the Go client sends).

    payload = SHA256(b"kcpgo-interop" + u64le(0)) || SHA256(b"kcpgo-interop" + u64le(1)) || ...
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    with _payload_lock:
        have = len(_payload_buf)
        if have < n:
            base = hashlib.sha256(PAYLOAD_PREFIX)
            pack = struct.Struct("<Q").pack
            parts = []
            for i in range(have // 32, (n + 31) // 32):
                h = base.copy()
                h.update(pack(i))
                parts.append(h.digest())
            _payload_buf.extend(b"".join(parts))
        return bytes(_payload_buf[:n])


def payload_sha256(n: int) -> str:
    return hashlib.sha256(payload(n)).hexdigest()


# --------------------------------------------------------------------------- flags

def peer_options(**opts) -> dict:
    """Validate option names and return the complete option dict (defaults filled in)."""
    unknown = set(opts) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown peer option(s): {sorted(unknown)}")
    full = dict(DEFAULTS)
    full.update(opts)
    full["nodelay"] = tuple(int(v) for v in full["nodelay"])
    if len(full["nodelay"]) != 4:
        raise ValueError("nodelay must be (nodelay, interval, resend, nc)")
    if full["crypt"] is None:
        full["crypt"] = ""
    return full


def go_args(**opts) -> list[str]:
    """Flags for peer.go (without -mode/-addr) for the given options; all flags are emitted."""
    full = peer_options(**opts)
    args: list[str] = []
    for name in DEFAULTS:
        value = full[name]
        flag = "-" + _FLAG.get(name, name)
        if isinstance(value, bool):
            args.append(f"{flag}={'true' if value else 'false'}")
        elif name == "nodelay":
            args += [flag, ",".join(str(v) for v in value)]
        else:
            args += [flag, str(value)]
    return args


def parse_output(stdout: str) -> dict:
    """Parse peer stdout: {"LISTENING": "ip:port", "SENT": (n, hex), "ECHOED": (n, hex),
    "RECEIVED": [(n, hex), ...]} (keys present only if the lines were printed)."""
    out: dict = {}
    for line in stdout.splitlines():
        parts = line.split()
        if not parts:
            continue
        tag = parts[0]
        if tag == "LISTENING" and len(parts) == 2:
            out["LISTENING"] = parts[1]
        elif tag in ("SENT", "ECHOED", "RECEIVED") and len(parts) == 3:
            item = (int(parts[1]), parts[2])
            if tag == "RECEIVED":
                out.setdefault("RECEIVED", []).append(item)
            else:
                out[tag] = item
    return out


def _split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _addr_str(address: Union[str, tuple]) -> str:
    if isinstance(address, str):
        return address
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------- server

class GoServer:
    """Go ECHO server as a context manager.

    with GoServer(crypt="aes", ds=10, ps=3, nbytes=1 << 18) as srv:
        host, port = srv.address
        ...
        rc, out, err = srv.wait()
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 start_timeout: float = 20.0, **opts):
        self.options = peer_options(**opts)
        self.listen = _addr_str((host, port))
        self.start_timeout = start_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.address: Optional[tuple[str, int]] = None
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._threads: list[threading.Thread] = []

    @property
    def argv(self) -> list[str]:
        return [build_peer(), "-mode", "server", "-addr", self.listen, *go_args(**self.options)]

    def start(self) -> "GoServer":
        argv = self.argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._stderr, False), daemon=True),
        ]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + self.start_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise RuntimeError(f"Go server did not print LISTENING within {self.start_timeout}s; "
                                   f"stderr: {self.stderr}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:  # stdout closed: the process died
                self.proc.wait()
                raise RuntimeError(f"Go server exited ({self.proc.returncode}) before LISTENING; "
                                   f"stderr: {self.stderr}")
            if line.startswith("LISTENING "):
                self.address = _split_hostport(line.split()[1])
                return self

    def _pump(self, stream, sink: list, is_stdout: bool) -> None:
        for line in stream:
            sink.append(line)
            if is_stdout:
                self._lines.put(line)
        if is_stdout:
            self._lines.put(None)

    @property
    def stdout(self) -> str:
        return "".join(self._stdout)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    @property
    def report(self) -> dict:
        """parse_output() of the stdout seen so far."""
        return parse_output(self.stdout)

    def wait(self, timeout: Optional[float] = None) -> tuple[int, str, str]:
        """Wait for exit; return (returncode, stdout, stderr). Kills it on timeout
        (default: the -timeout option + 10 s) and raises subprocess.TimeoutExpired."""
        assert self.proc is not None, "server not started"
        if timeout is None:
            timeout = float(self.options["timeout"]) + 10
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        for t in self._threads:
            t.join(timeout=5)
        return self.proc.returncode, self.stdout, self.stderr

    def kill(self) -> None:
        if self.proc is not None:
            reap(self.proc, kill=True)

    def __enter__(self) -> "GoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()
        for t in self._threads:
            t.join(timeout=5)
        for f in (self.proc.stdout, self.proc.stderr) if self.proc else ():
            if f:
                f.close()


# --------------------------------------------------------------------------- client

def run_go_client(address: Union[str, tuple], proc_timeout: Optional[float] = None,
                  **opts) -> subprocess.CompletedProcess:
    """Run the Go ECHO client against address ((host, port) or "host:port").

    Returns the CompletedProcess (text mode) with an extra attribute ``report``
    = parse_output(stdout), e.g. report["SENT"] == (n, sha256hex). The
    ``timeout`` option is the Go side's own deadline (-timeout: "TIMEOUT" on
    stderr, exit 3); ``proc_timeout`` (default: that + 10 s) is a safety net
    for the subprocess: on expiry the child is killed and
    subprocess.TimeoutExpired propagates.
    """
    full = peer_options(**opts)
    if proc_timeout is None:
        proc_timeout = float(full["timeout"]) + 10
    argv = [build_peer(), "-mode", "client", "-addr", _addr_str(address), *go_args(**full)]
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, timeout=proc_timeout)
    result.report = parse_output(result.stdout)
    return result


def check_client(result: subprocess.CompletedProcess, nbytes: int) -> None:
    """Assert that a Go client run succeeded and sent/echoed payload(nbytes)."""
    detail = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, detail
    want = (nbytes, payload_sha256(nbytes))
    assert result.report.get("SENT") == want, detail
    assert result.report.get("ECHOED") == want, detail
