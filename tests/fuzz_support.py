"""Shared by the hostile-input tests: the fuzzing budget, the problem+json contract, a tally.

``FUZZ_EXAMPLES`` raises every fuzz test's number of examples (``make fuzz``
sets it); the regular suite runs each with a small default so that it stays quick. Each
fuzz test counts what it sent, and the module prints the counts at its end, so the
reliability figures in docs/reliability.md come from a run rather than from memory.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from typing import Any, Iterator

import pytest

from alliance.api.errors import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE

FUZZ_EXAMPLES_VARIABLE = "FUZZ_EXAMPLES"
# The members of every problem document (docs/design.md, "Errors"); ``errors`` is added for invalid input.
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code", "request_id"}


def fuzz_examples(default: int) -> int:
    """Examples per fuzz test: ``default``, or more when ``FUZZ_EXAMPLES`` says so."""
    raw = os.environ.get(FUZZ_EXAMPLES_VARIABLE)
    if not raw:
        return default
    value = int(raw)
    assert value > 0, f"{FUZZ_EXAMPLES_VARIABLE} must be a positive whole number"
    return max(default, value)


def assert_problem(status: int, content_type: str | None, body: Any) -> None:
    """An error reply is RFC 9457 problem+json with every member the design lists."""
    assert content_type is not None and content_type.split(";")[0].strip() == PROBLEM_CONTENT_TYPE, (
        status, content_type)
    assert isinstance(body, dict), body
    assert PROBLEM_FIELDS <= set(body), (status, body)
    assert body["status"] == status, body
    assert body["type"] == PROBLEM_TYPE_BASE + body["code"], body
    assert isinstance(body["request_id"], str) and body["request_id"], body
    for name in ("title", "detail", "code"):
        assert isinstance(body[name], str) and body[name], (name, body)
    if "errors" in body:
        assert all(isinstance(messages, list) for messages in body["errors"].values()), body


class FuzzTally:
    """How many inputs each fuzz test sent, and the statuses they got."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.statuses: dict[str, Counter[int]] = {}

    def record(self, label: str, status: int) -> None:
        with self._lock:
            self.statuses.setdefault(label, Counter())[status] += 1

    def lines(self) -> list[str]:
        lines = []
        for label, statuses in sorted(self.statuses.items()):
            tried = sum(statuses.values())
            rejected = sum(count for status, count in statuses.items() if status >= 400)
            spread = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
            lines.append(f"{label}: {tried} requests, {rejected} rejected ({spread})")
        total = sum(sum(statuses.values()) for statuses in self.statuses.values())
        server_errors = sum(count for statuses in self.statuses.values()
                            for status, count in statuses.items() if status >= 500)
        lines.append(f"total: {total} requests, {server_errors} server errors")
        return lines


def tally_fixture(title: str):  # type: ignore[no-untyped-def]
    """A module-scoped ``fuzz_tally`` fixture that prints its counts when the module ends."""
    @pytest.fixture(scope="module")
    def fuzz_tally(request: pytest.FixtureRequest) -> Iterator[FuzzTally]:
        tally = FuzzTally()
        yield tally
        budget = os.environ.get(FUZZ_EXAMPLES_VARIABLE, "default")
        lines = [f"{title} ({FUZZ_EXAMPLES_VARIABLE}={budget})", *tally.lines()]
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or capture is None:
            print("\n".join(lines))
            return
        # Past pytest's output capture, so the counts show in every run, not only with -s.
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            for line in lines:
                reporter.write_line(line)
    return fuzz_tally
