"""Closing cycles and checking statements from the command line, as finance would."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from alliance.cli import main


@pytest.fixture
def run(app):  # type: ignore[no-untyped-def]
    context = app.app_context()
    context.push()
    runner = CliRunner()
    yield lambda *arguments: runner.invoke(main, list(arguments), catch_exceptions=False)
    context.pop()


def test_close_export_and_verify_statements_offline(run, tmp_path: Path):
    assert run("seed-demo").exit_code == 0
    closed = run("settlement", "close", "--partner", "fuel-stop", "--now", "2026-12-31T00:00:00+00:00")
    assert closed.exit_code == 0, closed.output
    assert closed.output.strip().endswith("cycles closed")
    again = run("settlement", "close", "--partner", "fuel-stop", "--now", "2026-12-31T00:00:00+00:00")
    assert again.output.strip() == "0 cycles closed"
    exported = run("statements", "export", "--partner", "fuel-stop", "--out", str(tmp_path))
    assert exported.exit_code == 0, exported.output
    documents = sorted(tmp_path.glob("*.json"))
    statement = next(path for path in documents if not path.name.endswith(".sig.json"))
    assert run("statements", "verify", str(statement)).exit_code == 0
    statement.write_bytes(statement.read_bytes().replace(b'"net_minor":', b'"net_minor": '))
    tampered = run("statements", "verify", str(statement))
    assert tampered.exit_code == 1 and "not what key" in tampered.output
    assert run("audit").exit_code == 0


def test_the_demo_ends_by_closing_its_cycles_and_showing_the_netting(run):
    seeded = run("seed-demo")
    assert seeded.exit_code == 0, seeded.output
    assert "cycles closed into signed statements" in seeded.output
    for code in ("book-nook", "cafe-aurora", "fuel-stop"):
        assert f"  {code} " in seeded.output
    assert "gross obligations" in seeded.output and "netting efficiency" in seeded.output
    assert run("audit").exit_code == 0
