"""``python -m kcpgo <command>``: the command table, every command's ``--help`` (defaults and
examples), the echo demo end to end, the runner's usage errors and ``-m module``, netem's
``--loss 5%``, and stats' table and plot. Source: issue 14 deliverable 1 and the first-hour
log (../shared/reviews/first-hour.md, problems 7-9, 13)."""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List

import pytest

from kcpgo.cli import COMMANDS, main as cli_main
from kcpgo.cli import netem, run, stats
from kcpgo.cli.snmplog import write_record
from kcpgo.snmp import Snmp
from kcpgo.testing import read_line
from tests.support.children import ROOT, child_env
from tests.support.children import reap

ALL = ("echo", "bench", "tunnel", "run", "netem", "stats", "dissect")


def kcpgo_cmd(*argv: str, cwd: str = ROOT, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kcpgo", *argv], cwd=cwd, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_command(capsys: Any) -> None:
    assert set(ALL) <= set(COMMANDS)
    assert cli_main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ALL:
        assert f"\n  {name} " in out
    assert cli_main(["--version"]) == 0 and capsys.readouterr().out.startswith("kcpgo ")


@pytest.mark.parametrize("argv, words", [
    (["echo", "client"], ["--mb", "default: 5.0", "--ds", "--crypt", "default: aes",
                          "examples:", "tunnel"]),
    (["echo", "server"], ["--once", "--listen", "--idle-timeout", "--sndwnd", "default: 1024"]),
    (["run"], ["-m MODULE", "--server", "repeatable", "examples:"]),
    (["netem"], ["--loss", "5%", "--upstream", "default: 127.0.0.1:0", "examples:"]),
    (["stats"], ["--follow", "--plot", "--columns", "examples:"]),
    (["dissect"], ["--crypt", "--smux", "--ds", "default: 0", "--json", "examples:"]),
])
def test_every_help_shows_defaults_and_examples(capsys: Any, argv: List[str],
                                                words: List[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(argv + ["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in words:
        assert word in out, word


@pytest.mark.parametrize("argv", [[name] for name in ALL] + [["echo", "client"],
                                                               ["echo", "server"]])
def test_help_text_has_no_rest_markup(capsys: Any, argv: List[str]) -> None:
    """``echo --help`` printed its module docstring raw (``--listen``, :class:`...`, a new
    user's report): no help text shows reST literals, roles or bold markers."""
    try:
        cli_main(argv + ["--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    assert out.strip(), argv
    for mark in ("``", ":class:`", ":mod:`", ":func:`", ":meth:`", "**"):
        assert mark not in out, (argv, mark)


def test_echo_server_and_client_exchange() -> None:
    server = subprocess.Popen([sys.executable, "-m", "kcpgo", "echo", "server", "--listen",
                               "127.0.0.1:0", "--once", "--crypt", "salsa20", "--key", "k",
                               "--ds", "5", "--ps", "2"], cwd=ROOT, env=child_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = read_line(server.stdout, 30)
        assert line.startswith("LISTENING 127.0.0.1:"), line
        client = kcpgo_cmd("echo", "client", "--remote", line.split()[1], "--mb", "1",
                           "--crypt", "salsa20", "--key", "k", "--ds", "5", "--ps", "2")
        assert client.returncode == 0, client.stderr
        out = client.stdout
        assert "client: crypt salsa20, FEC 5/2, mode fast" in out
        assert "echoed 1,000,000 bytes" in out and "sha256 intact" in out
        assert "client: counters: BytesSent 1,000,000, BytesReceived 1,000,000" in out
        rest, err = server.communicate(timeout=20)            # --once: exits on its own
        assert server.returncode == 0, err
        text = rest.decode()
        assert "server: session 0x" in text and "echoed 1,000,000 bytes" in text
    finally:
        reap(server, kill=True)


def test_example_echo_server_once_exits_soon_after_its_client() -> None:
    """examples/echo_server.py --once exits when its client is done (2 s of silence), not
    after the 60 s idle timeout (first-hour log, step 3e)."""
    server = subprocess.Popen([sys.executable, "examples/echo_server.py", "--port", "0",
                               "--once"], cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        line = read_line(server.stdout, 30)
        assert line.startswith("listening on"), line
        port = line.rstrip().rstrip(")").rsplit(" ", 1)[1]
        client = subprocess.run([sys.executable, "examples/echo_client.py", "--port", port,
                                 "--mb", "0.5"], cwd=ROOT, env=child_env(),
                                capture_output=True, text=True, timeout=60)
        assert client.returncode == 0 and "intact: True" in client.stdout, client.stderr
        t0 = time.monotonic()
        server.communicate(timeout=15)
        assert server.returncode == 0 and time.monotonic() - t0 < 10
    finally:
        reap(server, kill=True)


def test_echo_client_without_a_server_fails_with_a_hint() -> None:
    """No server: exit 1 with a hint and no traceback. 1 MB is more than the send window, so
    the writer greenlet is blocked too when the timeout fires; its TimeoutError used to be
    printed by gevent as a traceback after the client's own message."""
    out = kcpgo_cmd("echo", "client", "--remote", "127.0.0.1:9", "--mb", "1",
                    "--timeout", "1")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "is 'echo server' running" in out.stdout


def test_echo_writer_returns_its_error_instead_of_raising() -> None:
    """The client's writer greenlet returns the OSError that stopped it (the reader reports
    it): raised, gevent printed its traceback after the client's message whenever the
    writer's timeout fired before the reader's (seen by hand: --remote 127.0.0.1:1
    --timeout 2 --mb 0.1)."""
    import hashlib
    from kcpgo.cli import echo

    class Dead:
        def sendall(self, data: bytes) -> None:
            raise TimeoutError("timed out")
    err = echo._send(Dead(), 10, hashlib.sha256())
    assert isinstance(err, TimeoutError)


@pytest.mark.parametrize("argv, words", [
    (["--fec", "10", "x.py"], "--fec takes two numbers"),
    (["--client", "localhost", "x.py"], "expected (host, port)"),
    (["--crypt", "aes", "x.py"], "needs a key"),
    (["--server", "9000", "missing.py"], "can't open file"),
    (["--server", "9000", "-m", "no_such_module_here"], "no module named"),
    (["--server", "9000"], "script.py or -m module"),
])
def test_run_argument_errors_are_usage_errors(argv: List[str], words: str) -> None:
    out = kcpgo_cmd("run", *argv)
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr


def test_run_splits_runner_options_from_the_program() -> None:
    ap = run.build_parser()
    assert run.split_argv(ap, ["--server", "9", "-m", "http.server", "-m", "x"]) == \
        (["--server", "9"], None, "http.server", ["-m", "x"])
    assert run.split_argv(ap, ["--mode", "fast3", "--gevent", "app.py", "--server", "1"]) == \
        (["--mode", "fast3", "--gevent"], "app.py", None, ["--server", "1"])
    assert run.split_argv(ap, ["-mpkg.mod", "a"]) == ([], None, "pkg.mod", ["a"])
    assert run.split_argv(ap, ["--", "-weird.py"]) == ([], "-weird.py", None, [])


def test_run_module_and_monkey_delegation(tmp_path: Path) -> None:
    """``-m module`` runs the module as __main__ with its arguments (python -m semantics);
    ``python -m kcpgo.monkey`` is the same runner."""
    (tmp_path / "probe_mod.py").write_text(
        "import socket, sys\nprint(sys.argv[1:], socket.create_connection.__module__)\n")
    out = kcpgo_cmd("run", "--client", "127.0.0.1:9", "-m", "probe_mod", "a", "--b",
                    cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['a',", "'--b']", "kcpgo.monkey"]
    legacy = subprocess.run([sys.executable, "-m", "kcpgo.monkey", "--client", "127.0.0.1:9",
                             "-m", "probe_mod", "z"], cwd=tmp_path, env=child_env(),
                            capture_output=True, text=True, timeout=60)
    assert legacy.returncode == 0 and legacy.stdout.split()[0] == "['z']", legacy.stderr
    alone = kcpgo_cmd("run", "-m", "probe_mod", cwd=str(tmp_path))
    assert "nothing is switched to KCP" in alone.stderr


def test_netem_takes_percentages_and_fractions() -> None:
    ap = netem.build_parser()
    up, down = netem.profiles(ap.parse_args(["--upstream", "127.0.0.1:9", "--loss", "5%",
                                             "--delay", "25ms", "--down", "loss=0.2"]))
    assert (up.loss, up.delay, down.loss, down.delay) == (0.05, 25.0, 0.2, 25.0)
    up, _ = netem.profiles(ap.parse_args(["--upstream", "127.0.0.1:9", "--loss", "0.05"]))
    assert up.loss == 0.05
    out = kcpgo_cmd("netem", "--upstream", "127.0.0.1:9", "--loss", "150%")
    assert out.returncode == 2 and "loss must be a probability" in out.stderr
    out = kcpgo_cmd("netem", "--upstream", "127.0.0.1:9", "--loss", "5%", "--duration", "0.2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("LISTENING 127.0.0.1:") and "\nSTATS {" in out.stdout
    assert "up: loss=0.05" in out.stderr


def _snmp_log(path: Path, version: str = "5.6.1") -> None:
    s = Snmp()
    for i in range(4):
        s.BytesSent += 2_000_000
        s.RetransSegs += 10
        s.CurrEstab = 3
        write_record(str(path), s, when=1_700_000_000 + 10 * i, version=version)
    s.reset()                           # the process restarted: counters start again
    s.BytesSent = 500_000
    write_record(str(path), s, when=1_700_000_040, version=version)


@pytest.mark.parametrize("version", ["5.6.1", "latest"])
def test_stats_prints_rates(tmp_path: Path, capsys: Any, version: str) -> None:
    log = tmp_path / "snmp.log"
    _snmp_log(log, version)
    assert stats.main([str(log), "--columns", "BytesSent,RetransSegs,CurrEstab"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["time", "secs", "BytesSent/s", "RetransSegs/s", "CurrEstab"]
    assert lines[1].split()[2:] == ["10", "200.00", "kB/s", "1", "3"]
    assert lines[4].split()[2:] == ["10*", "50.00", "kB/s", "0", "0"]     # restarted
    assert len(lines) == 5


def test_stats_plot_and_errors(tmp_path: Path, capsys: Any) -> None:
    log = tmp_path / "snmp.log"
    _snmp_log(log)
    pytest.importorskip("matplotlib")
    png = tmp_path / "rates.png"
    assert stats.main([str(log), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stats.main([str(tmp_path / "missing.log")]) == 1
    with pytest.raises(SystemExit):
        stats.main([str(log), "--columns", "NoSuchCounter"])
    assert "NoSuchCounter not in the file" in capsys.readouterr().err


def test_help_formatter_hides_unset_defaults() -> None:
    ap = netem.build_parser()
    text = ap.format_help()
    assert "default: None" not in text and "default: False" not in text
    assert isinstance(ap.formatter_class(prog="x"), argparse.HelpFormatter)
