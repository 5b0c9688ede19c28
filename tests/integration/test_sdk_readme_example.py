"""The README's checkout example runs as written against a live demo hub."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from alliance.extensions import hub_state
from alliance.services.demo import seed_demo_alliance
from tests.sdk_support import README_EXAMPLE, ROOT, serve_in_thread, subprocess_environment

pytestmark = pytest.mark.postgresql
DEMO_HUB = "http://127.0.0.1:5000"


def python_blocks(markdown: str, heading: str) -> list[str]:
    """The ```python blocks of the section under ``heading``, if the document has it."""
    start = markdown.find(heading)
    if start < 0:
        return []
    end = markdown.find("\n## ", start + len(heading))
    section = markdown[start:end if end > 0 else None]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_documented_example_is_the_one_tested():
    assert README_EXAMPLE in python_blocks((ROOT / "partners_sdk" / "README.md").read_text(), "# alliance-partners-sdk")
    documented = python_blocks((ROOT / "docs" / "sdk.md").read_text(), "# POS SDK")
    # The SDK guide, when it shows a checkout, must show exactly this code.
    assert documented == [] or README_EXAMPLE in documented


def test_the_checkout_example_runs_against_a_demo_hub(pg_app, tmp_path):
    hub = hub_state(pg_app)
    instance = tmp_path / "instance"
    with hub.unit_of_work() as uow:
        seed_demo_alliance(uow.session, instance_path=str(instance), now=datetime.now(timezone.utc),
                           expiry_months=24)
        uow.commit()
    with serve_in_thread(pg_app) as base_url:
        # The one change: this hub listens on a free port rather than the demo's 5000.
        code = README_EXAMPLE.replace(DEMO_HUB, base_url)
        assert code.count(base_url) == 1
        ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                             env=subprocess_environment(), timeout=60)
    assert ran.returncode == 0, ran.stderr
    earned, available = ran.stdout.splitlines()
    assert earned == "earned 225 points"
    assert re.fullmatch(r"\d+ points available", available)
    assert (instance / "pos-queue.sqlite3").exists()
