"""Fixtures of the chaos scenarios: the scale, the session's figures, and the summary table."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.chaos.support import REPORT_PATH, ChaosReport, Scale, current_scale

_REPORT = ChaosReport(scale=current_scale())


@pytest.fixture(scope="session")
def scale() -> Scale:
    """The scale this session runs the scenarios at."""
    return _REPORT.scale


@pytest.fixture(scope="session")
def chaos_report() -> Iterator[ChaosReport]:
    """Collects each scenario's figures; a full run writes them to test-artifacts/chaos-report.txt."""
    yield _REPORT
    if _REPORT.scale.full and _REPORT.scenarios:
        REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
        REPORT_PATH.write_text(_REPORT.table() + "\n")


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """Print the figures after the run, whatever the scale."""
    if _REPORT.scenarios:
        terminalreporter.section("chaos summary")
        terminalreporter.write_line(_REPORT.table())
        if _REPORT.scale.full:
            terminalreporter.write_line(f"written to {REPORT_PATH}")
