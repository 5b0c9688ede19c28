"""The installed ``alliance`` command on the embedded SQLite default, as the quick start runs it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ALLIANCE = shutil.which("alliance", path=str(Path(sys.executable).parent)) or "alliance"


def hub_environment(instance: Path) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("ALLIANCE_")}
    environment["ALLIANCE_INSTANCE_PATH"] = str(instance)
    return environment


def run_alliance(instance: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ALLIANCE, *arguments], env=hub_environment(instance), capture_output=True, text=True,
                          timeout=120)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_fresh_instance_upgrades_seeds_and_audits_green(tmp_path):
    instance = tmp_path / "instance"
    upgraded = run_alliance(instance, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert (instance / "alliance.sqlite3").exists()
    seeded = run_alliance(instance, "seed-demo")
    assert seeded.returncode == 0, seeded.stderr
    # Two keys for each of the four demo partners: a partner key and a till-bound key.
    assert len(list((instance / "demo-keys").glob("*.pem"))) == 8
    audited = run_alliance(instance, "audit")
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "audit passed" in audited.stdout


def test_serve_says_where_it_listens_and_answers_health(tmp_path):
    instance = tmp_path / "instance"
    assert run_alliance(instance, "db", "upgrade").returncode == 0
    port = free_port()
    server = subprocess.Popen([ALLIANCE, "serve", "--port", str(port)], env=hub_environment(instance),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        announced = server.stdout.readline() + server.stdout.readline()
        assert f"http://127.0.0.1:{port}" in announced
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    assert json.load(response) == {"status": "ok", "database": "sqlite"}
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the hub did not answer within 20 s")
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_bad_configuration_is_a_clear_error(tmp_path):
    environment = hub_environment(tmp_path / "instance")
    environment["ALLIANCE_ALLIANCE_TIME_ZONE"] = "Nowhere/Atlantis"
    result = subprocess.run([ALLIANCE, "audit"], env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "is not an IANA time zone" in result.stderr
    assert "Traceback" not in result.stderr


def wait_for_health(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail("the hub did not answer within 20 s")
            time.sleep(0.2)


def test_readme_checkout_demo_earns_at_one_partner_and_redeems_at_another(tmp_path):
    instance = tmp_path / "instance"
    assert run_alliance(instance, "db", "upgrade").returncode == 0
    seeded = run_alliance(instance, "seed-demo")
    card_number = seeded.stdout.split("card ")[1].split(",")[0]
    port = free_port()
    server = subprocess.Popen([ALLIANCE, "serve", "--port", str(port)], env=hub_environment(instance),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_health(port)
        script = Path(__file__).resolve().parents[2] / "scripts" / "demo_checkout.py"
        # The address comes from HOST and PORT, as `HOST=… PORT=… make demo` sets it for the hub.
        checkout = subprocess.run(
            [sys.executable, str(script), "--keys", str(instance / "demo-keys"), "--card", card_number],
            capture_output=True, text=True, timeout=60, env={**os.environ, "HOST": "127.0.0.1", "PORT": str(port)},
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert checkout.returncode == 0, checkout.stderr
    assert '"status": "captured"' in checkout.stdout
    assert '"points_captured": 200' in checkout.stdout
    assert '"problem' not in checkout.stdout and '"code"' not in checkout.stdout
    assert run_alliance(instance, "audit").returncode == 0


def test_the_checkout_demo_says_in_one_line_when_no_hub_answers(tmp_path):
    instance = tmp_path / "instance"
    assert run_alliance(instance, "db", "upgrade").returncode == 0
    assert run_alliance(instance, "seed-demo").returncode == 0
    script = Path(__file__).resolve().parents[2] / "scripts" / "demo_checkout.py"
    for arguments, expected in (
        (["--keys", str(instance / "demo-keys")], "no hub answered at http://127.0.0.1:"),
        (["--keys", str(tmp_path / "nowhere")], "no demo key at"),
    ):
        checkout = subprocess.run([sys.executable, str(script), *arguments], capture_output=True, text=True,
                                  timeout=60, env={**os.environ, "HOST": "127.0.0.1", "PORT": str(free_port())})
        assert checkout.returncode == 1
        assert "Traceback" not in checkout.stderr
        assert checkout.stderr.startswith(f"demo_checkout: {expected}") and checkout.stderr.count("\n") == 1
