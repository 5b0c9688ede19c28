"""What the chaos scenarios share: their scale, their figures, and the processes they start.

Each scenario runs small in the regular suite and full under ``make chaos``
(``CHAOS_SCALE=full``). The variable deliberately lacks the ``ALLIANCE_`` prefix: the
hub refuses unknown ``ALLIANCE_*`` settings, and the test process's environment is
inherited by the hubs and tools it starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCALE_VARIABLE = "CHAOS_SCALE"
REPORT_PATH = ROOT / "test-artifacts" / "chaos-report.txt"


@dataclass(frozen=True)
class Scale:
    """How hard a scenario pushes: ``small`` for the regular suite, ``full`` for ``make chaos``."""

    name: str

    @property
    def full(self) -> bool:
        return self.name == "full"

    def pick(self, small: object, full: object):  # type: ignore[no-untyped-def]
        """``small`` or ``full``, whichever this scale is."""
        return full if self.full else small


def current_scale() -> Scale:
    """The scale named by ``CHAOS_SCALE`` (default ``small``)."""
    name = os.environ.get(SCALE_VARIABLE, "small")
    if name not in ("small", "full"):
        raise ValueError(f"{SCALE_VARIABLE} must be small or full, got {name!r}")
    return Scale(name)


@dataclass
class ScenarioFigures:
    """What one scenario did and found; ``discrepancies`` must end at 0."""

    scenario: str
    operations_sent: int = 0
    acknowledged: int = 0
    retried: int = 0
    faults_injected: int = 0
    discrepancies: int = 0
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass
class ChaosReport:
    """The figures of every scenario run in this session."""

    scale: Scale
    scenarios: list[ScenarioFigures] = field(default_factory=list)

    def add(self, figures: ScenarioFigures) -> None:
        self.scenarios.append(figures)

    def table(self) -> str:
        """A plain-text table: one row per scenario, then the totals."""
        header = ("scenario", "operations sent", "acknowledged", "retried", "faults injected", "discrepancies",
                  "time")
        rows = [(item.scenario, item.operations_sent, item.acknowledged, item.retried, item.faults_injected,
                 item.discrepancies, f"{item.duration_s:.1f} s") for item in self.scenarios]
        totals = ("total", *(sum(row[column] for row in rows) for column in range(1, 6)),
                  f"{sum(item.duration_s for item in self.scenarios):.1f} s")
        cells = [tuple(str(value) for value in row) for row in (header, *rows, totals)]
        widths = [max(len(row[column]) for row in cells) for column in range(len(header))]

        def line(row: tuple[str, ...]) -> str:
            return "  ".join(value.ljust(width) if column == 0 else value.rjust(width)
                             for column, (value, width) in enumerate(zip(row, widths, strict=True)))

        rule = "  ".join("-" * width for width in widths)
        body = [line(cells[0]), rule, *(line(row) for row in cells[1:-1]), rule, line(cells[-1])]
        notes = [f"- {item.scenario}: {note}" for item in self.scenarios for note in item.notes]
        return "\n".join([f"chaos scenarios at scale {self.scale.name}", "", *body, *([""] + notes if notes else [])])


def child_pids(parent_pid: int) -> list[int]:
    """The pids of ``parent_pid``'s direct children, read from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name: state, then the parent pid.
        if int(fields[1]) == parent_pid and fields[0] != "Z":
            children.append(int(entry.name))
    return sorted(children)


def stop_process(process: subprocess.Popen, *, timeout_s: float = 20.0) -> None:  # type: ignore[type-arg]
    """SIGTERM one process we started (by its pid), then SIGKILL it if it will not go."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)


def wait_for(condition, what: str, *, timeout_s: float = 30.0, interval_s: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    """Return once ``condition()`` is true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
