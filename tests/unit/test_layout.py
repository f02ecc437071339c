"""The package keeps the shape the README's layout section describes.

The import contract itself (layers, reconcile's inner order, `dev` only from the
command line) is import-linter's, run by `make check`; these are the rules it
does not cover.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "tenant_operator"
MODULES = sorted(PACKAGE.rglob("*.py"))
ROOMS = {"api", "desired", "infra", "reconcile", "runtime", "dev"}
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_every_module_sits_in_a_room_of_its_role():
    loose = {p.name for p in PACKAGE.glob("*.py")}
    assert loose == {"__init__.py", "__main__.py", "cli.py"}
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == ROOMS
    for room in ROOMS:
        docstring = ast.get_docstring(ast.parse((PACKAGE / room / "__init__.py").read_text()))
        assert docstring, f"{room}/__init__.py says what the room is for"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small_and_say_what_they_are(path: Path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name} wants splitting"
    if path.name not in ("__main__.py",) and text.strip():
        assert ast.get_docstring(ast.parse(text)), f"{path.name} opens with a docstring: its role, who calls it, why"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_long_functions_say_why(path: Path):
    for function in _functions(ast.parse(path.read_text())):
        length = function.end_lineno - function.lineno + 1
        if length > MAX_FUNCTION_LINES:
            docstring = ast.get_docstring(function) or ""
            assert "long" in docstring.lower(), f"{path.name}:{function.name} is {length} lines without a reason"


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "cli.py" and "dev" not in p.parts],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_of_the_package_is_imported_inside_a_function(path: Path):
    """Such an import hides a cycle from the layer contract; only the command line loads lazily."""
    for function in _functions(ast.parse(path.read_text())):
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tenant_operator"):
                pytest.fail(f"{path.name}:{function.name} imports {node.module}")
            if isinstance(node, ast.Import) and any(a.name.startswith("tenant_operator") for a in node.names):
                pytest.fail(f"{path.name}:{function.name} imports {node.names[0].name}")
