"""The SDK installs on its own: a fresh virtualenv, ``pip install`` of the SDK folder, no hub inside."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sdk_support import ROOT

# Signs a request with the installed SDK and checks the signature with the public key,
# after proving that none of the hub's stack came along.
CHECK_SCRIPT = """
import importlib.util, json, sys
for name in ("flask", "sqlalchemy", "alliance", "settlement", "marshmallow"):
    assert importlib.util.find_spec(name) is None, f"{name} is importable"
import partners_sdk
from partners_sdk import RequestSigner
from partners_sdk.keys import generate_private_key
key = generate_private_key()
signed = RequestSigner("till-1", key).sign("POST", "http://hub.test/partner/v1/purchases", body=b"{}",
                                            idempotency_key="k-1")
key.public_key().verify(__import__("base64").b64decode(signed.headers["Signature"].split(":")[1]),
                        signed.signature_base)
print(json.dumps({"module": partners_sdk.__file__, "headers": sorted(signed.headers)}))
"""
# Only these can fail an install when no package index is reachable; anything else is a real failure.
NETWORK_FAILURES = ("NewConnectionError", "Failed to establish a new connection",
                    "Temporary failure in name resolution", "Network is unreachable", "ProxyError",
                    "ConnectTimeoutError", "Read timed out")
ALLOWED_DISTRIBUTIONS = {"alliance-partners-sdk", "cryptography", "cffi", "pycparser", "http-message-signatures",
                         "http-sf", "typing-extensions", "pip", "setuptools"}


def isolated_environment() -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not name.startswith("ALLIANCE_")}
    environment["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return environment


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=isolated_environment(), timeout=300)


def test_the_sdk_installs_alone_and_signs_without_the_hub(tmp_path):
    source = tmp_path / "source" / "partners_sdk"
    # A copy, so the build's scratch folders never land in the work tree.
    shutil.copytree(ROOT / "partners_sdk", source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    venv = tmp_path / "venv"
    created = run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    assert created.returncode == 0, created.stderr
    python = str(venv / "bin" / "python")
    installed = run([python, "-m", "pip", "install", "--quiet", str(source)], tmp_path)
    if installed.returncode != 0 and any(marker in installed.stderr for marker in NETWORK_FAILURES):
        pytest.skip(f"pip cannot reach a package index: {installed.stderr[-300:]}")
    assert installed.returncode == 0, installed.stderr

    checked = run([python, "-c", CHECK_SCRIPT], tmp_path)
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["module"].startswith(str(venv))
    assert {"Content-Digest", "Signature", "Signature-Input", "Idempotency-Key"} <= set(report["headers"])

    listed = run([python, "-m", "pip", "list", "--format=json"], tmp_path)
    names = {entry["name"].lower().replace("_", "-") for entry in json.loads(listed.stdout)}
    assert names <= ALLOWED_DISTRIBUTIONS, names - ALLOWED_DISTRIBUTIONS
    command = run([str(venv / "bin" / "alliance-pos"), "--help"], tmp_path)
    assert command.returncode == 0 and "flush" in command.stdout
