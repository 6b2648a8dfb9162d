"""Every document the code cites is in the repository: each "§x.y" in kcpgo/, tests/ and
tools/ is a heading of docs/protocol.md, and each docs/*.md file named in the code exists."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "protocol.md"
NUM = r"\d+(?:\.\d+)*"
#: "§2.2(c), 2.4, 2.6.1", "§2.4-2.7": lists and ranges after one § sign
CITE = re.compile(r"§(" + NUM + r")(?:\([a-z]\))?((?:\s*(?:,|-|–|and)\s*" + NUM +
                  r"(?![\d.]*\s*(?:ms|s|MB|%)))*)")


def sources():
    for d in ("kcpgo", "tests", "tools", "examples"):
        for path in sorted((ROOT / d).rglob("*")):
            if path.suffix in (".py", ".go") and "vectors" not in path.parts:
                yield path


def test_every_cited_section_is_a_heading():
    heads = set(re.findall(r"^#{2,4} (" + NUM + r")\.?\s", DOC.read_text(), re.M))
    assert {"1.9", "2.6.3", "5.2"} <= heads
    missing, count = [], 0
    for path in sources():
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            context = " ".join(lines[max(0, i - 1):i + 1])
            for m in CITE.finditer(line):
                if "Twofish paper" in context:      # §4.3.5 / §4.3.7 of the Twofish paper
                    continue
                for n in [m.group(1).rstrip(".")] + re.findall(NUM, m.group(2) or ""):
                    count += 1
                    if n not in heads:
                        missing.append(f"{path.relative_to(ROOT)}:{i + 1}: §{n}")
    assert count > 100                              # the scan sees the citations
    assert not missing, "sections cited but not in docs/protocol.md:\n" + "\n".join(missing)


def test_cited_documents_exist():
    named = set()
    for path in sources():
        named.update(re.findall(r"\b(docs/[\w.-]+\.md)\b", path.read_text()))
    assert "docs/protocol.md" in named
    assert [n for n in sorted(named) if not (ROOT / n).exists()] == []
