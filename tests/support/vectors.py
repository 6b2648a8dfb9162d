"""Loading the golden vectors committed under tests/vectors (copied from shared/vectors)."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


@functools.lru_cache(maxsize=None)
def load(name: str) -> Any:
    """Parsed JSON of ``tests/vectors/<name>``."""
    with open(VECTORS / name, encoding="utf-8") as f:
        return json.load(f)


def h(x: str) -> bytes:
    return bytes.fromhex(x)
