"""The package's layering, checked by walking the AST of every kcpgo module (README "Layout").

* the protocol core (``kcpgo.codec``, ``kcpgo.sansio``, ``kcpgo.snmp``) imports no I/O or clock
  module (gevent, socket, select, selectors, time, asyncio, threading's timers are not used);
* each layer imports only the layers below it (the table ``MAY_IMPORT``);
* smux (``kcpgo.sansio.smux*``) imports nothing outside the standard library and itself;
* there is no import cycle between kcpgo modules (module-level imports);
* nothing outside the core reads a private attribute of ``KCP``;
* no module is longer than 600 lines.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "kcpgo"

#: Stdlib modules that do I/O or read the clock: forbidden in the protocol core.
IO_MODULES = {"gevent", "greenlet", "socket", "select", "selectors", "time", "asyncio",
              "ssl", "subprocess"}

#: Layer of a kcpgo module (by prefix, longest first) -> the kcpgo layers it may import.
LAYERS: Dict[str, str] = {
    "kcpgo.codec": "codec",
    # snappy framing (docs/kcptun.md §3): pure, the stdlib and cramjam only
    "kcpgo.codec.snappy": "codec",
    "kcpgo.snmp": "snmp",
    "kcpgo.address": "address",
    "kcpgo.sansio": "sansio",
    # smux (docs/kcptun.md §4): pure, the standard library and its own two modules only
    "kcpgo.sansio.smux": "smux",
    "kcpgo.sansio.smux_frames": "smux",
    "kcpgo.options": "options",
    "kcpgo.runtime": "runtime",
    "kcpgo.facade": "facade",
    "kcpgo.server": "integration",
    "kcpgo.server_options": "integration",
    "kcpgo.server_workers": "integration",
    "kcpgo.monkey": "integration",
    "kcpgo.testing": "testing",
    # the command line (python -m kcpgo ...; docs/kcptun.md §5 for the tunnel): on top of all
    "kcpgo.cli": "cli",
    "kcpgo.__main__": "cli",
    "kcpgo": "package",
}
MAY_IMPORT: Dict[str, Set[str]] = {
    "codec": {"codec"},
    "snmp": set(),
    # address parsing and validation: the standard library only, importable by everyone above
    "address": set(),
    "smux": {"smux"},
    "sansio": {"codec", "snmp", "sansio", "smux"},
    "options": {"codec", "snmp", "sansio", "smux", "address"},
    "runtime": {"sansio", "smux", "snmp", "runtime", "address"},
    "facade": {"runtime", "sansio", "smux", "options", "snmp", "codec", "facade", "address"},
    "integration": {"facade", "runtime", "sansio", "smux", "options", "snmp", "codec",
                    "package", "integration", "address"},
    "testing": {"sansio", "smux", "codec", "snmp", "runtime", "testing", "address"},
    "cli": {"facade", "runtime", "sansio", "smux", "options", "snmp", "codec", "package",
            "integration", "address", "testing", "cli"},
    # the package's __init__: its own names at module level, the socket API and the runtime
    # mode (set_runtime/get_runtime) lazily
    "package": {"codec", "snmp", "sansio", "smux", "options", "facade", "address", "runtime"},
}
CORE = ("codec", "sansio", "snmp", "smux")
MAX_LINES = 600
#: Layers that may import nothing but the standard library (and the layers in MAY_IMPORT).
STDLIB_ONLY = ("smux",)
STDLIB = getattr(sys, "stdlib_module_names", None) or {
    "__future__", "struct", "typing", "collections", "dataclasses", "enum", "itertools"}


def modules() -> Iterator[Tuple[str, Path]]:
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def layer_of(name: str) -> str:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{name} is in no layer; add it to LAYERS")


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports(name: str, path: Path, top_level_only: bool = False,
            source: str = "") -> List[Tuple[str, int]]:
    """(imported module, line) for every import in the file; relative imports resolved, and
    ``from pkg import sub`` counted as importing ``pkg.sub`` when ``sub`` is a module.
    ``top_level_only``: skip imports inside functions and ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(source or path.read_text(), str(path))
    package = name if is_package(path) else name.rpartition(".")[0]
    out: List[Tuple[str, int]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = True
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = True
            if not (top_level_only and inner):
                if isinstance(child, ast.Import):
                    out.extend((a.name, child.lineno) for a in child.names)
                elif isinstance(child, ast.ImportFrom):
                    if child.level:
                        base = package.split(".")
                        base = base[:len(base) - child.level + 1]
                        mod = ".".join(base + ([child.module] if child.module else []))
                    else:
                        mod = child.module or ""
                    for a in child.names:
                        sub = f"{mod}.{a.name}"
                        if (ROOT / (sub.replace(".", "/") + ".py")).exists() or \
                                (ROOT / sub.replace(".", "/") / "__init__.py").exists():
                            out.append((sub, child.lineno))
                        else:
                            out.append((mod, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return out


ALL = list(modules())


def check_layer(name: str, path: Path, found: List[Tuple[str, int]]) -> None:
    layer = layer_of(name)
    allowed = MAY_IMPORT[layer]
    for mod, line in found:
        top = mod.split(".")[0]
        if layer in CORE:
            assert top not in IO_MODULES, f"{path}:{line}: core module {name} imports {mod}"
        if layer in STDLIB_ONLY and top != "kcpgo":
            assert top in STDLIB, f"{path}:{line}: {name} ({layer}) imports non-stdlib {mod}"
        if top != "kcpgo":
            continue
        target = layer_of(mod)
        assert target in allowed, (f"{path}:{line}: {name} ({layer}) imports {mod} ({target}); "
                                   f"{layer} may import {sorted(allowed)}")


@pytest.mark.parametrize("name,path", ALL, ids=[n for n, _ in ALL])
def test_layer_imports(name: str, path: Path) -> None:
    check_layer(name, path, imports(name, path))


def test_no_import_cycle() -> None:
    graph = {name: {m for m, _ in imports(name, path, top_level_only=True)
                    if m.startswith("kcpgo")} for name, path in ALL}
    state: Dict[str, int] = {}
    stack: List[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)


def kcp_private_names() -> Set[str]:
    names: Set[str] = set()
    for fname in ("kcp.py", "kcp_input.py", "kcp_output.py"):
        tree = ast.parse((PKG / "sansio" / fname).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "self" and node.attr.startswith("_") \
                    and not node.attr.startswith("__"):
                names.add(node.attr)
            elif isinstance(node, ast.FunctionDef) and node.name.startswith("_") \
                    and not node.name.startswith("__"):
                names.add(node.name)
    return names


def test_nothing_outside_the_core_reads_kcp_privates() -> None:
    private = kcp_private_names()
    assert {"_acks", "_timers", "_holes"} <= private      # the check sees KCP's state
    outside = [p for n, p in ALL if layer_of(n) not in CORE]
    outside += sorted((ROOT / "tools").rglob("*.py")) + sorted((ROOT / "examples").glob("*.py"))
    for path in outside:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                assert node.attr not in private or (
                    isinstance(node.value, ast.Name) and node.value.id == "self"), \
                    f"{path}:{node.lineno}: reads KCP's private {node.attr}"
                assert not (node.attr == "kcp" and layer_of_path(path) in ("runtime", "facade",
                                                                           "integration")), \
                    f"{path}:{node.lineno}: {layer_of_path(path)} reaches into Connection.kcp"


def layer_of_path(path: Path) -> str:
    try:
        rel = path.relative_to(PKG)
    except ValueError:
        return "tool"
    name = ".".join(("kcpgo",) + rel.with_suffix("").parts).removesuffix(".__init__")
    return layer_of(name)


@pytest.mark.parametrize("name,path", ALL, ids=[n for n, _ in ALL])
def test_module_size(name: str, path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path} has {lines} lines (limit {MAX_LINES}): split a concept out"


def test_the_checker_catches_a_violation() -> None:
    """The AST walk sees relative, lazy and TYPE_CHECKING imports; a core module importing the
    clock or the runtime fails the check."""
    src = ("from ..runtime import clock\nimport time\n"
           "def f():\n    from ..facade import socket\n"
           "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import kcp\n")
    name, where = "kcpgo.sansio._probe", PKG / "sansio" / "_probe.py"
    found = imports(name, where, source=src)
    top = {m for m, _ in imports(name, where, True, source=src)}
    assert {"kcpgo.runtime.clock", "time", "kcpgo.facade.socket", "kcpgo.sansio.kcp"} \
        <= {m for m, _ in found}
    assert "kcpgo.facade.socket" not in top and "kcpgo.sansio.kcp" not in top
    with pytest.raises(AssertionError, match="imports time"):
        check_layer(name, where, [("time", 2)])
    with pytest.raises(AssertionError, match="may import"):
        check_layer(name, where, [("kcpgo.runtime.clock", 1)])
    smux = "kcpgo.sansio.smux"
    with pytest.raises(AssertionError, match="non-stdlib"):
        check_layer(smux, PKG / "sansio" / "smux.py", [("cramjam", 1)])
    with pytest.raises(AssertionError, match="may import"):
        check_layer(smux, PKG / "sansio" / "smux.py", [("kcpgo.sansio.kcp", 1)])
