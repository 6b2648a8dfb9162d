"""Go programs that speak kcp-go 5.6.1, built on first use from Debian's packages.

kcpgo's Go peers (the interop peer ``tests/interop/peer.go``, the benchmark's
``tools/gobench/gobench.go``) are built in GOPATH mode against ``golang-go`` and
``golang-github-xtaci-kcp-dev`` (kcp-go v5.6.1, as Debian's kcptun uses): no network, no module
proxy.

* :func:`go_available` -> ``(ok, reason)``: whether the toolchain and kcp-go's sources are
  installed (for ``pytest.mark.skipif``, or a benchmark that skips its Go contenders);
* :func:`build_go_program`: build one ``.go`` file, cached on disk by the source's hash (a
  second call, in this or another process, reuses the binary); :func:`go_program_path` says
  where that binary is (or will be).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Tuple

__all__ = ["SYSTEM_GOPATH", "KCP_GO_DIR", "PBKDF2_DIR", "INSTALL_HINT", "go_available",
           "build_go_program", "go_program_path"]

SYSTEM_GOPATH = "/usr/share/gocode"
KCP_GO_DIR = Path(SYSTEM_GOPATH, "src", "github.com", "xtaci", "kcp-go")
PBKDF2_DIR = Path(SYSTEM_GOPATH, "src", "golang.org", "x", "crypto", "pbkdf2")
INSTALL_HINT = "apt-get install golang-go golang-github-xtaci-kcp-dev"


def go_available() -> Tuple[bool, str]:
    """``(True, "")`` if the Go toolchain and kcp-go's sources are installed, else
    ``(False, reason)`` with the command that installs them."""
    if shutil.which("go") is None:
        return False, f"Go toolchain not found: {INSTALL_HINT}"
    if not KCP_GO_DIR.is_dir():
        return False, f"kcp-go sources not found at {KCP_GO_DIR}: {INSTALL_HINT}"
    if not PBKDF2_DIR.is_dir():
        return False, f"golang.org/x/crypto/pbkdf2 not found at {PBKDF2_DIR}: {INSTALL_HINT}"
    return True, ""


def go_program_path(source: Path, name: str) -> Path:
    """Where :func:`build_go_program` puts (or finds) the binary of ``source``:
    ``<tmp>/kcpgo-<name>-<hash of the source>/<name>``. ``OSError`` if ``source`` cannot be
    read."""
    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"kcpgo-{name}-{digest}" / name


def build_go_program(source: Path, name: str) -> Path:
    """Build the Go program ``source`` (one file, GOPATH mode, no cgo) and return the binary's
    path: ``<tmp>/kcpgo-<name>-<hash of the source>/<name>``. Built once: later calls (any
    process) find the binary; concurrent builders wait for each other (a file lock).

    Blocks for the build (tens of seconds from a cold Go cache). Raises ``RuntimeError`` with
    the reason when Go or kcp-go is missing (:func:`go_available`) or the build fails (with
    go's output); ``OSError`` if ``source`` cannot be read."""
    ok, reason = go_available()
    if not ok:
        raise RuntimeError(reason)
    binary = go_program_path(source, name)
    out_dir = binary.parent
    if binary.is_file():
        return binary
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file():                    # another process built it meanwhile
            return binary
        env = dict(os.environ, GO111MODULE="off", GOPATH=SYSTEM_GOPATH,
                   GOCACHE=str(out_dir / "cache"), GOFLAGS="", CGO_ENABLED="0")
        tmp = out_dir / f"{name}.tmp{os.getpid()}"
        proc = subprocess.run(["go", "build", "-o", str(tmp), str(Path(source).resolve())],
                              env=env, cwd=str(out_dir), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"go build of {source} failed (exit {proc.returncode}):\n"
                               f"{proc.stderr}{proc.stdout}")
        os.replace(tmp, binary)
    return binary
