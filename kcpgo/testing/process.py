"""The relay in a child process (:class:`RelayProcess`), :func:`read_line`: one line from a
child's stdout with a timeout, with or without gevent's monkey-patching, :func:`reap`: a
child collected and its pipes closed, and :func:`running`: whether a process still runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Tuple

from ..runtime._originals import real_select
from ..sansio.memnet import LinkProfile

__all__ = ["RelayProcess", "read_line", "reap", "running"]

Address = Tuple[str, int]

#: The directory that holds this ``kcpgo`` package: the child must run the same code.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def running(pid: int) -> bool:
    """Whether ``pid`` runs: not gone, and not a zombie waiting for its parent to reap it
    (Linux ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def reap(proc: "subprocess.Popen[Any]", timeout: float = 20.0, kill: bool = False,
         before_close: Optional[Callable[[], None]] = None) -> None:
    """Collect a child and close its pipes (a ``Popen`` garbage-collected with open pipes is a
    ``ResourceWarning``). ``kill``: SIGKILL it first if it still runs; otherwise wait up to
    ``timeout`` seconds, then kill it. ``before_close`` runs after the child ended and before
    the pipes are closed (e.g. joining threads that read them). Never raises for a child
    that already ended."""
    try:
        if kill and proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if before_close is not None:
            before_close()
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:              # a broken pipe flushing stdin's buffer
                    pass


def read_line(stream: IO[Any], timeout: float) -> str:
    """One line from ``stream`` (a child's stdout pipe, text or binary), decoded; what came
    before the timeout or EOF if no whole line did (``""`` if nothing). Reads the file
    descriptor byte by byte, so nothing is left in ``stream``'s buffer. Waits with the real
    ``select``: call it from a thread (``gevent.get_hub().threadpool``) to keep a hub
    running meanwhile."""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = real_select([fd], [], [], left)
        if not r:
            break
        chunk = os.read(fd, 1)
        if not chunk:
            break
        buf += chunk
    return buf.decode()


class RelayProcess:
    """The emulator as a child process (``python -m kcpgo.testing.relay``): its own CPU and
    clock. Arguments as for :class:`~kcpgo.testing.Relay`.

    ``start()`` waits for ``LISTENING`` (``RuntimeError`` if it does not come within
    ``timeout``); ``stop()`` closes its stdin and returns the final counters it prints (also
    kept in ``final``). The child also exits if this process dies (its stdin closes).
    ``stderr``: where the child's stderr goes (``subprocess.Popen``'s argument; default: this
    process's), e.g. ``subprocess.DEVNULL`` to drop its ``netem: seed ...`` banner.
    """

    def __init__(self, upstream: Address, up: Optional[LinkProfile] = None,
                 down: Optional[LinkProfile] = None, seed: Optional[int] = 0,
                 listen: Address = ("127.0.0.1", 0), stderr: Any = None) -> None:
        self.argv: List[str] = [
            sys.executable, "-m", "kcpgo.testing.relay", "--stdin-eof",
            "--upstream", f"{upstream[0]}:{upstream[1]}", "--listen", f"{listen[0]}:{listen[1]}",
            "--up", (up or LinkProfile()).spec(), "--down", (down or LinkProfile()).spec()]
        if seed is not None:
            self.argv += ["--seed", str(seed)]
        self.stderr = stderr
        self.proc: Optional[subprocess.Popen] = None
        self.address: Optional[Address] = None
        self.final: Optional[Dict[str, Dict[str, int]]] = None

    def start(self, timeout: float = 10.0) -> "RelayProcess":
        # cwd: ``-m`` imports from there first, so the child runs this very kcpgo.
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1,
                                     cwd=_PACKAGE_ROOT)
        line = read_line(self.proc.stdout, timeout)
        if not line.startswith("LISTENING "):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"netem relay did not start: {line!r}")
        host, _, port = line.split()[1].rpartition(":")
        self.address = (host, int(port))
        return self

    def stop(self, timeout: float = 10.0) -> Dict[str, Dict[str, int]]:
        if self.proc is None or self.final is not None:
            return self.final or {}
        try:
            self.proc.stdin.close()
        except OSError:  # pragma: no cover
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
            self.proc.wait()
        out = self.proc.stdout.read()
        self.proc.stdout.close()
        self.final = {}
        for line in out.splitlines():
            if line.startswith("STATS "):
                self.final = json.loads(line[6:])
        return self.final

    def kill(self) -> None:
        if self.proc is not None:
            reap(self.proc, kill=True)

    def __enter__(self) -> "RelayProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
