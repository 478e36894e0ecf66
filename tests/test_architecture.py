"""Imports run one way: maths -> models -> world -> loop -> faces (DESIGN.md, "Layers").

A module may import from its own layer or an earlier one, never from a later one, and the
module import graph has no cycle. Every ``import`` statement counts, wherever it is: at the top,
inside a function (a lazy import), or under ``if TYPE_CHECKING:`` (a type-only import from a
later layer is still a dependency on it). Python itself runs a package's ``__init__`` before any
of its modules; that is the import machinery, not a dependency a module writes, so it is not an
edge here.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "dynacppo_lite"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

#: The layers, first to last, and their modules (a subpackage is named once and covers all of
#: its modules). The one list of them; DESIGN.md shows the same table. The package's own
#: ``__init__`` is a face: it may re-export from any layer.
LAYERS: dict[str, tuple[str, ...]] = {
    "maths": ("gae", "estep", "mstep", "lagrangian"),
    "models": ("nets", "dynamics", "buffer"),
    "world": ("envs",),
    "loop": ("config", "seeding", "schedules", "cost_estimate", "cost_pool", "cost_control", "runlog",
             "batch", "plugins", "rollout", "imagine", "train", "evaluation"),
    "faces": ("__init__", "__main__", "cli", "bench", "plots", "figures", "widgets", "exercises",
              "course"),
}


@dataclass(frozen=True)
class Import:
    """One import statement of ``source`` (a module name relative to the package, "" for the
    package itself) that reaches the package module ``target``."""

    source: str
    target: str
    file: str
    line: int
    statement: str

    def __str__(self) -> str:
        return f"{PACKAGE}/{self.file}:{self.line}: `{self.statement}`"


def module_name(file: str) -> str:
    """``envs/make.py`` -> ``envs.make``; ``envs/__init__.py`` -> ``envs``; ``__init__.py`` -> ``""``."""
    parts = file.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The package module that ``name`` (dotted, relative to the package) lives in: the longest
    prefix that is a module, so ``envs.make.make_env`` -> ``envs.make``."""
    parts = name.split(".") if name else []
    for end in range(len(parts), -1, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _absolute(node: ast.ImportFrom, source: str, is_package: bool) -> str | None:
    """The absolute dotted module of a ``from ... import`` (``None`` outside the package)."""
    if node.level == 0:
        return node.module
    package = source.split(".") if source else []
    if not is_package:
        package = package[:-1]
    package = package[:len(package) - (node.level - 1)]
    return ".".join([PACKAGE, *package, *([node.module] if node.module else [])])


def import_edges(sources: dict[str, str]) -> list[Import]:
    """Every import of a package module by a package module.

    ``sources`` maps file paths relative to the package (``envs/make.py``) to their code.
    """
    modules = {module_name(f) for f in sources}
    prefix = PACKAGE + "."
    edges = []
    for file, code in sources.items():
        source = module_name(file)
        for node in ast.walk(ast.parse(code, filename=file)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, source, file.endswith("__init__.py"))
                if base is None:
                    continue
                # ``from pkg import x``: x may be a submodule or a name defined in pkg.
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                if name != PACKAGE and not name.startswith(prefix):
                    continue
                target = _resolve(name.removeprefix(PACKAGE).removeprefix("."), modules)
                if target is not None and target != source:
                    edges.append(Import(source, target, file, node.lineno, ast.unparse(node)))
    return edges


def layer_of(module: str, layers: dict[str, tuple[str, ...]]) -> int | None:
    """Index of the layer holding ``module`` (by its first component), or None."""
    top = module.split(".")[0] or "__init__"
    for i, members in enumerate(layers.values()):
        if top in members:
            return i
    return None


def architecture_errors(sources: dict[str, str], layers: dict[str, tuple[str, ...]]) -> list[str]:
    """What breaks the rules: unclassified modules, imports from a later layer, a cycle."""
    names = list(layers)
    errors = []
    for file in sorted(sources):
        if layer_of(module_name(file), layers) is None:
            top = module_name(file).split(".")[0]
            errors.append(f"{PACKAGE}/{file} is in no layer: add {top!r} to one of LAYERS in "
                          f"tests/test_architecture.py (and to the table in DESIGN.md)")
    present = {module_name(f).split(".")[0] or "__init__" for f in sources}
    for layer, members in layers.items():
        errors += [f"LAYERS[{layer!r}] lists {m!r}, which is not a module of {PACKAGE}"
                   for m in members if m not in present]
    edges = import_edges(sources)
    for edge in edges:
        src, dst = layer_of(edge.source, layers), layer_of(edge.target, layers)
        if src is not None and dst is not None and dst > src:
            errors.append(f"{edge} imports from a later layer: {edge.source or '__init__'} "
                          f"({names[src]}) -> {edge.target} ({names[dst]})")
    # Report every cycle: drop the closing import of each one found and search again.
    while cycle := find_cycle(edges):
        chain = "\n  ".join(str(edge) for edge in cycle)
        errors.append(f"import cycle {' -> '.join([*(e.source for e in cycle), cycle[0].source])}:"
                      f"\n  {chain}")
        closing = (cycle[-1].source, cycle[-1].target)
        edges = [e for e in edges if (e.source, e.target) != closing]
    return errors


def find_cycle(edges: list[Import]) -> list[Import]:
    """One cycle of the import graph as its edges, or [] (depth-first search)."""
    out: dict[str, list[Import]] = {}
    for edge in edges:
        out.setdefault(edge.source, []).append(edge)
    done: set[str] = set()
    path: list[Import] = []
    on_path: list[str] = []

    def visit(module: str) -> list[Import]:
        on_path.append(module)
        for edge in out.get(module, []):
            if edge.target in on_path:
                return path[on_path.index(edge.target):] + [edge]
            if edge.target not in done:
                path.append(edge)
                found = visit(edge.target)
                if found:
                    return found
                path.pop()
        on_path.pop()
        done.add(module)
        return []

    for module in sorted(out):
        if module not in done:
            found = visit(module)
            if found:
                return found
    return []


def package_sources() -> dict[str, str]:
    return {p.relative_to(PACKAGE_DIR).as_posix(): p.read_text() for p in PACKAGE_DIR.rglob("*.py")}


# --------------------------------------------------------------------------- the package
def test_imports_run_one_way_without_cycles() -> None:
    errors = architecture_errors(package_sources(), LAYERS)
    assert not errors, "\n".join(errors)


def test_the_trainer_and_the_figures_depend_the_right_way() -> None:
    """The two cycles this test was written against stay broken."""
    edges = {(e.source, e.target) for e in import_edges(package_sources())}
    assert ("train", "imagine") in edges and ("imagine", "train") not in edges
    assert ("figures", "plots") in edges and ("plots", "figures") not in edges
    assert ("cli", "config") in edges and ("figures", "cli") not in edges


# --------------------------------------------------------------------------- the checker
TOY_LAYERS = {"low": ("a", "pkg"), "high": ("b", "__init__")}


def toy(**files: str) -> dict[str, str]:
    """A toy package: every module of TOY_LAYERS, empty unless ``files`` (by path) gives code."""
    sources = {"__init__.py": "", "a.py": "", "b.py": "", "pkg/__init__.py": "", "pkg/m.py": ""}
    return sources | files


def test_clean_sources_pass() -> None:
    sources = toy(**{"b.py": "import dynacppo_lite.a\nfrom dynacppo_lite.pkg import m\n",
                     "pkg/m.py": "from .. import a\n"})
    assert architecture_errors(sources, TOY_LAYERS) == []


@pytest.mark.parametrize("code", [
    "import dynacppo_lite.b\n",
    "from dynacppo_lite import b\n",
    "from dynacppo_lite.b import thing\n",
    "from . import b\n",
    "def f():\n    from dynacppo_lite.b import thing\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dynacppo_lite.b import Thing\n",
])
def test_an_import_from_a_later_layer_is_caught(code: str) -> None:
    errors = architecture_errors(toy(**{"a.py": code}), TOY_LAYERS)
    assert len(errors) == 1
    assert errors[0].startswith(f"{PACKAGE}/a.py:") and "later layer" in errors[0]
    assert "a (low) -> b (high)" in errors[0] and "import" in errors[0]


def test_relative_imports_resolve_from_the_package() -> None:
    edges = import_edges(toy(**{"pkg/m.py": "from . import x\nfrom .. import b\n", "pkg/x.py": "",
                                "pkg/__init__.py": "from .m import y\n"}))
    assert {(e.source, e.target) for e in edges} == {("pkg.m", "pkg.x"), ("pkg.m", "b"), ("pkg", "pkg.m")}


def test_a_cycle_within_a_layer_is_caught() -> None:
    errors = architecture_errors(toy(**{"a.py": "from dynacppo_lite.pkg.m import f\n",
                                        "pkg/m.py": "def g():\n    import dynacppo_lite.a\n"}),
                                 TOY_LAYERS)
    assert len(errors) == 1 and errors[0].startswith("import cycle a -> pkg.m -> a")
    assert f"{PACKAGE}/pkg/m.py:2: `import dynacppo_lite.a`" in errors[0]


def test_an_unclassified_module_must_be_added_to_a_layer() -> None:
    errors = architecture_errors(toy(**{"cost_estimate.py": "import numpy\n"}), TOY_LAYERS)
    assert errors == [f"{PACKAGE}/cost_estimate.py is in no layer: add 'cost_estimate' to one of "
                      "LAYERS in tests/test_architecture.py (and to the table in DESIGN.md)"]


def test_imports_outside_the_package_are_ignored() -> None:
    code = "import numpy\nimport dynacppo_lite_extra\nfrom os import path\n"
    assert import_edges(toy(**{"a.py": code})) == []


def test_design_note_shows_the_same_layers() -> None:
    """DESIGN.md's table ``| 1 maths | `gae.py` ... |`` lists exactly LAYERS, in order."""
    design = (PACKAGE_DIR.parent / "DESIGN.md").read_text()
    rows = re.findall(r"^\| (\d) (\w+) \| (.*?) \|", design, flags=re.M)
    table = {name: tuple(m.removesuffix(".py").rstrip("/") for m in re.findall(r"`([^`]+)`", cells))
             for _, name, cells in rows}
    assert [int(i) for i, _, _ in rows] == list(range(1, len(LAYERS) + 1))
    assert table == LAYERS
