"""Helpers shared by the core benchmarks (settlement scale, ledger against a peer).

Each core benchmark gets a fresh, migrated database on the run's PostgreSQL server:
the schema is migrated once into a template, and every benchmark database is a copy.
A module run alone (``python -m benchmarks.<module> [--quick]``) starts its own
durable server (fsync and synchronous commit on) and stops it afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Callable

from sqlalchemy import Engine, create_engine, text

from alliance import migrate
from alliance.config import Settings
from alliance.db import make_engine
from tests.postgres_server import PostgresServer, start_postgres

TEMPLATE_DATABASE = "bench_core_template"
REPOSITORY = Path(__file__).resolve().parent.parent
_template_lock = threading.Lock()


def admin_engine(server: PostgresServer) -> Engine:
    """An autocommit engine on the maintenance database, for CREATE and DROP DATABASE."""
    return create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")


def fresh_database(server: PostgresServer, name: str) -> str:
    """Create ``name`` as a copy of the migrated template (made on first use); returns its URL."""
    admin = admin_engine(server)
    try:
        with _template_lock, admin.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": TEMPLATE_DATABASE}).first()
            if exists is None:
                connection.execute(text(f"CREATE DATABASE {TEMPLATE_DATABASE}"))
                template = make_engine(server.url(TEMPLATE_DATABASE), Settings())
                migrate.upgrade(template)
                template.dispose()
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            connection.execute(text(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DATABASE}"))
    finally:
        admin.dispose()
    return server.url(name)


def drop_database(server: PostgresServer, name: str) -> None:
    """Drop a benchmark database and every connection to it."""
    admin = admin_engine(server)
    try:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    finally:
        admin.dispose()


def decimal_text(value: float | Decimal | int, places: int = 3) -> str:
    """A measured number as fixed-point text (timings are floats; the printout is exact text)."""
    quantum = Decimal(1).scaleb(-places)
    return str(Decimal(str(value)).quantize(quantum, rounding=ROUND_HALF_EVEN))


def figure(
    benchmark: str, name: str, value: float | int, unit: str, *, target: str, met: bool | None, note: str,
    floor: str | None = None, floor_value: float | None = None, ratio: float | None = None, places: int = 3,
) -> dict[str, object]:
    """One figure in the shape every benchmark module returns."""
    return {
        "benchmark": benchmark, "figure": name, "value": decimal_text(value, places), "unit": unit,
        "floor": floor, "floor_value": None if floor_value is None else decimal_text(floor_value, places),
        "ratio": None if ratio is None else decimal_text(ratio, 3), "target": target, "met": met, "note": note,
    }


def run_alone(run: Callable[[dict[str, object]], list[dict[str, object]]], description: str) -> None:
    """``python -m benchmarks.<module>``: start a durable server, run, print the figures, stop."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    arguments = parser.parse_args()
    artifacts = REPOSITORY / "test-artifacts" / "bench"
    artifacts.mkdir(parents=True, exist_ok=True)
    server = start_postgres(durable=True)
    try:
        figures = run({"postgres": server, "venv_python": sys.executable,
                       "scale": "quick" if arguments.quick else "full", "artifacts": artifacts})
    finally:
        server.stop()
    for item in figures:
        print(json.dumps(item))
