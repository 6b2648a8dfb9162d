"""Live progress of ``python -m kcpgo bench`` on stderr, and its ``--plot``.

:class:`Progress` reports each measurement while it runs: a tqdm progress bar when stderr is
a terminal and tqdm is installed (the ``cli`` extra; imported only then), otherwise plain
lines, one when a run starts, then about one per second (elapsed seconds, what was moved so
far, the rate over the last second), and one when it ends with its figure. Both go to stderr,
so ``--json`` output on stdout stays one document.

A run learns its progress from ``SAMPLE <seconds> <count>`` lines of the end that counts
(bytes for throughput modes, round trips for ping; :mod:`kcpgo.cli.bench_role`), handed to
:meth:`RunProgress.sample` from any thread; :meth:`RunProgress.tick`, called by the waiting
thread about every 100 ms, draws.

:func:`plot_throughput` draws MB/s over time per contender from those samples (matplotlib,
also in the ``cli`` extra; :func:`plot_available` says whether it can).
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, List, Optional, Sequence, TextIO, Tuple

__all__ = ["Progress", "RunProgress", "rates", "plot_available", "plot_throughput"]

#: Seconds between plain progress lines of one run.
PLAIN_EVERY = 1.0
#: Seconds between redraws of a progress bar.
BAR_EVERY = 0.1
#: Seconds of samples the current rate is taken over.
RATE_WINDOW = 1.0
#: The bar counts in thousandths of a run.
_BAR_TOTAL = 1000


def _tqdm() -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    """Where a benchmark reports progress: ``stream`` (default ``sys.stderr``).

    ``enabled`` False: nothing is printed (``--quiet``). ``bar``: None chooses a tqdm bar when
    ``stream`` is a terminal and tqdm imports, else plain lines; True/False force it (True
    without tqdm still gives plain lines)."""

    def __init__(self, enabled: bool = True, stream: Optional[TextIO] = None,
                 bar: Optional[bool] = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        if bar is None:
            bar = bool(getattr(self.stream, "isatty", lambda: False)())
        self.tqdm = _tqdm() if (bar and enabled) else None

    def note(self, text: str) -> None:
        """One line of text (a plan, a skipped contender, a build), now."""
        if not self.enabled:
            return
        if self.tqdm is not None:
            self.tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def run(self, label: str, seconds: float = 0.0, total: float = 0.0,
            unit: str = "MB", sampled: bool = True) -> "RunProgress":
        """A run about to start: ``label`` names it; its length is ``total`` counted things
        (bytes when ``unit`` is "MB", round trips when "round trips") if known, else about
        ``seconds`` seconds of the counting end's clock (``sampled``: from its samples;
        False: of this process's, from now, for runs whose ends send no samples)."""
        return RunProgress(self, label, seconds, total, unit, sampled)


class RunProgress:
    """One run's progress (see :meth:`Progress.run`); a context manager that prints its
    start line on entry and closes its bar on exit."""

    def __init__(self, owner: Progress, label: str, seconds: float, total: float,
                 unit: str, sampled: bool = True) -> None:
        self.owner, self.label = owner, label
        self.seconds, self.total, self.unit = seconds, total, unit
        self.sampled = sampled
        #: (seconds, cumulative count) pairs, as the counting end reported them
        self.samples: List[Tuple[float, int]] = []
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._next = self._start + (BAR_EVERY if owner.tqdm else PLAIN_EVERY)
        self._bar: Any = None

    def __enter__(self) -> "RunProgress":
        self._start = time.monotonic()
        self._next = self._start + (BAR_EVERY if self.owner.tqdm else PLAIN_EVERY)
        if not self.owner.enabled:
            return self
        if self.owner.tqdm is not None:
            self._bar = self.owner.tqdm(
                total=_BAR_TOTAL, desc=self.label, file=self.owner.stream, leave=True,
                dynamic_ncols=True, unit="",
                # the status text rides in {unit}: tqdm prefixes {postfix} with ", "
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {unit}")
        else:
            self.owner.note(f"{self.label}: started")
        return self

    def sample(self, seconds: float, count: int) -> None:
        """A ``SAMPLE`` from the counting end: ``count`` so far after ``seconds``; any
        thread."""
        with self._lock:
            self.samples.append((seconds, count))

    def _status(self) -> Tuple[float, str]:
        """(fraction done, text) now."""
        elapsed = time.monotonic() - self._start
        with self._lock:
            last = self.samples[-1] if self.samples else None
            window = [s for s in self.samples if last and s[0] >= last[0] - RATE_WINDOW]
        text = f"{elapsed:.1f} s"
        # time-bound runs: the counting end's clock (from its first byte) once it reports,
        # so that starting the ends and the server's idle wait do not count
        done_s = elapsed if not self.sampled else last[0] if last is not None else 0.0
        frac = min(1.0, done_s / self.seconds) if self.seconds > 0 else 0.0
        if last is None:
            if self.sampled:    # the ends are starting (a Go build, a handshake): no figure
                text += ", starting (nothing counted yet)"
        else:
            done = last[1] / 1e6 if self.unit == "MB" else last[1]
            text += f", {done:,.1f} MB" if self.unit == "MB" else f", {done:,} {self.unit}"
            if len(window) > 1 and window[-1][0] > window[0][0]:
                rate = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
                text += (f", {rate / 1e6:,.1f} MB/s" if self.unit == "MB"
                         else f", {rate:,.0f}/s")
            if self.total > 0:
                frac = min(1.0, last[1] / self.total)
        return frac, text

    def tick(self) -> None:
        """Draw if it is time (a bar every 0.1 s, a plain line every second); call it from the
        thread that waits for the run."""
        now = time.monotonic()
        if not self.owner.enabled or now < self._next:
            return
        self._next = now + (BAR_EVERY if self._bar is not None else PLAIN_EVERY)
        frac, text = self._status()
        if self._bar is not None:
            self._bar.n = int(frac * _BAR_TOTAL)
            self._bar.unit = text
            self._bar.refresh()
        else:
            self.owner.note(f"{self.label}: {text}")

    def done(self, summary: str) -> None:
        """The run ended: ``summary`` is its figure (or why it has none)."""
        if not self.owner.enabled:
            return
        if self._bar is not None:
            if not summary.startswith(("STALLED", "failed", "interrupted")):
                self._bar.n = _BAR_TOTAL
            self._bar.unit = summary
            self._bar.close()
            self._bar = None
        else:
            self.owner.note(f"{self.label}: {summary}")

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:               # ended by an exception: leave the bar as is
            self._bar.close()
            self._bar = None


# --------------------------------------------------------------------------- plot


def rates(samples: Sequence[Sequence[float]]) -> Tuple[List[float], List[float]]:
    """Throughput over time from cumulative samples ``[(seconds, bytes), ...]``: the middle
    of each interval (s) and its rate (MB/s, 10^6 bytes per second)."""
    xs: List[float] = []
    ys: List[float] = []
    for (t0, n0), (t1, n1) in zip(samples, samples[1:]):
        if t1 > t0:
            xs.append((t0 + t1) / 2)
            ys.append((n1 - n0) / (t1 - t0) / 1e6)
    return xs, ys


def plot_available() -> Optional[str]:
    """None if :func:`plot_throughput` can draw (matplotlib is installed; not imported
    yet), else why not (a one-line hint)."""
    from importlib.util import find_spec
    if find_spec("matplotlib") is None:
        return ("--plot needs matplotlib: pip install 'kcpgo[cli]' (or pip install "
                "matplotlib)")
    return None


def plot_throughput(path: str, title: str, contenders: Sequence[Tuple[str, List[Any]]],
                    xlabel: str = "seconds") -> int:
    """Draw MB/s over time, one colour per contender, one line per run, into the PNG
    ``path`` (a logarithmic axis when the contenders' peaks differ more than tenfold).
    ``contenders``: ``(label, runs)`` with each run's cumulative samples
    ``[(seconds, bytes), ...]``. Returns the number of lines drawn. Raises ``ImportError``
    without matplotlib, ``OSError`` if ``path`` cannot be written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4.8))
    drawn = 0
    peaks = []
    for i, (label, runs) in enumerate(contenders):
        colour = f"C{i % 10}"
        for j, samples in enumerate(runs):
            xs, ys = rates(samples)
            if not xs:
                continue
            name = label if j == 0 else None
            if len(runs) > 1 and j == 0:
                name = f"{label} ({len(runs)} runs)"
            ax.plot(xs, ys, color=colour, alpha=1.0 if j == 0 else 0.5, linewidth=1.2,
                    label=name)
            peaks.append(max(ys))
            drawn += 1
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("MB/s (10^6 bytes per second)")
    if peaks and min(peaks) > 0 and max(peaks) / min(peaks) > 10:
        ax.set_yscale("log")                    # e.g. TCP beside KCP: both stay readable
    else:
        ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(loc="best", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no samples (every run stalled or was skipped)",
                transform=ax.transAxes, ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn
