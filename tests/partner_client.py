"""A signing partner client for tests, over Flask's test client or real HTTP."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from tests.factories import SigningPartner
from tests.signing import sign_request


@dataclass
class Reply:
    """Status, headers and parsed JSON body of a reply."""

    status: int
    headers: dict[str, str]
    body: Any


class SignedTestClient:
    """Signs each request like a till would and sends it through Flask's test client."""

    def __init__(self, app, partner: SigningPartner, *, base_url: str = "http://localhost") -> None:  # type: ignore[no-untyped-def]
        self.client = app.test_client()
        self.partner = partner
        self.base_url = base_url

    def post(self, path: str, payload: Any, *, idempotency_key: str | None = None, **signing: Any) -> Reply:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        key = idempotency_key or str(uuid.uuid4())
        headers = sign_request(method="POST", url=self.base_url + path, body=body, key_id=self.partner.key_id,
                               private_key=self.partner.private_key, idempotency_key=key, **signing)
        response = self.client.post(path, data=body, headers=headers)
        return Reply(response.status_code, dict(response.headers), response.get_json(silent=True))

    def get(self, path: str, **signing: Any) -> Reply:
        headers = sign_request(method="GET", url=self.base_url + path, body=b"", key_id=self.partner.key_id,
                               private_key=self.partner.private_key, **signing)
        response = self.client.get(path, headers=headers)
        return Reply(response.status_code, dict(response.headers), response.get_json(silent=True))
