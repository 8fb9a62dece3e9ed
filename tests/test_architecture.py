"""The package's shape, checked over its source (AST): the stage layout is a rule, not a hope.

- a lower stage never imports a higher one (``RANK``), and two stages of the same rank do not
  import each other;
- no import cycle between modules (imports inside functions included);
- no ``_private`` name of one module is used by another;
- no function over ``MAX_LINES`` lines;
- an import inside a function says why (a comment on its line or the line above), except in
  ``cli.py``, whose commands import their stage only when run so that ``ceusfusion --help`` stays fast.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from paths import ROOT

SRC = ROOT / "src" / "ceusfusion"
MAX_LINES = 80
# stage -> rank; a module may import its own stage and lower ranks only
RANK = {"": 0, "core": 0, "stats": 1, "io": 1, "figures": 1, "ingest": 2, "synthetic": 2, "models": 3,
        "fusion": 4, "evaluate": 4, "segment": 4, "explain": 5, "radiomics": 5, "report": 6, "deploy": 7, "serve": 8, "top": 9}
TOP = {"cli", "study", "config", "demo", "safeguards"}
LAZY_OK = {"cli"}


def modules() -> dict[str, ast.Module]:
    out = {}
    for p in sorted(SRC.rglob("*.py")):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = ast.parse(p.read_text(), str(p))
    return out


def stage_of(mod: str) -> str:
    parts = mod.split(".")[1:]
    if not parts:
        return ""
    return "top" if parts[0] in TOP else parts[0]


def imports(tree: ast.Module, mod: str, is_pkg: bool):
    """(imported module, names, node) for every ceusfusion import, relative ones resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("ceusfusion"):
                    yield a.name, [], node
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            if base.startswith("ceusfusion"):
                yield base, [a.name for a in node.names], node


def _graph():
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    found = []
    for m, tree in mods.items():
        is_pkg = (SRC.parent / Path(*m.split("."))).is_dir()
        for target, names, node in imports(tree, m, is_pkg):
            for n in names:  # `from pkg import submodule`
                if f"{target}.{n}" in mods:
                    graph[m].add(f"{target}.{n}")
                    found.append((m, f"{target}.{n}", [], node))
            if target in mods:
                graph[m].add(target)
                found.append((m, target, names, node))
    return mods, graph, found


def test_lower_stages_never_import_higher_ones():
    _, _, found = _graph()
    bad = []
    for m, target, _, node in found:
        a, b = stage_of(m), stage_of(target)
        if a != b and b != "" and not (a == "top" and b == "top") and RANK[b] >= RANK[a]:
            bad.append(f"{m}:{node.lineno} ({a}) imports {target} ({b})")
    assert not bad, "\n".join(bad)


def test_every_stage_has_a_rank():
    assert {stage_of(m) for m in modules()} <= set(RANK)


def test_no_import_cycle():
    _, graph, _ = _graph()
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            # a package importing its own submodules (its __init__ re-exports) is not a cycle
            real = [c for c in comp if not any(o != c and o.startswith(c + ".") for o in comp)]
            if len(comp) > 1 and len(real) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_no_private_name_crosses_a_module():
    mods, _, found = _graph()
    bad = [f"{m}:{node.lineno} imports {n} from {target}" for m, target, names, node in found for n in names
           if n.startswith("_") and not n.startswith("__")]
    for m, tree in mods.items():  # module._name attribute use on an imported ceusfusion module
        aliases = {a.asname or a.name.split(".")[-1] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and (node.module or "").startswith("ceusfusion") for a in node.names if f"{node.module}.{a.name}" in mods}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{m}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


def test_no_function_over_the_limit():
    long = []
    for m, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{m}.{node.name}: {n} lines")
    assert not long, "\n".join(long)


def test_imports_inside_functions_say_why():
    bad = []
    for p in sorted(SRC.rglob("*.py")):
        if p.stem in LAZY_OK:
            continue
        lines = p.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    here, above = lines[node.lineno - 1], lines[node.lineno - 2] if node.lineno > 1 else ""
                    if "#" not in here and not above.strip().startswith("#"):
                        bad.append(f"{p.relative_to(SRC)}:{node.lineno}: {here.strip()}")
    assert not bad, "imports inside functions without a reason:\n" + "\n".join(sorted(set(bad)))


@pytest.mark.parametrize("rule", ["lower", "private"])
def test_the_checks_can_fail(rule):
    """The checks above catch what they are meant to (on made-up code, so they cannot pass vacuously)."""
    if rule == "lower":
        tree = ast.parse("from ceusfusion.deploy.export import export\n")
        (target, _, _), = list(imports(tree, "ceusfusion.models.train", False))
        assert RANK[stage_of(target)] >= RANK[stage_of("ceusfusion.models.train")]
    else:
        tree = ast.parse("from ceusfusion.models.data import _x\n")
        (_, names, _), = list(imports(tree, "ceusfusion.deploy.predict", False))
        assert names[0].startswith("_")
