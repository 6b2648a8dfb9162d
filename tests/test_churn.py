"""Churn: many sessions opened, used and closed in waves leak no greenlets, descriptors,
sessions, timers or memory. Prints the before/after figures.

Normal suite: 2,000 sessions in 4 waves of 500. Long run: ``KCPGO_SLOW=1`` (10,000 in 20
waves) or ``python tools/churn.py --sessions 10000 --wave 500``.
"""
from __future__ import annotations

import pytest

from tools.churn import run


def _check(res):
    print({k: v for k, v in res.items()})
    assert res["failures"] == 0, res
    # Sessions earlier tests left closing (an smux linger, a close handed to the I/O thread)
    # may finish meanwhile, taking their descriptor and reader with them: the counts must
    # not grow.
    assert res["fd_growth"] <= 0, res
    assert res["greenlet_growth"] <= 0 and res["kcpgo_greenlet_growth"] <= 0, res
    assert res["socket_growth"] <= 0, res
    assert res["after"]["listener_sessions"] == 0, res
    # Timers too: a session an earlier test left closing may still hold one at the start
    # (seen: 4 before, 2 after, in the full suite); a leak per session would add thousands.
    assert res["after"]["live_timers"] <= res["before"]["live_timers"], res
    assert res["gc_object_growth"] < 200, res
    # The allocator's high-water mark is reached within two waves; no growth after that.
    assert res["rss_growth_after_wave2_mb"] < 8, res


def test_churn_short():
    _check(run(sessions=2_000, per_wave=500))


@pytest.mark.slow
def test_churn_long():
    _check(run(sessions=10_000, per_wave=500))


def test_churn_prints_a_short_readable_summary(capsys):
    """``tools/churn.py`` prints four lines ending in its verdict, not a 50-line JSON document
    (that goes to ``--json FILE``; first-hour log, step 5)."""
    from tools.churn import main
    assert main(["--sessions", "200", "--wave", "100"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[0].startswith("churn: 200 sessions in 2 waves of 100, 0 failed")
    assert out[-1].startswith("OK: "), out


def test_only_growth_is_a_leak():
    """A full-suite run: an earlier test's session in the same worker ended during the churn
    (fds -1, kcpgo greenlets -1) and the verdict was "FAIL: leak". Shrinking is no leak;
    growing is."""
    from tools.churn import summary_lines
    res = dict(sessions=200, waves=2, per_wave=100, failures=0, seconds=0.3, fd_growth=-1,
               kcpgo_greenlet_growth=-1, socket_growth=0, greenlet_growth=-1,
               gc_object_growth=-302, before=dict(rss_kb=231117), after=dict(rss_kb=231117),
               rss_growth_after_wave2_mb=0.0, rss_after_wave_mb=[225.7, 225.7])
    assert summary_lines(res)[-1].startswith("OK"), summary_lines(res)
    res["socket_growth"] = 1
    assert summary_lines(res)[-1] == "FAIL: leak"
