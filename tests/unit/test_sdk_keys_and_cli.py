"""Terminal keys on disk, and the ``alliance-pos`` command without a hub."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1
from cryptography.hazmat.primitives.asymmetric.ec import generate_private_key as generate_ec_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from alliance.cli_admin import load_public_key as hub_load_public_key
from partners_sdk import ConfigurationError, generate_key_pair, load_private_key, public_key_pem
from partners_sdk.cli import EXIT_USAGE, main
from partners_sdk.keys import load_public_key, write_private_key
from tests.sdk_support import ROOT, subprocess_environment


def test_a_generated_private_key_is_owner_only_and_loads_back(tmp_path):
    public_pem = generate_key_pair(tmp_path / "keys" / "till.pem", public_key_path=tmp_path / "keys" / "till.pub.pem")
    private_path = tmp_path / "keys" / "till.pem"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    key = load_private_key(private_path)
    assert isinstance(key, Ed25519PrivateKey)
    assert public_key_pem(key) == public_pem == (tmp_path / "keys" / "till.pub.pem").read_text()
    assert public_key_pem(load_public_key(tmp_path / "keys" / "till.pub.pem")) == public_pem
    assert [path.name for path in (tmp_path / "keys").iterdir() if path.name.startswith(".key-")] == []


def test_the_printed_public_key_is_what_the_hub_registers(tmp_path):
    public_pem = generate_key_pair(tmp_path / "till.pem", public_key_path=tmp_path / "till.pub.pem")
    raw = load_private_key(tmp_path / "till.pem").public_key().public_bytes(serialization.Encoding.Raw,
                                                                            serialization.PublicFormat.Raw)
    assert public_pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert hub_load_public_key(tmp_path / "till.pub.pem") == raw


def test_an_existing_key_is_never_overwritten_by_accident(tmp_path):
    generate_key_pair(tmp_path / "till.pem")
    before = (tmp_path / "till.pem").read_bytes()
    with pytest.raises(ConfigurationError):
        generate_key_pair(tmp_path / "till.pem")
    assert (tmp_path / "till.pem").read_bytes() == before
    write_private_key(Ed25519PrivateKey.generate(), tmp_path / "till.pem", overwrite=True)
    assert (tmp_path / "till.pem").read_bytes() != before
    assert stat.S_IMODE((tmp_path / "till.pem").stat().st_mode) == 0o600


def test_other_key_types_and_garbage_are_refused(tmp_path):
    ec_pem = generate_ec_key(SECP256R1()).private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "ec.pem").write_bytes(ec_pem)
    (tmp_path / "junk.pem").write_text("not a key")
    for name in ("ec.pem", "junk.pem", "missing.pem"):
        with pytest.raises(ConfigurationError):
            load_private_key(tmp_path / name)


def test_keygen_prints_the_public_pem_and_public_key_repeats_it(tmp_path, capsys):
    assert main(["keygen", "--private-key", str(tmp_path / "till.pem")]) == 0
    printed = capsys.readouterr().out
    assert main(["public-key", "--key-file", str(tmp_path / "till.pem")]) == 0
    assert capsys.readouterr().out == printed
    assert printed.startswith("-----BEGIN PUBLIC KEY-----")


def test_missing_settings_exit_2_with_a_json_error_naming_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ALLIANCE_POS_HUB", raising=False)
    status = main(["get-purchase", "--receipt-id", "r-1", "--key-id", "k", "--key-file", str(tmp_path / "k.pem")])
    error = json.loads(capsys.readouterr().err)
    assert status == EXIT_USAGE
    assert error["code"] == "configuration_error" and "ALLIANCE_POS_HUB" in error["detail"]


def test_an_unreachable_hub_queues_a_purchase_and_queue_lists_it(tmp_path, capsys):
    generate_key_pair(tmp_path / "till.pem")
    common = ["--hub", "http://127.0.0.1:9", "--key-id", "k", "--key-file", str(tmp_path / "till.pem"),
              "--queue", str(tmp_path / "q.sqlite3"), "--max-retries", "0"]
    status = main(["purchase", *common, "--receipt-id", "r-1", "--card", "6390000000000013", "--amount-minor",
                   "1500", "--currency", "EUR"])
    queued = json.loads(capsys.readouterr().out)
    assert status == 0 and queued["queued"]["reference"] == "r-1"
    assert main(["queue", "--queue", str(tmp_path / "q.sqlite3")]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["pending_count"] == 1 and listing["pending"][0]["body"]["amount_minor"] == 1500
    assert main(["balance", *common, "--card", "6390000000000013", "--pin", "1234"]) == 3
    assert json.loads(capsys.readouterr().err)["code"] == "hub_unreachable"


def test_global_options_may_come_before_the_command_as_well_as_after(tmp_path, capsys):
    generate_key_pair(tmp_path / "till.pem")
    queue = str(tmp_path / "q.sqlite3")
    before = ["--hub", "http://127.0.0.1:9", "--key-id", "k", "--key-file", str(tmp_path / "till.pem"),
              "--queue", queue, "--max-retries", "0", "--deadline-s", "2"]
    status = main([*before, "purchase", "--receipt-id", "r-1", "--card", "6390000000000013", "--amount-minor",
                   "1500", "--currency", "EUR"])
    assert status == 0 and json.loads(capsys.readouterr().out)["queued"]["reference"] == "r-1"
    # Given on both sides, the one after the command wins, as it is the nearer to it.
    status = main(["--queue", str(tmp_path / "elsewhere.sqlite3"), "queue", "--queue", queue])
    assert status == 0 and json.loads(capsys.readouterr().out)["pending_count"] == 1
    assert main(["--queue", queue, "queue"]) == 0
    assert json.loads(capsys.readouterr().out)["pending"][0]["reference"] == "r-1"
    assert main(["--key-file", str(tmp_path / "till.pem"), "public-key"]) == 0
    assert capsys.readouterr().out.startswith("-----BEGIN PUBLIC KEY-----")


def test_the_module_runs_as_a_command(tmp_path):
    result = subprocess.run([sys.executable, "-m", "partners_sdk.cli", "--help"], capture_output=True, text=True,
                            cwd=ROOT, env=subprocess_environment(), timeout=60)
    assert result.returncode == 0
    for command in ("keygen", "purchase", "refund", "authorize", "capture", "void", "redemption-refund",
                    "get-purchase", "get-redemption", "balance", "flush", "queue"):
        assert command in result.stdout
