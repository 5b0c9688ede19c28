"""The architecture, enforced by reading imports (every import: module level, in functions, for type checking).

partners_sdk ships to merchants' tills and must not drag the hub along; the domain
core holds the rules and must stay free of the web framework and the ORM.

Settlement is one feature in one package: its pure core (plain values, no database)
and its services (SQL, locking, the finance workflow) sit together under
``settlement/``; the hub's web layer, console, CLI, scheduler, app factory and metrics
reach it only through ``settlement.api``.

Views (``alliance/api``, ``alliance/console``) and CLI commands (``alliance/cli*.py``)
hold no SQL and import no models: they parse, call a service and present its answer.
Audit-log entries are written by the services that make the change, never by a view
or a command. ``alliance.extensions`` (the per-app state every layer reads) imports no
service.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.import_support import ROOT, Import, imports_of, module_name, names

SETTLEMENT_PURE = ("settlement.cycles", "settlement.netting", "settlement.statements", "settlement.matching",
                   "settlement.keys")
SETTLEMENT_SERVICES = ("settlement.closing", "settlement.credit", "settlement.finance", "settlement.liability",
                       "settlement.reconciliation", "settlement.reports", "settlement.locking", "settlement.api")
# Only the exception classes: how a view or a command recognises a database that is down.
SQLALCHEMY_EXCEPTIONS = ("sqlalchemy.exc",)

# The storage adapters: the one place for raw SQL, driver statements and dialect branches.
STORAGE_ADAPTERS = ("alliance.storage.postgresql", "alliance.storage.sqlite", "alliance.storage.statements")


def files(folder: str) -> list[Path]:
    """The Python files of a folder (recursively) or the one file ``folder``.py."""
    path = ROOT / folder
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def imported_modules(package: str) -> dict[str, set[str]]:
    """Map each file of ``package`` to the qualified modules it imports (``from a import b`` is
    ``a.b`` when a module)."""
    return {str(path.relative_to(ROOT)): {found.target for found in imports_of(path)} for path in files(package)}


def offenders(folders: tuple[str, ...] | str, forbidden: tuple[str, ...], *,
              allowed: tuple[str, ...] = ()) -> list[str]:
    return [
        f"{path} imports {module}"
        for folder in ((folders,) if isinstance(folders, str) else folders)
        for path, modules in imported_modules(folder).items()
        for module in sorted(modules) if names(module, forbidden) and not names(module, allowed)
    ]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("partners_sdk", ("alliance", "settlement", "flask", "sqlalchemy", "alembic", "migrations")),
        ("alliance/domain", ("flask", "sqlalchemy", "alembic", "werkzeug", "marshmallow", "alliance.models",
                             "alliance.services", "alliance.api", "settlement")),
        ("settlement", ("alliance.api", "alliance.console", "alliance.cli", "alliance.app", "alliance.extensions",
                        "flask", "werkzeug", "marshmallow")),
        # werkzeug.security hashes console passwords; werkzeug's web parts are Flask's.
        ("alliance/services", ("flask", "alliance.api", "alliance.console", "alliance.extensions", "marshmallow")),
        # The database layer imports the metrics: they may read no models, services or settlement
        # (the figures read at scrape time are handed to them by the /metrics view).
        ("alliance/observability", ("alliance.models", "alliance.services", "alliance.scheduler", "alliance.api",
                                    "alliance.console", "alliance.extensions", "settlement", "flask")),
    ],
)
def test_package_does_not_import_forbidden_layers(package, forbidden):
    assert (ROOT / package).is_dir()
    assert offenders(package, forbidden) == []


def test_the_layering_check_sees_imports():
    # Guard against a check that passes because it reads nothing.
    assert any("sqlalchemy" in modules for modules in imported_modules("alliance/models").values())
    assert "settlement.api" in imported_modules("alliance/api/back_office/settlement_routes.py")[
        "alliance/api/back_office/settlement_routes.py"]


# --- settlement: one package, a pure core and its services -----------------------------


def test_every_settlement_module_is_pure_core_or_service():
    modules = {module_name(path) for path in (ROOT / "settlement").glob("*.py")} - {"settlement"}
    assert modules == set(SETTLEMENT_PURE) | set(SETTLEMENT_SERVICES)
    assert imports_of(ROOT / "settlement/__init__.py") == [], "importing a pure module must not load the services"


@pytest.mark.parametrize("module", SETTLEMENT_PURE)
def test_settlement_pure_core_imports_no_database_web_or_services(module):
    path = ROOT / f"{module.replace('.', '/')}.py"
    forbidden = ("sqlalchemy", "flask", "werkzeug", "alembic", "alliance.models", "alliance.services", "alliance.db",
                 "alliance.api", "alliance.console", "alliance.extensions", *SETTLEMENT_SERVICES)
    assert [found.target for found in imports_of(path) if names(found.target, forbidden)] == []


@pytest.mark.parametrize("module", SETTLEMENT_SERVICES)
def test_settlement_services_use_the_hub_core_never_its_web_or_cli(module):
    path = ROOT / f"{module.replace('.', '/')}.py"
    forbidden = ("flask", "werkzeug", "marshmallow", "alliance.api", "alliance.console", "alliance.extensions",
                 "alliance.cli", "alliance.cli_admin", "alliance.cli_grades", "alliance.cli_staff", "alliance.app",
                 "alliance.scheduler")
    assert [found.target for found in imports_of(path) if names(found.target, forbidden)] == []


def test_outer_layers_reach_settlement_only_through_its_api():
    folders = ("alliance/api", "alliance/console", "alliance/cli.py", "alliance/cli_admin.py", "alliance/cli_grades.py",
               "alliance/cli_staff.py", "alliance/app.py", "alliance/wsgi.py", "alliance/scheduler.py",
               "alliance/observability")
    found = [problem for problem in offenders(folders, ("settlement",), allowed=("settlement.api",))
             if not problem.endswith(" imports settlement")]  # ``from settlement import api``
    assert found == []


def test_only_settlement_api_reaches_the_settlement_services_from_outside():
    # alliance's services may use the pure core's values and renderers (the audit
    # documents are signed like statements), never a settlement service directly.
    assert offenders(("alliance",), tuple(name for name in SETTLEMENT_SERVICES if name != "settlement.api")) == []


# --- views and CLI commands: no SQL, no models, no audit writes -------------------------

VIEWS_AND_CLI = ("alliance/api", "alliance/console", "alliance/cli.py", "alliance/cli_admin.py",
                 "alliance/cli_grades.py", "alliance/cli_staff.py")
# Session methods that run SQL; a view or command passes the session to a service instead.
SQL_METHODS = frozenset({"execute", "scalar", "scalars", "query", "get_one", "add_all", "merge", "flush",
                         "connection"})
RAW_SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\s", re.IGNORECASE)


def test_views_and_cli_import_no_models_and_no_sqlalchemy():
    assert offenders(VIEWS_AND_CLI, ("alliance.models", "sqlalchemy"), allowed=SQLALCHEMY_EXCEPTIONS) == []


def _view_and_cli_files() -> list[Path]:
    return [path for folder in VIEWS_AND_CLI for path in files(folder)]


def _sql_in(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in SQL_METHODS and ast.unparse(node.func.value).endswith("session"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node.func)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and RAW_SQL.match(node.value):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} SQL text {node.value[:40]!r}")
    return found


def test_views_and_cli_hold_no_sql():
    assert [sql for path in _view_and_cli_files() for sql in _sql_in(path)] == []


def test_the_sql_check_sees_sql():
    assert _sql_in(ROOT / "settlement/closing.py")


def _audit_writes(path: Path) -> list[str]:
    """Calls of the audit-log writer (``alliance.services.audit_log.append``) in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    modules, functions = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "alliance.services":
            modules.update(alias.asname or alias.name for alias in node.names if alias.name == "audit_log")
        elif isinstance(node, ast.ImportFrom) and node.module == "alliance.services.audit_log":
            functions.update(alias.asname or alias.name for alias in node.names if alias.name == "append")
        elif isinstance(node, ast.Import):
            modules.update(alias.asname for alias in node.names
                           if alias.name == "alliance.services.audit_log" and alias.asname)
    return [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree) if isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Attribute) and node.func.attr == "append"
         and ast.unparse(node.func.value) in modules | {"alliance.services.audit_log"})
        or (isinstance(node.func, ast.Name) and node.func.id in functions))]


def test_audit_entries_are_written_by_services_not_views_or_cli():
    assert [write for path in _view_and_cli_files() for write in _audit_writes(path)] == []


def test_the_audit_write_check_sees_writes():
    assert _audit_writes(ROOT / "settlement/finance.py")


def test_extensions_import_no_services():
    assert offenders("alliance/extensions.py", ("alliance.services", *SETTLEMENT_SERVICES)) == []


# --- storage: SQL that depends on the database lives in the adapters only ---------------

# What only an adapter may do: name the driver, build a statement from text, compile
# for one dialect, or branch on which database it is.
ADAPTER_ONLY_MODULES = ("sqlalchemy.dialects", "psycopg")
ADAPTER_ONLY_NAMES = {("sqlalchemy", "text"), ("alliance.db", "DriverStatement")}
RAW_SQL_OR_PRAGMA = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|PRAGMA)\s", re.IGNORECASE)
SERVICES = ("alliance/services", "settlement")


def _adapter_only_code(path: Path) -> list[str]:
    """SQL text, imports only an adapter may use, and branches on the database's kind, in one file."""
    found = [f"{path.relative_to(ROOT)} imports {item.target}" for item in imports_of(path)
             if names(item.target, ADAPTER_ONLY_MODULES)]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{alias.name}"
                      for alias in node.names if (node.module, alias.name) in ADAPTER_ONLY_NAMES]
        elif isinstance(node, ast.Attribute) and node.attr == "dialect":
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} reads .dialect")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and RAW_SQL_OR_PRAGMA.match(node.value) \
                and not node.value.rstrip().endswith("."):  # a docstring that starts with "Set", "Delete"...
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} SQL text {node.value[:40]!r}")
    return found


def test_services_hold_no_raw_sql_driver_statements_or_dialect_branches():
    assert [problem for folder in SERVICES for path in files(folder) for problem in _adapter_only_code(path)] == []


def test_the_adapter_check_sees_adapter_code():
    problems = _adapter_only_code(ROOT / "alliance/storage/postgresql.py")
    assert any("DriverStatement" in problem for problem in problems)
    assert any("SQL text" in problem for problem in problems)


def test_storage_serves_the_services_and_knows_nothing_above_it():
    assert offenders("alliance/storage", ("alliance.services", "alliance.api", "alliance.console", "alliance.cli",
                                          "alliance.extensions", "settlement", "flask")) == []


def test_views_reach_storage_only_for_the_unit_of_work_and_plain_values():
    # The unit of work and the value types of ``alliance.storage``, never an adapter.
    assert offenders(VIEWS_AND_CLI, STORAGE_ADAPTERS) == []


# --- the pure core imports alone --------------------------------------------------------


PURE_MODULES = sorted([*SETTLEMENT_PURE, *(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for path in (ROOT / "alliance/domain").glob("*.py") if path.name != "__init__.py")])


@pytest.mark.parametrize("module", PURE_MODULES)
def test_each_pure_module_imports_alone_without_the_web_app(module):
    # A fresh interpreter, so no earlier import hides a cycle; the pure core must not
    # pull in Flask (importing ``alliance`` once built the whole app) nor the ORM.
    probe = (f"import sys, {module}; loaded = [name for name in ('flask', 'sqlalchemy', 'alliance.services') "
             f"if name in sys.modules]; assert not loaded, loaded")
    finished = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr


def test_import_records_are_qualified():
    found = imports_of(ROOT / "alliance/api/back_office/finance_routes.py")
    assert Import("settlement.api", found[0].line, False, False).target in {item.target for item in found}
