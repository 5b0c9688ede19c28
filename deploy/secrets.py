"""The secrets one cluster shares: database passwords, the hub's keys and its metrics token, made once per cluster.

Every hub host must hold the same hub keys (a PIN hashed on one host is checked on
another; a statement signed by one is verified against the same key id), and every
database host the same PostgreSQL passwords, so they are generated once and rendered
into each host's files. The hub's keys come from the hub's own commands
(``alliance statements new-key``, ``alliance webhooks new-key``, ``alliance pii new-key-ring``,
``alliance pins new-key-ring``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets as random_source
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

PEM_BLOCK = re.compile(r"-----BEGIN PRIVATE KEY-----\n.+?\n-----END PRIVATE KEY-----", re.S)
SCRAM_ITERATIONS = 4096


@dataclass(frozen=True)
class Secrets:
    """Passwords (URL-safe, so they go into connection URLs as they are) and the hub's keys."""

    superuser_password: str
    replication_password: str
    rewind_password: str
    restapi_password: str
    app_password: str
    secret_key: str
    pii_keys: str
    pin_keys: str
    statement_key: str
    # The hub's Ed25519 key that signs webhook deliveries (ALLIANCE_WEBHOOK_KEY).
    webhook_key: str
    # The bearer token Prometheus sends to each hub host's GET /metrics (ALLIANCE_METRICS_TOKEN).
    metrics_token: str

    @classmethod
    def generate(cls, alliance_command: str | Path) -> "Secrets":
        """Fresh passwords, and hub keys from ``alliance_command`` (the hub's ``alliance`` program)."""
        commands = {"statement_key": ["statements", "new-key"], "webhook_key": ["webhooks", "new-key"],
                    "pii_keys": ["pii", "new-key-ring"], "pin_keys": ["pins", "new-key-ring"]}
        # The hub refuses unknown ALLIANCE_* settings, so none of the caller's are passed on.
        environment = {name: value for name, value in os.environ.items() if not name.startswith("ALLIANCE_")}

        def run(arguments: list[str]) -> str:
            return subprocess.run([str(alliance_command), *arguments], check=True, capture_output=True, text=True,
                                  env=environment, timeout=60).stdout

        with ThreadPoolExecutor(len(commands)) as pool:
            outputs = dict(zip(commands, pool.map(run, commands.values()), strict=True))
        pem = PEM_BLOCK.search(outputs["statement_key"])
        if pem is None:
            raise RuntimeError("'alliance statements new-key' printed no PEM private key")
        webhook_pem = PEM_BLOCK.search(outputs["webhook_key"])
        if webhook_pem is None:
            raise RuntimeError("'alliance webhooks new-key' printed no PEM private key")
        return cls(
            superuser_password=_password(), replication_password=_password(), rewind_password=_password(),
            restapi_password=_password(), app_password=_password(), secret_key=random_source.token_urlsafe(48),
            pii_keys=outputs["pii_keys"].strip(), pin_keys=outputs["pin_keys"].strip(),
            statement_key=pem.group(0) + "\n", webhook_key=webhook_pem.group(0) + "\n",
            metrics_token=random_source.token_urlsafe(32),
        )

    def save(self, path: Path) -> None:
        """Write as JSON, readable by root only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(asdict(self), file, indent=2)
            file.write("\n")

    @classmethod
    def load(cls, path: Path) -> "Secrets":
        data = json.loads(Path(path).read_text())
        missing = {item.name for item in fields(cls)} - data.keys()
        if missing:
            raise ValueError(f"{path} lacks {', '.join(sorted(missing))}")
        return cls(**{item.name: data[item.name] for item in fields(cls)})


def _password() -> str:
    return random_source.token_urlsafe(24)


def scram_sha_256_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's stored form of ``password`` (``SCRAM-SHA-256$iterations:salt$StoredKey:ServerKey``, RFC 5802).

    ``CREATE ROLE ... PASSWORD '<verifier>'`` then stores it as it is, so the file that
    creates the role need not hold the password.
    """
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
