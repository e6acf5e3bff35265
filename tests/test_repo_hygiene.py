"""The repository as a newcomer reads it: every file a docstring, comment or doc names exists;
the package's import graph has no cycle; no module imports another module's private name."""

from __future__ import annotations

import ast
import os
import pathlib
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("qwenlong_jax", "kernels", "configs")
# A mention of a repository file: a path under one of our directories (`rl/packing.py`,
# `configs/default.py`, `docs/design.md`) or a markdown document by name (`README.md`).
OUR_DIRS = (
    "qwenlong_jax",
    "configs",
    "kernels",
    "tests",
    "docs",
    "rl",
    "data",
    "models",
    "sampling",
    "eval",
    "rewards",
    "bench",
    "assets",
)
PATH_RE = re.compile(
    r"(?<![\w./<-])((?:(?:{dirs})/)(?:[\w-]+/)*[\w-]+\.(?:py|md|json|txt)|[A-Z][\w-]*\.md)(?![\w/-])".format(
        dirs="|".join(OUR_DIRS)
    )
)
PLACEHOLDERS = {"configs/x.py", "configs/X.py", "configs/no_such_config.py"}  # examples, not citations


def _repo_files(exts):
    for top in PACKAGES + ("tests", "docs"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            if "__pycache__" in dirpath or "/assets" in dirpath or "/fixtures" in dirpath:
                continue
            for f in files:
                if f.endswith(exts):
                    yield os.path.join(dirpath, f)
    yield os.path.join(ROOT, "README.md")


def _resolves(mention: str, src: str) -> bool:
    cands = [os.path.join(ROOT, mention), os.path.join(os.path.dirname(src), mention)]
    cands += [os.path.join(ROOT, p, mention) for p in PACKAGES + ("docs", "tests")]
    return any(os.path.exists(c) for c in cands)


def test_every_named_file_exists():
    missing = []
    for src in _repo_files((".py", ".md")):
        with open(src, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                for m in PATH_RE.finditer(line):
                    mention = m.group(1)
                    if mention not in PLACEHOLDERS and not _resolves(mention, src):
                        missing.append(f"{os.path.relpath(src, ROOT)}:{lineno}: {mention}")
    assert not missing, "files named but not in the repository:\n" + "\n".join(missing)


def test_team_references_are_not_cited():
    """The code cites the product's own docs (docs/), not files outside the repository."""
    bad = []
    for src in _repo_files((".py", ".md")):
        if src.endswith("test_repo_hygiene.py"):
            continue
        with open(src, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if re.search(r"\b(DESIGN|RECIPE|REWARD_RULES)\.md\b", line):
                    bad.append(f"{os.path.relpath(src, ROOT)}:{lineno}")
    assert not bad, "cite docs/design.md, docs/recipe.md or docs/rewards.md instead:\n" + "\n".join(bad)


def _modules():
    mods = {}
    for pkg in ("qwenlong_jax", "kernels"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
            if "__pycache__" in dirpath:
                continue
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    if name.endswith(".__init__"):
                        name = name[: -len(".__init__")]
                    mods[name] = path
    return mods


def _imports(path: str, name: str, mods: dict):
    """(imported module, imported names) pairs of a module, top-level and function-level alike."""
    tree = ast.parse(pathlib.Path(path).read_text(encoding="utf-8"))
    is_pkg = path.endswith("__init__.py")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                parts = parts if is_pkg else parts[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            names = tuple(a.name for a in node.names)
            sub = [f"{base}.{n}" for n in names if f"{base}.{n}" in mods]
            out += [(s, ()) for s in sub]
            out.append((base, tuple(n for n in names if f"{base}.{n}" not in mods)))
    return [(m, n) for m, n in out if m in mods]


def test_import_graph_has_no_cycle():
    mods = _modules()
    graph = {m: sorted({t for t, _ in _imports(p, m, mods) if t != m}) for m, p in mods.items()}
    # A package's __init__ importing its own submodules is how it re-exports: not a cycle.
    graph = {
        m: [t for t in ts if not (t.startswith(m + ".") and mods[m].endswith("__init__.py"))] for m, ts in graph.items()
    }
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t) :] + [t]))
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_private_names_across_modules():
    mods = _modules()
    bad = []
    for m, p in mods.items():
        for target, names in _imports(p, m, mods):
            for n in names:
                if n.startswith("_") and not n.startswith("__") and target != m:
                    bad.append(f"{m} imports {target}.{n}")
        # module._name attribute access on an imported module alias
        src = pathlib.Path(p).read_text(encoding="utf-8")
        tree = ast.parse(src)
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for a in node.names:
                    full = f"{node.module}.{a.name}" if node.module else a.name
                    if full in mods:
                        aliases[a.asname or a.name] = full
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in mods:
                        aliases[a.asname or a.name.split(".")[0]] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and aliases[node.value.id] != m
            ):
                bad.append(f"{m} uses {aliases[node.value.id]}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(sorted(set(bad)))
