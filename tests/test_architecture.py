"""Architecture: no module of the package or the benchmarks reaches another module's private
name. A name with a leading underscore is its module's business and may change with it; what a
neighbour needs is made public and documented by its owner. Static: every module is parsed with
`ast`, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("edge_dse", "bench")

# Private names of third-party code that have no public equivalent, as (file, expression).
ALLOWED = {
    # PyInstaller's documented attribute for the unpacked bundle of a frozen app.
    ("edge_dse/config.py", "sys._MEIPASS"),
    # argparse has no public way to list a parser's subcommands.
    ("edge_dse/desktop.py", "build_parser()._actions"),
    ("edge_dse/desktop.py", "argparse._SubParsersAction"),
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_names(tree: ast.Module) -> set[str]:
    """Every private name the module itself defines: functions, classes, methods, assigned
    names and attributes (self._x = ...). Reaching one of those, on any object, stays inside
    the module (a class's method reading `other._x` of another instance of that class)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {n for n in names if _private(n)}


def violations(path: Path, root: Path = REPO) -> list[str]:
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    own = _own_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            # Nothing a module imports from elsewhere is its own, whatever it defines.
            source = "." * node.level + (node.module or "")
            found += [f"{rel}:{node.lineno}: from {source} import {a.name}" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Import):
            found += [f"{rel}:{node.lineno}: import {a.name}" for a in node.names
                      if any(_private(part) for part in a.name.split("."))]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr in own or (rel, ast.unparse(node)) in ALLOWED:
                continue
            found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    return found


def modules() -> list[Path]:
    return sorted(p for root in ROOTS for p in (REPO / root).rglob("*.py"))


def test_no_module_reaches_another_modules_private_name():
    assert len(modules()) > 20  # the walk found the code
    found = [v for path in modules() for v in violations(path)]
    assert not found, "private names reached from outside their module (make them public in their owner):\n" + "\n".join(found)


def test_the_check_sees_each_kind_of_reach(tmp_path):
    # The rule itself, on a module that breaks it in each way it names and keeps it in the others.
    source = tmp_path / "edge_dse" / "mod.py"
    source.parent.mkdir()
    source.write_text(
        "from .store.catalog import _corrupt, query_terms\n"
        "import edge_dse._hidden\n"
        "from . import data as data_mod\n"
        "class Own:\n"
        "    def _mine(self, other):\n"
        "        return self._x, cls._y, other._mine, self.__dict__, _helper\n"
        "def _helper(lib):\n"
        "    return data_mod._cut, lib._index(), lib.catalog._conn, lib.__class__\n"
    )
    found = sorted(v.split(": ", 1)[1] for v in violations(source, tmp_path))
    assert found == sorted([
        "from .store.catalog import _corrupt",
        "import edge_dse._hidden",
        "data_mod._cut",
        "lib._index",
        "lib.catalog._conn",
    ])


# The files of a library folder, each spelled by the one module that owns it: a neighbour that
# needs one asks its owner (Library.exists, AnnIndex.saved_generation) instead of reading it.
FILE_OWNERS = {"catalog.db": "edge_dse/library.py", "ann.json": "edge_dse/store/ann.py"}


def test_each_library_file_is_named_only_by_its_owner():
    found = []
    for path in modules():
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for name, owner in FILE_OWNERS.items():
                    if rel != owner and (node.value == name or node.value.endswith("/" + name)):
                        found.append(f"{rel}:{node.lineno}: {name!r} (owned by {owner})")
    assert not found, "\n".join(found)
