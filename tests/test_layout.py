"""The package's shape: every module imports on its own, no module imports itself through others, modules and
functions stay small, and the wheel carries every subpackage and the built-in model."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import infinitystar

SRC = Path(infinitystar.__file__).resolve().parent
REPO = SRC.parents[1]
#: modules that are entry points rather than importable units
ENTRY_POINTS = {"infinitystar.cli.__main__"}
MAX_MODULE_LINES = 460
MAX_FUNCTION_LINES = 65
#: a longer function says why in its docstring with this phrase
LONG_FUNCTION_MARK = "Longer than most"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks (imports there never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at module level or inside functions (not under TYPE_CHECKING)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    assert len(graph) > 100  # the whole package was read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(set(_modules()) - ENTRY_POINTS)
    code = (
        "import importlib, json, sys, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "failed = {}\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except BaseException as exc:\n"
        "        failed[name] = f'{type(exc).__name__}: {exc}'\n"
        "print(json.dumps(failed))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, json.dumps(names)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}


def test_modules_and_functions_stay_small():
    """Small modules with one concern; a longer function must say why (``Longer than most ...`` in its docstring)."""
    too_long_modules, too_long_functions = [], []
    for name, path in _modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long_modules.append(f"{name} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and LONG_FUNCTION_MARK not in (ast.get_docstring(node) or ""):
                    too_long_functions.append(f"{name}.{node.name} ({n} lines)")
    assert not too_long_modules, too_long_modules
    assert not too_long_functions, too_long_functions


def test_every_folder_of_the_package_is_a_package():
    """setuptools finds only folders with ``__init__.py``: a missing one works in an editable install and is
    absent from the wheel."""
    missing = [
        str(d.relative_to(SRC))
        for d in SRC.rglob("*")
        if d.is_dir() and d.name != "__pycache__" and "assets" not in d.parts and not (d / "__init__.py").is_file()
    ]
    assert not missing, missing


@pytest.mark.slow
def test_the_wheel_holds_every_subpackage_and_the_builtin_model(tmp_path):
    """Build the wheel, install it into a folder, and use it from there: every module imports and the built-in
    model (package data) generates an image."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(SRC.parent, project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), "."]
    subprocess.run(build, cwd=project, check=True, capture_output=True, text=True)
    (wheel,) = wheels.glob("infinitystar-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for d in SRC.rglob("__init__.py"):
        assert str(d.relative_to(SRC.parent)) in names
    for f in [*(SRC / "assets" / "default").rglob("*"), *(SRC / "recipes").glob("*.json")]:
        if f.is_file():
            assert str(f.relative_to(SRC.parent)) in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata and any(n.endswith("licenses/LICENSE") for n in names)

    target = tmp_path / "site"
    install = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-index",
        "-q",
        "--target",
        str(target),
        str(wheel),
    ]
    subprocess.run(install, check=True, capture_output=True, text=True)
    modules = sorted(set(_modules()) - ENTRY_POINTS)
    code = (
        "import importlib, json, sys, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "import infinitystar\n"
        f"assert infinitystar.__file__.startswith({str(target)!r}), infinitystar.__file__\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    importlib.import_module(name)\n"
        "from infinitystar.generation.layouts import BUILTIN_MODEL_DIR\n"
        f"assert str(BUILTIN_MODEL_DIR).startswith({str(target)!r}), BUILTIN_MODEL_DIR\n"
        "from infinitystar import InfinityStarPipeline\n"
        "pipe = InfinityStarPipeline.from_pretrained()\n"
        "out = pipe('a red circle on a black background', duration=0, seed=1, progress=False)\n"
        "from infinitystar.recipes import recipe_path\n"
        f"assert str(recipe_path('finetune_8b_480p')).startswith({str(target)!r})\n"
        "print(out.frames.shape)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", code, json.dumps(modules)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "(1, 128, 128, 3)"
