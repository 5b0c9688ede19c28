"""Hypothesis fuzzing of the purchase, purchase refund and redemption payloads.

Each example mixes valid and hostile fields — wrong types, huge and negative numbers,
unicode, missing and extra fields, far-future and naive dates, wrong currencies — and
sometimes a hostile body shape: duplicate keys, deep nesting, bytes that are not JSON.
Every request is properly signed, so what is tested is the body. The hub must never
answer 500, every refusal must be problem+json, a refused request must leave the books
exactly as they were, and (for purchases, where validity is decidable from the payload
alone) a request is accepted exactly when every field is valid.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance.extensions import hub_state
from tests.factories import make_member_with_pin, make_signing_partner
from tests.fuzz_support import assert_problem, fuzz_examples, tally_fixture
from tests.http_server import assert_audit_green, books, fund_member, purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

PURCHASES = "/partner/v1/purchases"
REDEMPTIONS = "/partner/v1/redemptions"
PIN = "2468"
MISSING = object()
FUZZ_SETTINGS = settings(max_examples=fuzz_examples(40), deadline=None, database=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                HealthCheck.data_too_large])

fuzz_tally = tally_fixture("payload fuzzing: signed requests per payload kind")
unique = itertools.count()


@dataclass(frozen=True)
class Choice:
    """How to draw one field: a valid value, or a hostile one."""

    valid: st.SearchStrategy[Any]
    invalid: st.SearchStrategy[Any]


JUNK = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=20),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
HUGE = st.one_of(st.integers(min_value=10**12 + 1, max_value=10**40), st.integers(max_value=-(10**12)))
NEGATIVE_OR_ZERO = st.integers(min_value=-(10**6), max_value=0)
UNICODE_TEXT = st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF, exclude_categories=("Cs",)),
                       min_size=1, max_size=30)
REFERENCE_CHARS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._:-", min_size=1, max_size=20)


def amounts(valid_max: int = 10**9) -> Choice:
    return Choice(
        st.integers(min_value=1, max_value=valid_max),
        st.one_of(NEGATIVE_OR_ZERO, HUGE, st.floats(allow_nan=False, min_value=1, max_value=1e6),
                  st.integers(min_value=1, max_value=10**6).map(str),
                  JUNK.filter(lambda value: not isinstance(value, int))),
    )


def references(prefix: str) -> Choice:
    return Choice(
        REFERENCE_CHARS.map(lambda text: f"{prefix}-{next(unique)}-{text}"[:64]),
        st.one_of(st.just(""), st.text(min_size=65, max_size=80, alphabet="ab"), UNICODE_TEXT,
                st.just("a/b"), st.just("a b"), st.integers(), st.none()),
    )


def purchase_times() -> Choice:
    now = datetime.now(timezone.utc)
    return Choice(
        st.integers(min_value=1, max_value=600).map(lambda minutes: (now - timedelta(minutes=minutes)).isoformat()),
        st.one_of(
            st.integers(min_value=2, max_value=10**6).map(lambda days: (now + timedelta(days=days)).isoformat()),
            st.just("9999-12-31T23:59:59+00:00"), st.just("0001-01-01T00:00:00+00:00"),
            st.just((now - timedelta(minutes=5)).replace(tzinfo=None).isoformat()),
            st.just("2026-13-45T99:99:99Z"), st.just("yesterday"), UNICODE_TEXT, st.integers(), st.none(),
        ),
    )


def drawn_payload(draw, fields: dict[str, Choice], optional: tuple[str, ...] = ()) -> tuple[dict[str, Any], bool]:  # type: ignore[no-untyped-def]
    """A payload with each field valid, hostile or missing, sometimes with extra fields; and whether it is valid."""
    payload: dict[str, Any] = {}
    is_valid = True
    for name, choice in fields.items():
        # Mostly valid fields, so that whole payloads are often valid and the interesting
        # examples are one or two bad fields among good ones.
        roll = draw(st.integers(0, 9))
        if roll == 0:
            is_valid = is_valid and name in optional
        elif roll == 1:
            payload[name] = draw(choice.invalid)
            is_valid = False
        else:
            payload[name] = draw(choice.valid)
    if draw(st.integers(0, 3)):
        return payload, is_valid
    extras = draw(st.dictionaries(st.sampled_from(["points", "partner_id", "status", "points_total", "member_id",
                                                   "__proto__", "amount_minor ", "é"]), JUNK, max_size=2))
    extras = {name: value for name, value in extras.items() if name not in payload}
    payload.update(extras)
    return payload, is_valid and not extras


@st.composite
def bodies(draw, payload_and_validity) -> tuple[bytes, bool | None]:  # type: ignore[no-untyped-def]
    """The request body: the payload as JSON, or a hostile shape of it; validity None when undecidable."""
    payload, is_valid = payload_and_validity
    shape = draw(st.sampled_from(["plain"] * 6 + ["duplicate_key", "deeply_nested", "not_json", "not_utf8",
                                                  "top_level_array"]))
    text = json.dumps(payload, ensure_ascii=draw(st.booleans()))
    if shape == "plain":
        return text.encode(), is_valid
    if shape == "duplicate_key" and payload:
        name = draw(st.sampled_from(sorted(payload)))
        # The first of two equal keys smuggling another value; which one wins is the parser's affair.
        return ("{" + json.dumps(name) + ": " + json.dumps(draw(JUNK)) + ", " + text[1:]).encode(), None
    if shape == "deeply_nested":
        depth = draw(st.sampled_from([40, 1_000, 100_000]))
        return text[:-1].encode() + b', "nested": ' + b"[" * depth + b"]" * depth + b"}", False
    if shape == "not_json":
        return draw(st.sampled_from([b"", b"{", b"null", b"nan", b"{'a': 1}", text.encode()[:-1]])), False
    if shape == "not_utf8":
        return b'{"receipt_id": "\xff\xfe"}', False
    return json.dumps([payload]).encode(), False


def check_reply(hub, tally, label: str, body: bytes, path: str, expected_valid: bool | None,  # type: ignore[no-untyped-def]
                client: SignedTestClient, success_status: int) -> int:
    """Send ``body`` signed; assert the hostile-input contract; returns the status."""
    before = books(hub)
    reply = client.post(path, body)
    tally.record(label, reply.status)
    assert reply.status < 500, reply.body
    if reply.status >= 400:
        assert_problem(reply.status, reply.headers.get("Content-Type"), reply.body)
        assert books(hub) == before
    else:
        assert reply.status == success_status, reply.body
        assert books(hub) != before
    if expected_valid is not None:
        assert (reply.status == success_status) == expected_valid, (body[:300], reply.status, reply.body)
    return reply.status


def _world(app):  # type: ignore[no-untyped-def]
    hub = hub_state(app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created)
    member = make_member_with_pin(hub, now=created, pin=PIN)
    return hub, partner, member, SignedTestClient(app, partner)


def test_fuzzed_purchases_are_accepted_exactly_when_valid_and_refusals_change_nothing(app, fuzz_tally):
    hub, _, member, client = _world(app)
    wrong_digit = member.card_number[:-1] + str((int(member.card_number[-1]) + 1) % 10)
    fields = {
        "receipt_id": references("r"),
        "card_number": Choice(st.just(member.card_number),
                              st.one_of(st.just(wrong_digit), st.just(member.card_number[:15]),
                                        st.just(int(member.card_number)), UNICODE_TEXT, st.none())),
        "amount_minor": amounts(),
        "currency": Choice(st.just("EUR"),
                           st.one_of(st.sampled_from(["USD", "eur", "EURO", "", "€", "E\u0301R"]), st.integers())),
        "purchased_at": purchase_times(),
        "terminal": Choice(st.just("till-1"),
                           st.one_of(st.just("till-404"), st.just("TILL 1"), UNICODE_TEXT, st.integers())),
    }

    @FUZZ_SETTINGS
    @given(st.data())
    def purchase_contract(data) -> None:  # type: ignore[no-untyped-def]
        payload_and_validity = drawn_payload(data.draw, fields, optional=("terminal",))
        body, expected_valid = data.draw(bodies(payload_and_validity))
        check_reply(hub, fuzz_tally, "purchase", body, PURCHASES, expected_valid, client, 201)

    purchase_contract()
    assert_audit_green(hub)


def test_fuzzed_purchase_refunds_never_fail_loudly_and_refusals_change_nothing(app, fuzz_tally):
    hub, _, member, client = _world(app)
    receipt_ids = [f"base-{index}" for index in range(3)]
    for receipt_id in receipt_ids:
        assert client.post(PURCHASES,
                           purchase_payload(receipt_id, member.card_number, amount_minor=50_000)).status == 201
    fields = {"refund_id": references("rf"), "amount_minor": amounts(valid_max=60_000)}
    paths = st.one_of(st.sampled_from([f"{PURCHASES}/{receipt_id}/refunds" for receipt_id in receipt_ids]),
                      st.sampled_from([f"{PURCHASES}/missing/refunds", f"{PURCHASES}/%E2%82%AC/refunds",
                                       f"{PURCHASES}/{'x' * 300}/refunds"]))

    @FUZZ_SETTINGS
    @given(st.data())
    def refund_contract(data) -> None:  # type: ignore[no-untyped-def]
        body, _ = data.draw(bodies(drawn_payload(data.draw, fields)))
        check_reply(hub, fuzz_tally, "purchase refund", body, data.draw(paths), None, client, 201)

    refund_contract()
    assert_audit_green(hub)


def test_fuzzed_redemptions_never_fail_loudly_and_refusals_change_nothing(app, fuzz_tally):
    hub, partner, member, client = _world(app)
    fund_member(hub, member_id=member.member_id, partner_id=partner.partner_id, points=1_000_000)
    right_pin = {"card_number": member.card_number, "pin": PIN}
    hostile_proofs = st.one_of(
        st.just({"card_number": member.card_number, "pin": "0000"}),
        st.just({"redemption_code": "ABCDEF123"}),
        st.just({"card_number": member.card_number, "pin": PIN, "redemption_code": "ABCDEF123"}),
        st.fixed_dictionaries({"card_number": UNICODE_TEXT, "pin": st.one_of(st.integers(), UNICODE_TEXT)}),
        st.just({}),
    )
    proofs = st.integers(0, 4).flatmap(lambda roll: st.just(dict(right_pin)) if roll else hostile_proofs)
    fields = {
        "reference": references("red"),
        "points": amounts(valid_max=2_000_000),
        "ttl_s": Choice(st.integers(min_value=30, max_value=900),
                        st.one_of(st.integers(max_value=29), st.integers(min_value=10**7), JUNK)),
        "terminal": Choice(st.just("till-1"), st.one_of(st.just("till-404"), UNICODE_TEXT)),
    }

    capture_amounts = amounts(valid_max=10)

    @FUZZ_SETTINGS
    @given(st.data())
    def redemption_contract(data) -> None:  # type: ignore[no-untyped-def]
        payload, is_valid = drawn_payload(data.draw, fields, optional=("ttl_s", "terminal"))
        # A wrong PIN is counted and locks the card after a few; later PIN proofs then get 403 pin_locked.
        payload.update(data.draw(proofs))
        body, _ = data.draw(bodies((payload, is_valid)))
        # Drawn before sending: what hypothesis draws must not depend on the hub's replies.
        action = data.draw(st.sampled_from(["capture", "void", "leave"]))
        capture_points = data.draw(st.one_of(capture_amounts.valid, capture_amounts.invalid))
        status = check_reply(hub, fuzz_tally, "redemption", body, REDEMPTIONS, None, client, 201)
        if status == 201:
            reference = json.loads(body)["reference"]
            if action != "leave":
                extra = {"points": capture_points} if action == "capture" else {}
                reply = client.post(f"{REDEMPTIONS}/{reference}/{action}", extra)
                fuzz_tally.record(f"redemption {action}", reply.status)
                assert reply.status < 500
                if reply.status >= 400:
                    assert_problem(reply.status, reply.headers.get("Content-Type"), reply.body)

    redemption_contract()
    assert_audit_green(hub)


def test_fuzzed_behaviour_events_are_accepted_exactly_when_valid_and_refusals_change_nothing(app, fuzz_tally):
    from alliance.services import behaviour_points

    hub, _, member, client = _world(app)
    with hub.unit_of_work() as uow:
        behaviour_points.set_rule(uow.session, event_type="survey", points=10, now=wall_clock_partner_time(),
                                  actor="test")
        uow.commit()
    fields = {
        "event_id": references("ev"),
        "event_type": Choice(st.just("survey"), st.one_of(st.sampled_from(["SURVEY", "birthday", "", "survey "]),
                                                          st.integers(), st.none())),
        "card_number": Choice(st.just(member.card_number),
                              st.one_of(st.just(member.card_number[:15]), st.just(int(member.card_number)),
                                        UNICODE_TEXT, st.none())),
        "occurred_at": purchase_times(),
    }

    @FUZZ_SETTINGS
    @given(st.data())
    def event_contract(data) -> None:  # type: ignore[no-untyped-def]
        body, expected_valid = data.draw(bodies(drawn_payload(data.draw, fields)))
        check_reply(hub, fuzz_tally, "behaviour event", body, "/partner/v1/events", expected_valid, client, 201)

    event_contract()
    assert_audit_green(hub)
