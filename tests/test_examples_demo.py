"""``bash examples/demo.sh`` (the README's first command): the echo demo on a free port, and
with its port busy a clear message and a non-zero exit, not two tracebacks (first-hour log,
problem 7)."""
from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from tests.support.children import ROOT, child_env

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def demo(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "examples/demo.sh"], cwd=ROOT, env=child_env(**env),
                          capture_output=True, text=True, timeout=120)


def test_demo_echoes_on_a_free_port_while_19000_is_busy() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        try:
            busy.bind(("127.0.0.1", 19000))     # the port the demo used to take
        except OSError:
            pass                                # busy already: just as good
        proc = demo()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("server: listening on") for line in lines), proc.stdout
    assert any(line.startswith("client: echoed 5,000,000 bytes") and "intact: True" in line
               for line in lines), proc.stdout


def test_demo_with_a_busy_port_says_so_and_stops() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        proc = demo(PORT=str(busy.getsockname()[1]))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Address already in use" in proc.stdout
    assert "did not start" in proc.stderr
    assert "client:" not in proc.stdout          # the client does not run
