"""kcpgo's glibc malloc thresholds (kcpgo/runtime/malloc.py, docs/deviations.md D55).

Each case runs in a child process: the thresholds are process-wide and can be set once."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
    reason="glibc only")

# A 3 MB buffer: above glibc's default mmap threshold (128 KiB: mmap'ed, unmapped when freed),
# below kcpgo's (4 MiB: taken from the heap, which keeps it when freed, up to 16 MiB). The
# child prints whether its resident size stayed up after the buffer was freed.
CHILD = """
import os, sys
import kcpgo
from kcpgo.runtime import malloc
{setup}
from kcpgo.runtime.scheduler import Runtime
Runtime.current()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
before = rss()
buf = bytearray(3_000_000)
buf[::4096] = b"x" * len(buf[::4096])   # touch every page
del buf
print(malloc.tuned(), rss() - before > 2_000_000)
"""


def _run(setup="", **env):
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "KCPGO_M"))}
    child_env.update(env)
    out = subprocess.run([sys.executable, "-c", CHILD.format(setup=setup)], env=child_env,
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.split()


def test_first_runtime_keeps_batch_buffers():
    assert _run() == ["True", "True"]


def test_glibc_defaults_give_them_back():
    # the same child without the tuning: the freed buffer left the process (glibc's
    # documented mmap threshold), which is what each batch paid before
    assert _run(KCPGO_MALLOC_TUNING="0") == ["False", "False"]
    assert _run("kcpgo.set_malloc_tuning(False)") == ["False", "False"]


def test_process_settings_win():
    # a process that chose its thresholds keeps them (here: glibc's own default)
    assert _run(MALLOC_MMAP_THRESHOLD_="131072")[0] == "False"


def test_switching_off_after_tuning():
    assert _run("malloc.tune(); kcpgo.set_malloc_tuning(False)") == ["False", "False"]


def test_glibc_tunables_win():
    # the same choice made through glibc's tunables (a reviewer found them overridden)
    out = _run(GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072")
    assert out[0] == "False"
