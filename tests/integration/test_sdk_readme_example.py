"""The SDK guides' checkout and redemption examples run as written against a live demo hub."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from alliance.extensions import hub_state
from alliance.models import Card, Purchase
from alliance.services.demo import seed_demo_alliance
from tests.sdk_support import (
    README_EXAMPLE,
    REDEMPTION_EXAMPLE,
    ROOT,
    available_points,
    serve_in_thread,
    subprocess_environment,
)

pytestmark = pytest.mark.postgresql
DEMO_HUB = "http://127.0.0.1:5000"
DEMO_CARD = "6390000000000013"


def python_blocks(markdown: str, heading: str) -> list[str]:
    """The ```python blocks of the section under ``heading``, to the next heading of its level.

    Subsections belong to the section, and a line of code that starts with ``#`` (a
    comment) is not a heading.
    """
    marker = heading.split(" ", 1)[0] + " "
    blocks: list[str] = []
    code: list[str] | None = None
    in_section = in_fence = False
    for line in markdown.splitlines(keepends=True):
        if line.startswith("```"):
            in_fence = not in_fence
            if in_section and in_fence and line.strip() == "```python":
                code = []
            elif code is not None and not in_fence:
                blocks.append("".join(code))
                code = None
        elif not in_fence and line.startswith(marker):
            in_section = line.strip() == heading
        elif code is not None:
            code.append(line)
    return blocks


def test_the_documented_examples_are_the_ones_tested():
    for guide, heading in (("partners_sdk/README.md", "# alliance-partners-sdk"), ("docs/sdk.md", "# POS SDK")):
        documented = python_blocks((ROOT / guide).read_text(), heading)
        assert README_EXAMPLE in documented and REDEMPTION_EXAMPLE in documented, guide


def seed_demo_hub(pg_app, instance) -> None:  # type: ignore[no-untyped-def]
    with hub_state(pg_app).unit_of_work() as uow:
        seed_demo_alliance(uow.session, instance_path=str(instance), now=datetime.now(timezone.utc),
                           expiry_months=24)
        uow.commit()


def run_against(base_url: str, example: str, folder) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    # The one change: this hub listens on a free port rather than the demo's 5000.
    code = example.replace(DEMO_HUB, base_url)
    assert code.count(base_url) == 1
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=folder,
                          env=subprocess_environment(), timeout=60)


def test_the_checkout_example_runs_against_a_demo_hub(pg_app, tmp_path):
    instance = tmp_path / "instance"
    seed_demo_hub(pg_app, instance)
    with serve_in_thread(pg_app) as base_url:
        ran = run_against(base_url, README_EXAMPLE, tmp_path)
    assert ran.returncode == 0, ran.stderr
    earned, available = ran.stdout.splitlines()
    # What the purchase earned depends on the demo member's tier after the demo's history: read it back.
    with hub_state(pg_app).unit_of_work() as uow:
        points = uow.session.execute(select(Purchase.points_partner + Purchase.points_hub)
                                     .join(Card, Card.id == Purchase.card_id).where(Card.card_number == DEMO_CARD)
                                     .order_by(Purchase.id.desc()).limit(1)).scalar_one()
    assert points >= 150 and earned == f"earned {points} points"
    assert re.fullmatch(r"\d+ points available", available)
    assert (instance / "pos-queue.sqlite3").exists()


def test_the_redemption_example_runs_against_a_demo_hub(pg_app, tmp_path):
    hub = hub_state(pg_app)
    seed_demo_hub(pg_app, tmp_path / "instance")
    with hub.unit_of_work() as uow:
        member_id = uow.session.scalar(select(Card.member_id).where(Card.card_number == DEMO_CARD))
    before = available_points(hub, member_id)
    with serve_in_thread(pg_app) as base_url:
        ran = run_against(base_url, REDEMPTION_EXAMPLE, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["captured: 150 points", "voided",
                                       "refused: the card's available points do not cover 1000000"]
    assert available_points(hub, member_id) == before - 150
