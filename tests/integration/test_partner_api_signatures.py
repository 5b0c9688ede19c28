"""Every way a partner request's signature can be wrong is refused with its exact 401 code.

The requests go through the whole Flask stack (test client) on PostgreSQL and SQLite.
Each case starts from a request that would otherwise be accepted (a valid purchase
report) and breaks exactly one thing, so the code proves which check refused it. After
each refusal the books, the accepted nonces and the idempotency keys are exactly as
before: an unauthenticated request must never write to the database.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone
from email.utils import formatdate
from types import SimpleNamespace
from typing import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from alliance.api.errors import PROBLEM_CONTENT_TYPE
from alliance.domain.signatures import BODY_COMPONENTS, REQUIRED_COMPONENTS
from alliance.extensions import hub_state
from alliance.models import Purchase
from alliance.services.partner_keys import revoke_key
from alliance.services.partners import register_key
from tests.factories import make_member, make_signing_partner
from tests.http_server import api_traces, assert_books_unchanged, books, purchase_payload, wall_clock_partner_time
from tests.signing import sign_request

BASE_URL = "http://localhost"
PURCHASES = "/partner/v1/purchases"
ALL_POST_COMPONENTS = (*REQUIRED_COMPONENTS, *BODY_COMPONENTS)


def _extra_key(hub, partner_id: int, key_id: str, *, expires_at: datetime | None = None):  # type: ignore[no-untyped-def]
    private_key = Ed25519PrivateKey.generate()
    public_key = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    with hub.unit_of_work() as uow:
        register_key(uow.session, partner_id=partner_id, key_id=key_id, public_key=public_key,
                     now=wall_clock_partner_time(), expires_at=expires_at)
        uow.commit()
    return SimpleNamespace(key_id=key_id, private_key=private_key)


@pytest.fixture
def world(app):  # type: ignore[no-untyped-def]
    """Two partners with keys, one member, and a valid purchase body to tamper with.

    The shop also has a revoked and an expired key of its own, so no rejection case has
    to change shared state and all of them can run against one database.
    """
    hub = hub_state(app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created, code="shop")
    other = make_signing_partner(hub, now=created, code="rival")
    member = make_member(hub, now=created)
    revoked = _extra_key(hub, partner.partner_id, "shop-revoked-key")
    with hub.unit_of_work() as uow:
        revoke_key(uow.session, key_id=revoked.key_id, now=datetime.now(timezone.utc))
        uow.commit()
    expired = _extra_key(hub, partner.partner_id, "shop-expired-key",
                         expires_at=datetime.now(timezone.utc) - timedelta(hours=1))
    body = json.dumps(purchase_payload("rcpt-1", member.card_number, amount_minor=12_345)).encode()
    return SimpleNamespace(app=app, hub=hub, partner=partner, other=other, member=member, body=body,
                           revoked=revoked, expired=expired, client=app.test_client())


def _sign(world, body: bytes, *, path: str = PURCHASES, method: str = "POST", signer=None,  # type: ignore[no-untyped-def]
          key_id: str | None = None, **options) -> dict[str, str]:
    signer = signer or world.partner
    if method != "GET":
        options.setdefault("idempotency_key", "key-1")
    return sign_request(method=method, url=BASE_URL + path, body=body, key_id=key_id or signer.key_id,
                        private_key=signer.private_key, **options)


def _digest_of(data: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"


def _send(world, body: bytes, headers, *, path: str = PURCHASES, method: str = "POST"):  # type: ignore[no-untyped-def]
    return world.client.open(path, method=method, data=body if method != "GET" else None, headers=headers)


def _assert_problem(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == PROBLEM_CONTENT_TYPE
    problem = response.get_json()
    assert problem["code"] == code, problem
    assert problem["status"] == status
    assert problem["request_id"] == response.headers["X-Request-Id"]
    return problem


def _purchase_count(world) -> int:  # type: ignore[no-untyped-def]
    with world.hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(Purchase))


# --- the rejection matrix: each builder returns (body to send, headers to send) ----------

def _no_signature(world):  # type: ignore[no-untyped-def]
    headers = _sign(world, world.body)
    del headers["Signature"], headers["Signature-Input"]
    return world.body, headers


def _signature_input_but_no_signature(world):  # type: ignore[no-untyped-def]
    headers = _sign(world, world.body)
    del headers["Signature"]
    return world.body, headers


def _two_signatures_in_one_field(world):  # type: ignore[no-untyped-def]
    # Both signatures are individually valid; the hub must still refuse to pick one.
    first, second = _sign(world, world.body), _sign(world, world.body, label="pos2")
    headers = dict(first)
    headers["Signature-Input"] = f'{first["Signature-Input"]}, {second["Signature-Input"]}'
    headers["Signature"] = f'{first["Signature"]}, {second["Signature"]}'
    return world.body, headers


def _two_signatures_in_two_field_lines(world):  # type: ignore[no-untyped-def]
    first, second = _sign(world, world.body), _sign(world, world.body, label="pos2")
    return world.body, [*first.items(), ("Signature-Input", second["Signature-Input"]),
                        ("Signature", second["Signature"])]


def _same_label_twice(world):  # type: ignore[no-untyped-def]
    # Two "pos" members: a dictionary may not repeat a key, so neither copy is trusted.
    first, second = _sign(world, world.body), _sign(world, world.body)
    return world.body, [*first.items(), ("Signature-Input", second["Signature-Input"]),
                        ("Signature", second["Signature"])]


def _wrong_label(world):  # type: ignore[no-untyped-def]
    return world.body, _sign(world, world.body, label="sig1")


def _uncovered(component: str):  # type: ignore[no-untyped-def]
    def build(world):  # type: ignore[no-untyped-def]
        covered = [name for name in ALL_POST_COMPONENTS if name != component]
        # The header itself is still sent; only its coverage by the signature is missing.
        return world.body, _sign(world, world.body, components=covered)
    return build


def _missing_alg(world):  # type: ignore[no-untyped-def]
    return world.body, _sign(world, world.body, include_alg=False)


def _wrong_alg(algorithm: str):  # type: ignore[no-untyped-def]
    def build(world):  # type: ignore[no-untyped-def]
        headers = _sign(world, world.body)
        assert 'alg="ed25519"' in headers["Signature-Input"]
        headers["Signature-Input"] = headers["Signature-Input"].replace('alg="ed25519"', f'alg="{algorithm}"')
        return world.body, headers
    return build


def _unknown_key(world):  # type: ignore[no-untyped-def]
    return world.body, _sign(world, world.body, key_id="nobody-key")


def _revoked_key(world):  # type: ignore[no-untyped-def]
    return world.body, _sign(world, world.body, signer=world.revoked)


def _expired_key(world):  # type: ignore[no-untyped-def]
    return world.body, _sign(world, world.body, signer=world.expired)


def _other_partners_key_id(world):  # type: ignore[no-untyped-def]
    # The rival names the shop's key but can only sign with its own private key.
    return world.body, _sign(world, world.body, signer=world.other, key_id=world.partner.key_id)


def _created(offset_s: int, lifetime_s: int = 300):  # type: ignore[no-untyped-def]
    def build(world):  # type: ignore[no-untyped-def]
        created = datetime.now(timezone.utc) + timedelta(seconds=offset_s)
        return world.body, _sign(world, world.body, created=created, lifetime_s=lifetime_s)
    return build


def _short_nonce(world):  # type: ignore[no-untyped-def]
    return world.body, _sign(world, world.body, nonce="only-64-bits")


def _body_byte_changed(world):  # type: ignore[no-untyped-def]
    headers = _sign(world, world.body)
    tampered = world.body.replace(b'"amount_minor": 12345', b'"amount_minor": 92345')
    assert len(tampered) == len(world.body) and tampered != world.body
    return tampered, headers


def _digest_header_changed(world):  # type: ignore[no-untyped-def]
    headers = _sign(world, world.body)
    headers["Content-Digest"] = _digest_of(b"some other body")
    return world.body, headers


def _unknown_digest_algorithm(world):  # type: ignore[no-untyped-def]
    headers = _sign(world, world.body)
    headers["Content-Digest"] = "md5=:" + base64.b64encode(hashlib.md5(world.body).digest()).decode() + ":"
    return world.body, headers


def _body_and_digest_changed(world):  # type: ignore[no-untyped-def]
    # A consistent new digest passes the digest check, but the signature covers the old one.
    headers = _sign(world, world.body)
    tampered = world.body.replace(b'"amount_minor": 12345', b'"amount_minor": 92345')
    headers["Content-Digest"] = _digest_of(tampered)
    return tampered, headers


def _idempotency_key_changed(world):  # type: ignore[no-untyped-def]
    headers = _sign(world, world.body)
    headers["Idempotency-Key"] = "key-2"
    return world.body, headers


def _signed_for_another_path(world):  # type: ignore[no-untyped-def]
    return world.body, _sign(world, world.body, path=PURCHASES + "/batch")


def _unsigned_garbage_body(world):  # type: ignore[no-untyped-def]
    # The body is parsed only after the signature passed, so garbage never reaches the parser.
    return b"{not json", {"Content-Type": "application/json", "Idempotency-Key": "key-1"}


READ_PATH = PURCHASES + "/rcpt-unknown"


def _unsigned_read(world):  # type: ignore[no-untyped-def]
    return "GET", READ_PATH, b"", {}


def _read_covering(*components: str):  # type: ignore[no-untyped-def]
    def build(world):  # type: ignore[no-untyped-def]
        return "GET", READ_PATH, b"", _sign(world, b"", path=READ_PATH, method="GET", components=list(components))
    return build


REJECTIONS: list[tuple[str, str, Callable]] = [  # type: ignore[type-arg]
    ("no_signature", "signature_missing", _no_signature),
    ("signature_input_without_signature", "signature_missing", _signature_input_but_no_signature),
    ("unsigned_with_a_garbage_body", "signature_missing", _unsigned_garbage_body),
    ("unsigned_read", "signature_missing", _unsigned_read),
    ("two_signatures_in_one_field", "signature_multiple", _two_signatures_in_one_field),
    ("two_signatures_in_two_field_lines", "signature_multiple", _two_signatures_in_two_field_lines),
    ("same_label_twice", "signature_malformed", _same_label_twice),
    ("label_is_not_pos", "signature_label", _wrong_label),
    *[(f"{name}_not_covered", "signature_components", _uncovered(name)) for name in ALL_POST_COMPONENTS],
    ("read_without_query_covered", "signature_components", _read_covering("@method", "@path")),
    ("read_without_path_covered", "signature_components", _read_covering("@method", "@query")),
    ("alg_missing", "signature_algorithm", _missing_alg),
    ("alg_hmac_sha256", "signature_algorithm", _wrong_alg("hmac-sha256")),
    ("alg_rsa_pss_sha512", "signature_algorithm", _wrong_alg("rsa-pss-sha512")),
    ("key_unknown", "key_unknown", _unknown_key),
    ("key_revoked", "key_revoked", _revoked_key),
    ("key_expired", "key_expired", _expired_key),
    ("other_partners_key_id_with_own_private_key", "signature_invalid", _other_partners_key_id),
    ("created_301_s_ago", "signature_expired", _created(-301)),
    ("created_200_s_ago_and_expired", "signature_expired", _created(-200, lifetime_s=100)),
    ("created_90_s_ahead", "signature_from_future", _created(90)),
    ("expires_301_s_after_created", "signature_lifetime", _created(0, lifetime_s=301)),
    ("expires_equal_to_created", "signature_lifetime", _created(0, lifetime_s=0)),
    ("nonce_under_128_bits", "signature_nonce", _short_nonce),
    ("one_body_byte_changed", "content_digest_mismatch", _body_byte_changed),
    ("content_digest_of_other_bytes", "content_digest_mismatch", _digest_header_changed),
    ("content_digest_unknown_algorithm", "content_digest_malformed", _unknown_digest_algorithm),
    ("body_and_digest_changed_together", "signature_invalid", _body_and_digest_changed),
    ("idempotency_key_changed_after_signing", "signature_invalid", _idempotency_key_changed),
    ("signed_for_another_path", "signature_invalid", _signed_for_another_path),
]


def _each_rejection_is_refused_without_trace(world, subtests) -> None:  # type: ignore[no-untyped-def]
    # One database per backend for the whole matrix (a fresh PostgreSQL database per
    # case would dominate the run time); each case is still reported on its own.
    for name, code, build in REJECTIONS:
        with subtests.test(msg=name, expected_code=code):
            attempt = build(world)
            method, path, body, headers = attempt if len(attempt) == 4 else ("POST", PURCHASES, *attempt)
            before, traces_before = books(world.hub), api_traces(world.hub)

            response = _send(world, body, headers, path=path, method=method)

            _assert_problem(response, 401, code)
            assert_books_unchanged(world.hub, before)
            # Not even the nonce or an idempotency key is recorded for an unauthenticated request.
            assert api_traces(world.hub) == traces_before


def test_each_badly_signed_request_is_refused_with_its_code_and_leaves_no_trace(world, subtests):
    _each_rejection_is_refused_without_trace(world, subtests)
    # Every case ran against a member who never earned a point.
    assert _purchase_count(world) == 0


def test_the_refusals_are_the_same_once_the_signing_keys_are_cached(world, subtests):
    # A write whose key is cached is verified without a query (partner_keys.KeyCache);
    # every refusal must still be the one the database's verification gives, and leave
    # nothing behind. One accepted write of each partner puts both keys in the cache.
    for index, signer in enumerate((world.partner, world.other), start=1):
        body = json.dumps(purchase_payload(f"rcpt-warm-{index}", world.member.card_number)).encode()
        assert _send(world, body, _sign(world, body, signer=signer, idempotency_key=f"warm-{index}")).status_code == 201
    cache = hub_state(world.app).extras["partner_key_cache"]
    assert cache.get(world.partner.key_id) is not None and cache.get(world.other.key_id) is not None
    _each_rejection_is_refused_without_trace(world, subtests)
    assert _purchase_count(world) == 2


ACCEPTED_EDGES = [
    ("created_250_s_ago_inside_the_300_s_window", {"created_offset_s": -250}),
    ("created_45_s_ahead_inside_the_60_s_skew", {"created_offset_s": 45}),
    ("expires_exactly_300_s_after_created", {"lifetime_s": 300}),
    ("standard_client_also_covers_date", {"cover_date": True}),
]


def test_signatures_at_the_edges_of_the_rules_are_accepted(world, subtests):
    # Positive controls for the matrix: the limits are where docs/design.md ("Signatures") puts them, not tighter.
    for index, (name, options) in enumerate(ACCEPTED_EDGES, start=1):
        with subtests.test(msg=name):
            signing: dict = {"idempotency_key": f"edge-{index}"}  # type: ignore[type-arg]
            if "created_offset_s" in options:
                signing["created"] = datetime.now(timezone.utc) + timedelta(seconds=options["created_offset_s"])
            if "lifetime_s" in options:
                signing["lifetime_s"] = options["lifetime_s"]
            if options.get("cover_date"):
                signing["headers"] = {"Date": formatdate(usegmt=True)}
                signing["components"] = [*ALL_POST_COMPONENTS, "date"]
            body = json.dumps(purchase_payload(f"rcpt-edge-{index}", world.member.card_number)).encode()
            response = _send(world, body, _sign(world, body, **signing))
            assert response.status_code == 201, response.get_json()
            assert _purchase_count(world) == index
    with subtests.test(msg="fully_signed_read"):
        traces_before = api_traces(world.hub)
        response = _send(world, b"", _sign(world, b"", path=READ_PATH, method="GET"), path=READ_PATH, method="GET")
        # Authenticated: the lookup ran and found nothing, and the nonce was recorded.
        _assert_problem(response, 404, "not_found")
        assert api_traces(world.hub)["nonces"] == traces_before["nonces"] + 1


def test_the_exact_same_signed_request_sent_twice_is_refused_as_a_replay(world):
    headers = _sign(world, world.body)
    first = _send(world, world.body, headers)
    assert first.status_code == 201
    after_first, traces_after_first = books(world.hub), api_traces(world.hub)

    replay = _send(world, world.body, headers)

    _assert_problem(replay, 401, "signature_replayed")
    assert_books_unchanged(world.hub, after_first)
    assert api_traces(world.hub) == traces_after_first
    assert _purchase_count(world) == 1

    # Reads are protected the same way.
    read_headers = _sign(world, b"", path=PURCHASES + "/rcpt-1", method="GET")
    assert _send(world, b"", read_headers, path=PURCHASES + "/rcpt-1", method="GET").status_code == 200
    _assert_problem(_send(world, b"", read_headers, path=PURCHASES + "/rcpt-1", method="GET"), 401,
                    "signature_replayed")


def test_a_signed_body_one_byte_over_the_size_limit_is_a_413_problem_and_at_the_limit_is_accepted(world):
    limit = world.app.config["MAX_CONTENT_LENGTH"]
    # Valid JSON padded with whitespace: only its size is wrong, and it is correctly signed.
    oversized = world.body + b" " * (limit + 1 - len(world.body))
    before, traces_before = books(world.hub), api_traces(world.hub)

    response = _send(world, oversized, _sign(world, oversized))

    _assert_problem(response, 413, "request_entity_too_large")
    assert_books_unchanged(world.hub, before)
    assert api_traces(world.hub) == traces_before

    # One byte less, and the same purchase goes through.
    at_limit = oversized[:-1]
    assert len(at_limit) == limit
    accepted = _send(world, at_limit, _sign(world, at_limit, idempotency_key="key-2"))
    assert accepted.status_code == 201, accepted.get_json()
    assert _purchase_count(world) == 1
