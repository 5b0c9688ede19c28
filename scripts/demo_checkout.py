"""Try the partner API against the demo hub: a signed purchase at one partner, then a
redemption of those points at another.

Run `make demo` in one shell, then in another:

    .venv/bin/python scripts/demo_checkout.py

It signs every request with RFC 9421 (Ed25519, label "pos") using the independent
`http-message-signatures` library and the demo partners' private keys from
`instance/demo-keys/`, exactly as any standard client would.
"""

from __future__ import annotations

import argparse
import json
import secrets
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from http_message_signatures import HTTPMessageSigner, algorithms

COMPONENTS = ("@method", "@path", "@query", "content-type", "content-digest", "idempotency-key")


class _Request:
    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method, self.url, self.headers = method, url, headers


class _Key:
    def __init__(self, path: Path) -> None:
        self.private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)

    def resolve_private_key(self, key_id: str):  # type: ignore[no-untyped-def]
        return self.private_key


def post(hub: str, keys: Path, key_id: str, path: str, payload: dict) -> dict:  # type: ignore[type-arg]
    """Sign and send one POST; print and return the reply."""
    body = json.dumps(payload).encode()
    request = _Request("POST", hub + path, {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())})
    created = datetime.now(timezone.utc)
    HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_Key(keys / f"{key_id}.pem")).sign(
        request, key_id=key_id, created=created, expires=created + timedelta(seconds=300),
        nonce=secrets.token_urlsafe(16), label="pos", covered_component_ids=COMPONENTS, body=body,
    )
    sent = urllib.request.Request(hub + path, data=body, headers=request.headers, method="POST")
    try:
        with urllib.request.urlopen(sent, timeout=10) as response:
            reply = json.load(response)
    except urllib.error.HTTPError as error:
        reply = json.load(error)
    print(f"POST {path} as {key_id}\n{json.dumps(reply, indent=2)}\n")
    return reply


def main() -> None:
    """A purchase at Café Aurora, a redemption at FuelStop, then the balance."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", default="http://127.0.0.1:5000")
    parser.add_argument("--keys", type=Path, default=Path("instance/demo-keys"))
    parser.add_argument("--card", default="6390000000000013", help="A demo card (see `alliance seed-demo`).")
    parser.add_argument("--pin", default="1234")
    arguments = parser.parse_args()
    receipt_id = f"demo-{secrets.token_hex(4)}"
    post(arguments.hub, arguments.keys, "cafe-aurora-till-1", "/partner/v1/purchases", {
        "receipt_id": receipt_id, "card_number": arguments.card, "amount_minor": 15_000, "currency": "EUR",
        "purchased_at": datetime.now(timezone.utc).isoformat(),
    })
    reference = f"redeem-{secrets.token_hex(4)}"
    post(arguments.hub, arguments.keys, "fuel-stop-key-1", "/partner/v1/redemptions", {
        "reference": reference, "card_number": arguments.card, "pin": arguments.pin, "points": 200,
    })
    post(arguments.hub, arguments.keys, "fuel-stop-key-1", f"/partner/v1/redemptions/{reference}/capture",
         {"points": 200})
    post(arguments.hub, arguments.keys, "fuel-stop-key-1", "/partner/v1/balance-inquiries",
         {"card_number": arguments.card, "pin": arguments.pin})


if __name__ == "__main__":
    main()
