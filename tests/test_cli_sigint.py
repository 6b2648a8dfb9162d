"""SIGINT ends every long-running ``python -m kcpgo`` command quietly: exit status 130, no
traceback, after closing its sessions (issue 14: "SIGINT ends every subcommand quietly").
Every child starts at once and gets its signal once all are up, so the file stays fast.
``examples/echo_server.py`` is checked too (first-hour log, problem 8)."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from kcpgo.cli.snmplog import write_record
from kcpgo.snmp import Snmp
from kcpgo.testing import read_line
from tests.support.children import ROOT, child_env
from tests.support.children import reap

#: Seconds a child may take to print its first line (8 interpreters start at once on 2 CPUs).
START = 30.0

SERVER_SCRIPT = """
import socketserver, sys
class Upper(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line.upper())
with socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), Upper) as server:
    print("ready", flush=True)
    server.serve_forever()
"""


def spawn(*argv: str, cwd: str = ROOT, module: bool = True) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *(["-m", "kcpgo"] if module else []), *argv],
                            cwd=cwd, env=child_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def first_line(proc: subprocess.Popen, want: str, name: str) -> str:
    line = read_line(proc.stdout, START)
    if want not in line:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"{name}: expected {want!r} first, got {line!r}; stderr: "
                             f"{err.decode(errors='replace')}")
    return line


def wait_for(proc: subprocess.Popen, want: str, name: str, lines: int = 10) -> None:
    for _ in range(lines):
        if want in read_line(proc.stdout, START):
            return
    proc.kill()
    raise AssertionError(f"{name}: no line with {want!r}")


def noisy_exits(children: Dict[str, subprocess.Popen]) -> List[str]:
    """Collect every child (20 s each at most); one line for each that did not exit 130
    quietly (no "Traceback", no "KeyboardInterrupt" on stderr)."""
    failures: List[str] = []
    for name, proc in children.items():
        _, err = proc.communicate(timeout=20)
        text = err.decode(errors="replace")
        if proc.returncode != 130 or "Traceback" in text or "KeyboardInterrupt" in text:
            failures.append(f"{name}: exit {proc.returncode}; stderr: {text[-2000:]}")
    return failures


def test_sigint_exits_130_without_a_traceback(tmp_path: Path) -> None:
    log = tmp_path / "snmp.log"
    counters = Snmp()
    for i in range(2):
        counters.BytesSent += 1000
        write_record(str(log), counters, when=1_700_000_000 + 10 * i)
    (tmp_path / "server.py").write_text(SERVER_SCRIPT)

    children: Dict[str, subprocess.Popen] = {}
    try:
        # Everything starts at once; the echo client needs its server's port first.
        children["echo server"] = spawn("echo", "server", "--listen", "127.0.0.1:0")
        children["echo server for the client"] = spawn("echo", "server", "--listen",
                                                       "127.0.0.1:0")
        children["run"] = spawn("run", "--server", "127.0.0.1:0", "server.py", "0",
                                cwd=str(tmp_path))
        children["run --gevent"] = spawn("run", "--gevent", "--server", "127.0.0.1:0",
                                         "server.py", "0", cwd=str(tmp_path))
        children["netem"] = spawn("netem", "--upstream", "127.0.0.1:9", "--loss", "5%")
        children["stats --follow"] = spawn("stats", "--follow", str(log))
        children["tunnel server"] = spawn("tunnel", "server", "--listen", "127.0.0.1:0",
                                          "--target", "127.0.0.1:9")
        children["tunnel client"] = spawn("tunnel", "client", "--localaddr", "127.0.0.1:0",
                                          "--remoteaddr", "127.0.0.1:9")
        children["examples/echo_server.py"] = spawn("examples/echo_server.py", "--port", "0",
                                                    module=False)
        firsts = {"examples/echo_server.py": "listening on","echo server": "LISTENING", "echo server for the client": "LISTENING",
                  "run": "ready", "run --gevent": "ready", "netem": "LISTENING",
                  "stats --follow": "time", "tunnel server": "LISTENING",
                  "tunnel client": "LISTENING"}
        port: Optional[str] = None
        for name, want in firsts.items():
            line = first_line(children[name], want, name)
            if name == "echo server for the client":
                port = line.split()[1]
        assert port is not None
        counters.BytesSent += 1000                     # --follow prints a row appended now
        write_record(str(log), counters, when=1_700_000_020)
        wait_for(children["stats --follow"], time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(1_700_000_020)), "stats --follow")
        client = children["echo client"] = spawn("echo", "client", "--remote", port,
                                                 "--mb", "100000")
        wait_for(client, "reading them back", "echo client")
        time.sleep(0.3)                               # mid-transfer
        for proc in children.values():
            proc.send_signal(signal.SIGINT)
        failures = noisy_exits(children)
        assert not failures, "\n".join(failures)
    finally:
        for proc in children.values():
            reap(proc, kill=True)
