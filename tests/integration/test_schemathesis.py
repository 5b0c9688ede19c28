"""Schemathesis against the hub's own OpenAPI document, for every operation it lists.

Each generated request is sent through the Flask test client with real credentials:
partner operations signed with RFC 9421 like a till (tests/signing.py), back-office
operations with a bearer token holding every role. Whatever schemathesis generates —
valid or not — the hub must never answer 500, every 4xx must be a complete problem+json
document, and every reply must conform to the status codes, content types, headers and
schemas the document states.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from werkzeug.test import EnvironBuilder

from alliance.api.partner.idempotent import KEY_PATTERN
from alliance.extensions import hub_state
from tests.back_office_support import ROLES, BackOffice
from tests.factories import SigningPartner, make_member_with_pin, make_signing_partner
from tests.fuzz_support import assert_problem, fuzz_examples, tally_fixture
from tests.http_server import fund_member, purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient
from tests.signing import sign_request

BASE_URL = "http://localhost"
EXAMPLES_PER_OPERATION = fuzz_examples(12)
SIGNATURE_HEADERS = ("Signature", "Signature-Input", "Content-Digest")

fuzz_tally = tally_fixture("schemathesis: requests per operation")


@pytest.fixture
def world(pg_app) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A hub with a partner, a member with points, a purchase and a redemption, and a bearer token."""
    hub = hub_state(pg_app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created)
    member = make_member_with_pin(hub, now=created, pin="2468")
    fund_member(hub, member_id=member.member_id, partner_id=partner.partner_id, points=5_000)
    till = SignedTestClient(pg_app, partner)
    assert till.post("/partner/v1/purchases", purchase_payload("r-1", member.card_number)).status == 201
    assert till.post("/partner/v1/redemptions", {"reference": "red-1", "points": 100,
                                                 "card_number": member.card_number, "pin": "2468"}).status == 201
    return {"app": pg_app, "partner": partner, "client": pg_app.test_client(),
            "token": BackOffice(pg_app).token(*ROLES)}


def _body_bytes(transport: dict[str, Any]) -> bytes:
    if "json" in transport:
        return json.dumps(transport["json"]).encode()
    data = transport.get("data")
    if data is None:
        return b""
    return data if isinstance(data, bytes) else str(data).encode()


def _idempotency_key(generated: object) -> str:
    """The generated key if the hub would accept its form, else a fresh one (so the body is what is tested)."""
    return generated if isinstance(generated, str) and KEY_PATTERN.match(generated) else str(uuid.uuid4())


def _send(world: dict[str, Any], case) -> Any:  # type: ignore[no-untyped-def]
    """Send the case with real credentials; returns the Werkzeug test response."""
    transport = case.as_transport_kwargs(base_url=BASE_URL)
    body = _body_bytes(transport)
    headers = {name: value for name, value in transport["headers"].items()
               if name not in SIGNATURE_HEADERS and name.lower() not in {"authorization", "idempotency-key"}}
    builder = EnvironBuilder(path=transport["path"], base_url=BASE_URL, method=case.method.upper(),
                             query_string=transport.get("query_string") or None, data=body)
    target = builder.request_uri
    if case.path.startswith("/partner/"):
        partner: SigningPartner = world["partner"]
        method = case.method.upper()
        idempotency_key = _idempotency_key(case.headers.get("Idempotency-Key") if case.headers else None) \
            if method != "GET" else None
        signed = sign_request(method=method, url=BASE_URL + target, body=body, key_id=partner.key_id,
                              private_key=partner.private_key, idempotency_key=idempotency_key,
                              headers={"Content-Type": headers.pop("Content-Type", "application/json")}
                              if method != "GET" else None)
        headers.update(signed)
    else:
        headers["Authorization"] = f"Bearer {world['token']}"
    builder.headers.clear()
    for name, value in headers.items():
        builder.headers[name] = value
    return world["client"].open(builder)


def test_every_operation_answers_generated_requests_as_documented(world, fuzz_tally, subtests):  # type: ignore[no-untyped-def]
    hub_schema = schemathesis.openapi.from_wsgi("/openapi.json", world["app"])
    operations = [result.ok() for result in hub_schema.get_all_operations()]
    assert len(operations) >= 50
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        with subtests.test(operation=label):
            _fuzz(operation, label, world, fuzz_tally)


def _fuzz(operation, label: str, world: dict[str, Any], fuzz_tally) -> None:  # type: ignore[no-untyped-def]
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def answers_as_documented(case) -> None:  # type: ignore[no-untyped-def]
        response = _send(world, case)
        fuzz_tally.record(label, response.status_code)
        assert response.status_code < 500, response.get_data(as_text=True)
        if 400 <= response.status_code < 500:
            assert_problem(response.status_code, response.headers.get("Content-Type"),
                           response.get_json(silent=True))
        case.validate_response(response, excluded_checks=EXCLUDED_CHECKS)

    answers_as_documented()


# Checks that re-send a request themselves would send it unsigned (or replay its nonce)
# and so test the signature check instead of the operation; the signature and bearer
# checks have their own tests (test_partner_api_signatures.py, test_back_office_auth.py).
# positive_data_acceptance expects every schema-valid body to succeed, but business
# rules the schema cannot express (the partner's own currency, a card that exists,
# enough points) rightly refuse such bodies with a 422 problem, which is checked above.
EXCLUDED_CHECKS = [schemathesis.checks.ignored_auth, schemathesis.checks.use_after_free,
                   schemathesis.checks.ensure_resource_availability, schemathesis.checks.unsupported_method,
                   schemathesis.checks.positive_data_acceptance]
