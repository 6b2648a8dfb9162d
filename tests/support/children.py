"""Scenarios in a fresh interpreter: the runtime mode, monkey-patching, fork, atexit and
signals each need their own process. :func:`run_child` runs one and returns its JSON report."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import kcpgo
from kcpgo.testing import reap

__all__ = ["ROOT", "CHILD_TIMEOUT", "child_env", "run_child", "reap"]

#: The directory that holds the kcpgo package this test imported: the children import it too.
ROOT = str(Path(kcpgo.__file__).resolve().parents[1])

#: Seconds a child may run before it is killed (every scenario takes a few).
CHILD_TIMEOUT = 40


def child_env(**extra: str) -> Dict[str, str]:
    """The environment of a child: this kcpgo first on the path, unbuffered output, and no
    ``KCPGO_RUNTIME`` inherited from the developer's shell unless a test sets it."""
    env = {k: v for k, v in os.environ.items() if k != "KCPGO_RUNTIME"}
    env.update(PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_child(code: str, *args: str, env: Optional[Dict[str, str]] = None,
              timeout: float = CHILD_TIMEOUT) -> Dict[str, Any]:
    """Run ``code`` (``python -c``) with ``args``; the child's last stdout line is a JSON
    object, returned. Fails if it exits non-zero, prints a traceback, or runs past
    ``timeout`` seconds (``subprocess.run`` kills it then)."""
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT,
                          env=env or child_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {proc.stderr}"
    return json.loads(lines[-1])
