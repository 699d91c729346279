"""The house plan, checked against the code: dependencies one way, no cycles, no private names across
modules, no re-exports, no framework in the core, the same file names in every backend folder, and
tests that import no other test module. docs/architecture.md draws the same order."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

# Packages of harness from the bottom up: a module may import its own package and those below it, never one
# beside or above it. harness.backends is backends/ at the repository root, installed under harness.
RANKS = (
    ("harness", "harness.errors"),
    ("harness.config", "harness.tolerances", "harness.progress", "harness.machine"),
    ("harness.runs",),
    ("harness.model", "harness.data"),
    ("harness.backend",),
    ("harness.backends",),
    ("harness.reference",),
    ("harness.evaluators",),
    ("harness.training",),
    ("harness.report",),
    ("harness.compare",),
    ("harness.parity", "harness.bench", "harness.sweep"),
    ("harness.port",),
    ("harness.cli",),
    ("harness.__main__",),
)
RANK = {unit: rank for rank, units in enumerate(RANKS) for unit in units}
FRAMEWORKS = ("torch", "mindspore", "torchvision", "torch_npu")
# The one framework import outside backends/: downloading a dataset for online users (an optional extra).
FRAMEWORK_EXEMPT = {("harness.data.registry", "torchvision")}
BACKEND_FILES = {"__init__.py", "backend.py", "build.py", "trainer.py", "forward.py", "export.py", "bare.py"}


def _modules() -> dict[str, Path]:
    found = {}
    for root, prefix in ((REPO_ROOT / "harness", "harness"), (REPO_ROOT / "backends", "harness.backends")):
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((prefix, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import of the file, nested ones included."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            out += [(sub, [], node.lineno) for sub in submodules]  # `from . import spread` imports a module
            out.append((target, [n for n in names if f"{target}.{n}" not in MODULES], node.lineno))
    return out


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "harness" and len(parts) > 1 else parts[0]


def _graph() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in _imports(name, path) if target in MODULES and target != name}
            for name, path in MODULES.items()}


def test_every_package_has_a_rank():
    missing = sorted({_unit(name) for name in MODULES} - set(RANK))
    assert not missing, f"add {missing} to RANKS (and to docs/architecture.md)"


def test_dependencies_run_one_way():
    wrong = []
    for name, path in MODULES.items():
        for target, _, line in _imports(name, path):
            if target not in MODULES or _unit(target) == _unit(name):
                continue
            if RANK[_unit(target)] >= RANK[_unit(name)]:
                wrong.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {target}")
    assert not wrong, "imports against the order of RANKS:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph, state, stack, cycles = _graph(), {}, [], []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_name_crosses_a_module():
    crossing = [f"{path.relative_to(REPO_ROOT)}:{line} takes {n} from {target}"
                for name, path in MODULES.items() for target, names, line in _imports(name, path)
                if target in MODULES and target != name for n in names if n.startswith("_") and n != "__version__"]
    assert not crossing, "\n".join(crossing)


def test_package_faces_re_export_nothing():
    faces = [f"{path.relative_to(REPO_ROOT)} imports {target}" for name, path in MODULES.items()
             if path.name == "__init__.py" for target, _, _ in _imports(name, path) if target.startswith("harness")]
    assert not faces, "\n".join(faces)


def test_the_core_imports_no_framework():
    found = [f"{path.relative_to(REPO_ROOT)}:{line} imports {target}" for name, path in MODULES.items()
             if not name.startswith("harness.backends") for target, _, line in _imports(name, path)
             if target.split(".")[0] in FRAMEWORKS and (name, target.split(".")[0]) not in FRAMEWORK_EXEMPT]
    assert not found, "\n".join(found)


def test_at_most_eight_modules_at_the_top_of_harness():
    top = sorted(path.name for path in (REPO_ROOT / "harness").glob("*.py"))
    assert len(top) <= 8, top


@pytest.mark.parametrize("backend", ["pytorch", "mindspore"])
def test_every_backend_folder_uses_the_same_file_names(backend):
    files = {path.name for path in (REPO_ROOT / "backends" / backend).glob("*.py")}
    assert BACKEND_FILES <= files, f"backends/{backend} lacks {sorted(BACKEND_FILES - files)}"


def test_no_test_module_imports_another():
    found = []
    for path in (REPO_ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            found += [f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {m}" for m in modules
                      if m.startswith("tests") and m not in ("tests.support",)
                      or (isinstance(node, ast.ImportFrom) and node.level)]
    assert not found, "\n".join(found)


def test_the_checks_can_fail(tmp_path):
    """The walker sees a relative import, a private name and a module imported with ``from . import``."""
    module = tmp_path / "probe.py"
    module.write_text("from ..compare.matrix import _private\nfrom . import folder\n")
    imports = _imports("harness.runs.probe", module)
    assert ("harness.compare.matrix", ["_private"], 1) in imports
    assert ("harness.runs.folder", [], 2) in imports
    assert RANK[_unit("harness.compare.matrix")] > RANK[_unit("harness.runs.probe")]


def test_the_architecture_doc_names_every_module():
    text = (REPO_ROOT / "docs" / "architecture.md").read_text()
    faces = {path for path in MODULES.values()  # a package face that holds only its docstring: the rank table names it
             if path.name == "__init__.py" and len(ast.parse(path.read_text()).body) == 1}
    missing = sorted(str(path.relative_to(REPO_ROOT)) for path in MODULES.values()
                     if path not in faces and f"`{path.relative_to(REPO_ROOT)}`" not in text)
    assert not missing, f"docs/architecture.md does not name {missing}"
