"""The architecture, enforced by reading imports.

partners_sdk ships to merchants' tills and must not drag the hub along; the domain
core holds the rules and must stay free of the web framework and the ORM; settlement
may use the hub's core but never its web layer.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(package: str) -> dict[str, set[str]]:
    """Map each file of ``package`` to the top-level-qualified modules it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        modules: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module)
        found[str(path.relative_to(ROOT))] = modules
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path} imports {module}"
        for path, modules in imported_modules(package).items()
        for module in sorted(modules)
        if any(module == name or module.startswith(name + ".") for name in forbidden)
    ]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("partners_sdk", ("alliance", "settlement", "flask", "sqlalchemy", "alembic", "migrations")),
        ("alliance/domain", ("flask", "sqlalchemy", "alembic", "werkzeug", "marshmallow", "alliance.models",
                             "alliance.services", "alliance.api")),
        ("settlement", ("alliance.api", "flask")),
        ("alliance/services", ("flask", "alliance.api", "marshmallow")),
    ],
)
def test_package_does_not_import_forbidden_layers(package, forbidden):
    assert (ROOT / package).is_dir()
    assert offenders(package, forbidden) == []


def test_the_layering_check_sees_imports():
    # Guard against a check that passes because it reads nothing.
    assert any("sqlalchemy" in modules for modules in imported_modules("alliance/models").values())


PURE_MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for folder in ("settlement", "alliance/domain")
    for path in (ROOT / folder).glob("*.py") if path.name != "__init__.py"
)


@pytest.mark.parametrize("module", PURE_MODULES)
def test_each_pure_module_imports_alone_without_the_web_app(module):
    # A fresh interpreter, so no earlier import hides a cycle; the pure core must not
    # pull in Flask (importing ``alliance`` once built the whole app).
    probe = f"import sys, {module}; assert 'flask' not in sys.modules, sorted(sys.modules)"
    finished = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
