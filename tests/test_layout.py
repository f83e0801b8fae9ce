"""The layout's rules: no import cycle anywhere in the repository (imports inside functions and
under `if TYPE_CHECKING:` included), the worker and the shared core never import the web
framework, and the code cites the repository's own docs."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("app", "bench", "core", "examples", "migrations", "models", "runner", "tests", "worker")
SKIP_PARTS = {".venv", ".git", "__pycache__", "data", "node_modules"}


def python_files() -> Iterator[Path]:
    for top in CODE_DIRS:
        for path in sorted((ROOT / top).rglob("*.py")):
            if not SKIP_PARTS.intersection(path.relative_to(ROOT).parts):
                yield path


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """Repository modules that `path` imports anywhere in its code (functions, TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(dotted: str) -> str | None:  # the longest known prefix of `dotted`
        parts = dotted.split(".")
        while parts:
            candidate = ".".join(parts)
            if candidate in known:
                return candidate
            parts.pop()
        return None

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import name`: the submodule pkg.name if it is one, else pkg itself
            subs = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t for t in subs if t in known]
            if len(targets) < len(subs):
                targets.append(base)
        else:
            continue
        for target in targets:
            module = resolve(target)
            if module is not None:
                found.add(module)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in python_files()}
    known = set(paths)
    return {name: imported_modules(path, name, known) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:  # iterative Tarjan
        nonlocal counter
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"], ["e"]]


def test_the_graph_sees_imports_inside_functions_and_type_checking(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
                      "def f():\n    from pkg import b\n    from .c import x\n")
    found = imported_modules(source, "pkg.mod", {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.mod"})
    assert found == {"pkg.a", "pkg.b", "pkg.c"}


def test_no_import_cycle_in_the_repository() -> None:
    graph = import_graph()
    assert {"app.main", "core.contract", "worker.jobs", "models.training.loop"} <= set(graph)
    assert cycles(graph) == []


@pytest.mark.parametrize("package", ["worker", "core", "runner", "models"])
def test_package_imports_no_web_framework(package: str) -> None:
    """Every module of `package`, imported one by one in a fresh interpreter, leaves `fastapi`
    (and starlette) out of sys.modules."""
    modules = sorted(module_name(p) for p in (ROOT / package).rglob("*.py")
                     if "__pycache__" not in p.parts and p.name != "__main__.py")
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            "web = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette'))\n"
            "print(','.join(web))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{package} imports {out.stdout.strip()}"


def test_code_cites_the_repositorys_own_docs() -> None:
    internal = ("MATH" + ".md", "STYLE" + ".md", "ARCHITECTURE" + ".md", "../" + "shared")
    offenders = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if SKIP_PARTS.intersection(rel.parts) or rel.parts[0] == "docs" or not path.is_file():
            continue
        if path.suffix not in {".py", ".md", ".toml", ".yml", ".yaml", ".ini", ".txt", ""}:
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{rel}: {name}" for name in internal if name in text]
    assert offenders == []
    assert (ROOT / "docs" / "math.md").is_file() and (ROOT / "docs" / "architecture.md").is_file()
