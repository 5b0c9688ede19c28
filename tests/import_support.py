"""Reading the project's imports from its source, for the layering and import-cycle tests.

Nothing is imported: each file is parsed, so a check sees every import statement,
at module level, inside functions and under ``if TYPE_CHECKING:``, whether or not it
would run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("alliance", "settlement", "partners_sdk")


@dataclass(frozen=True, slots=True)
class Import:
    """One imported name, qualified: a module of the project where it names one, else the module it comes from."""

    target: str
    line: int
    # Inside a function or method body: runs when the function is called, not at import.
    in_function: bool
    # Under ``if TYPE_CHECKING:``: never runs; only type checkers read it.
    type_checking: bool


def module_name(path: Path) -> str:
    """``alliance/api/health.py`` as ``alliance.api.health``; a package's ``__init__.py`` as the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def project_modules() -> dict[str, Path]:
    """Every module of the project's packages by dotted name."""
    return {module_name(path): path for package in PROJECT_PACKAGES
            for path in sorted((ROOT / package).rglob("*.py"))}


def _qualified(module: str, name: str) -> str:
    """``from module import name``: the submodule when ``name`` is one of the project's, else ``module``."""
    candidate = f"{module}.{name}"
    return candidate if candidate in project_modules() else module


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path) -> list[Import]:
    """Every import in the file at ``path``, in source order."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend(Import(alias.name, child.lineno, in_function, type_checking) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                found.extend(Import(_qualified(source, alias.name), child.lineno, in_function, type_checking)
                             for alias in child.names)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    visit(ast.Module(body=[statement], type_ignores=[]), in_function, True)
                for statement in child.orelse:
                    visit(ast.Module(body=[statement], type_ignores=[]), in_function, type_checking)
            else:
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)),
                      type_checking)

    visit(ast.parse(path.read_text(), filename=str(path)), False, False)
    return found


def names(module: str, prefixes: tuple[str, ...]) -> bool:
    """``module`` is one of ``prefixes`` or inside one of them."""
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def project_target(name: str) -> str | None:
    """The project module an imported name loads: the longest dotted prefix that is one, or None."""
    while name:
        if name in project_modules():
            return name
        name = name.rpartition(".")[0]
    return None
