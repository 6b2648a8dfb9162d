"""Every document the code cites is in the repository: each "§x.y" in kcpgo/, tests/ and
tools/ is a heading of docs/protocol.md, each "docs/kcptun.md §x.y" (or "kcptun.md §x.y") a
heading of docs/kcptun.md, and each docs/*.md file named in the code exists."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "protocol.md"
#: Documents a citation can name in front of its § sign; a bare "§x.y" means protocol.md.
DOCS = {"protocol": DOC, "kcptun": ROOT / "docs" / "kcptun.md"}
NUM = r"\d+(?:\.\d+)*"
#: "§2.2(c), 2.4, 2.6.1", "§2.4-2.7": lists and ranges after one § sign;
#: "docs/kcptun.md §4.8", "kcptun.md §4.1-4.3": the same in another document
CITE = re.compile(r"(?:(?:docs/)?(kcptun|protocol)\.md\s+)?"
                  r"§(" + NUM + r")(?:\([a-z]\))?((?:\s*(?:,|-|–|and)\s*" + NUM +
                  r"(?![\d.]*\s*(?:ms|s|MB|%)))*)")


def sources():
    for d in ("kcpgo", "tests", "tools", "examples"):
        for path in sorted((ROOT / d).rglob("*")):
            if path.suffix in (".py", ".go") and "vectors" not in path.parts:
                yield path


def headings(path: Path) -> set:
    return set(re.findall(r"^#{2,4} (" + NUM + r")\.?\s", path.read_text(), re.M))


def test_every_cited_section_is_a_heading():
    heads = {name: headings(path) for name, path in DOCS.items()}
    assert {"1.9", "2.6.3", "5.2"} <= heads["protocol"]
    assert {"2", "3.1", "3.2", "4.1", "4.8", "4.10", "6", "11"} <= heads["kcptun"]
    missing, count = [], {name: 0 for name in DOCS}
    for path in sources():
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            context = " ".join(lines[max(0, i - 1):i + 1])
            for m in CITE.finditer(line):
                if "Twofish paper" in context:      # §4.3.5 / §4.3.7 of the Twofish paper
                    continue
                doc = m.group(1) or "protocol"
                for n in [m.group(2).rstrip(".")] + re.findall(NUM, m.group(3) or ""):
                    count[doc] += 1
                    if n not in heads[doc]:
                        missing.append(f"{path.relative_to(ROOT)}:{i + 1}: {doc}.md §{n}")
    assert count["protocol"] > 100 and count["kcptun"] > 20    # the scan sees the citations
    assert not missing, "sections cited but not in their document:\n" + "\n".join(missing)


def test_citation_parsing():
    """Which document and which numbers a citation names."""
    def cites(text):
        return [(m.group(1) or "protocol", [m.group(2)] + re.findall(NUM, m.group(3) or ""))
                for m in CITE.finditer(text)]
    assert cites("(docs/kcptun.md §4.8) and §1.9") == [("kcptun", ["4.8"]),
                                                       ("protocol", ["1.9"])]
    assert cites("kcptun.md §4.1-4.3, §2.4, 2.6") == [("kcptun", ["4.1", "4.3"]),
                                                     ("protocol", ["2.4", "2.6"])]
    assert cites("docs/protocol.md §5.2") == [("protocol", ["5.2"])]


def test_cited_documents_exist():
    named = set()
    for path in sources():
        named.update(re.findall(r"\b(docs/[\w.-]+\.md)\b", path.read_text()))
    assert "docs/protocol.md" in named
    assert [n for n in sorted(named) if not (ROOT / n).exists()] == []
