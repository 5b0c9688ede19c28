"""Try the partner API against the demo hub: a signed purchase at one partner, then a
redemption of those points at another.

Run `make demo` in one shell, then in another:

    .venv/bin/python scripts/demo_checkout.py

It talks to the address `make demo` listens on: `HOST` and `PORT` from the environment
(127.0.0.1 and 5000 by default), as for `HOST=… PORT=… make demo`, or `--hub URL`.

It signs every request with RFC 9421 (Ed25519, label "pos") using the independent
`http-message-signatures` library and the demo partners' private keys from
`instance/demo-keys/`, exactly as any standard client would.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NoReturn

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


class DemoFailed(Exception):
    """A reason the demo cannot go on, said in one line."""


def post(hub: str, keys: Path, key_id: str, path: str, payload: dict) -> dict:  # type: ignore[type-arg]
    """Sign and send one POST; print and return the reply."""
    key_path = keys / f"{key_id}.pem"
    if not key_path.is_file():
        raise DemoFailed(f"no demo key at {key_path}: run `make demo` first (it writes the demo keys), "
                         "or pass --keys FOLDER")
    body = json.dumps(payload).encode()
    request = _Request("POST", hub + path, {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())})
    created = datetime.now(timezone.utc)
    HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_Key(key_path)).sign(
        request, key_id=key_id, created=created, expires=created + timedelta(seconds=300),
        nonce=secrets.token_urlsafe(16), label="pos", covered_component_ids=COMPONENTS, body=body,
    )
    sent = urllib.request.Request(hub + path, data=body, headers=request.headers, method="POST")
    try:
        with urllib.request.urlopen(sent, timeout=10) as response:
            reply = _json_reply(response.read(), hub)
    except urllib.error.HTTPError as error:
        reply = _json_reply(error.read(), hub)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DemoFailed(f"no hub answered at {hub} ({reason}); start it with `make demo` "
                         "(with the same HOST and PORT) or pass --hub URL") from error
    print(f"POST {path} as {key_id}\n{json.dumps(reply, indent=2)}\n")
    return reply


def _json_reply(raw: bytes, hub: str) -> dict:  # type: ignore[type-arg]
    try:
        return json.loads(raw)
    except ValueError as error:
        raise DemoFailed(f"{hub} answered with something other than JSON; is it the alliance hub?") from error


def _default_hub() -> str:
    """The address `make demo` serves on, from the same HOST and PORT variables."""
    return f"http://{os.environ.get('HOST') or '127.0.0.1'}:{os.environ.get('PORT') or '5000'}"


def _fail(message: str) -> NoReturn:
    print(f"demo_checkout: {message}", file=sys.stderr)
    raise SystemExit(1)


def main() -> None:
    """A purchase at Café Aurora, a redemption at FuelStop, then the balance; one clear line if it cannot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", default=_default_hub(),
                        help="the hub's address (default: http://$HOST:$PORT, as `make demo` uses)")
    parser.add_argument("--keys", type=Path, default=Path("instance/demo-keys"))
    parser.add_argument("--card", default="6390000000000013", help="A demo card (see `alliance seed-demo`).")
    parser.add_argument("--pin", default="1234")
    arguments = parser.parse_args()
    try:
        checkout(arguments)
    except DemoFailed as failure:
        _fail(str(failure))


def checkout(arguments: argparse.Namespace) -> None:
    """The three calls of the demo, each printed with its reply."""
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
