"""Partner coupons at the till, through the signed partner API: bonus and multiplier coupons on a purchase, every
refusal (nothing written), single use under replays and concurrency, amount_off with a redemption, the funder
charged on its statement, and a refund clawing the coupon's points back."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select, update

from alliance.domain.coupons import CouponInvalid
from alliance.domain.errors import NotFound, ValidationFailed
from alliance.extensions import HubState, hub_state
from alliance.models import Coupon, CouponSeries, CouponUse, JournalTransaction, PointLot, Purchase
from alliance.services import coupons, member_verification, purchases, redemptions, risk
from settlement import closing as settlement_closing
from settlement.cycles import Cycle, Frequency
from tests.factories import make_member, make_member_with_pin, make_partner, make_signing_partner
from tests.http_server import assert_audit_green, books, fund_member, purchase_payload, wall_clock_partner_time
from tests.partner_client import Reply, SignedTestClient

PURCHASES = "/partner/v1/purchases"
REDEMPTIONS = "/partner/v1/redemptions"
PIN = "2468"
BRAND_PRICE = Decimal("0.0125")
# 123.45 EUR at 1 point per EUR: 123 base points.
AMOUNT = 12_345


def _shop(app: Any) -> SimpleNamespace:
    """A signing shop (the till), a funding brand (another partner, 1.25 cents a point), and two members."""
    hub = hub_state(app)
    created = wall_clock_partner_time()
    shop = make_signing_partner(hub, now=created, code="shop")
    brand = make_partner(hub, now=created, code="brand", settlement_cycle="daily", time_zone="UTC",
                         issue_price_per_point=BRAND_PRICE)
    far = make_partner(hub, now=created, code="far", currency="USD")
    member = make_member_with_pin(hub, now=created, pin=PIN)
    other = make_member(hub, now=created)
    return SimpleNamespace(app=app, hub=hub, shop=shop, brand=brand, far=far, member=member, other=other,
                           client=SignedTestClient(app, shop), created=created)


def _series(hub: HubState, code: str, **terms: Any) -> str:
    now = datetime.now(timezone.utc)
    arguments: dict[str, Any] = {"title": code.title(), "funder": "brand", "kind": "bonus", "bonus_points": 50,
                                 "valid_from": now - timedelta(days=1), "valid_until": now + timedelta(days=30),
                                 "valid_at": ["shop"]}
    arguments.update(terms)
    with hub.unit_of_work() as uow:
        coupons.create_series(uow.session, code=code, now=now, actor="test:ops", **arguments)
        uow.commit()
    return code


def _issue(hub: HubState, series: str, *member_numbers: str) -> dict[str, str]:
    """Issue the series to these members; their codes by member number."""
    with hub.unit_of_work() as uow:
        coupons.issue(uow.session, code=series, member_numbers=list(member_numbers),
                      now=datetime.now(timezone.utc), actor="test:ops")
        listed = coupons.coupon_codes(uow.session, code=series)
        uow.commit()
    return {row["member_number"]: row["code"] for row in listed["coupons"]}


def _uses(hub: HubState) -> list[tuple[str, int]]:
    with hub.unit_of_work() as uow:
        return sorted(uow.session.execute(select(Coupon.code, Coupon.uses)).all())


def _buy(env: SimpleNamespace, receipt: str, code: str | None, **extra: Any) -> Reply:
    payload = purchase_payload(receipt, env.member.card_number, amount_minor=AMOUNT, **extra)
    if code is not None:
        payload["coupon_code"] = code
    return env.client.post(PURCHASES, payload)


def test_bonus_and_multiplier_coupons_are_posted_by_their_funders_and_charged_on_the_statement(app):
    env = _shop(app)
    hub = env.hub
    number = env.member.member_number
    bonus = _issue(hub, _series(hub, "brand-fifty"), number)[number]
    double = _issue(hub, _series(hub, "hub-double", funder="hub", kind="multiplier", bonus_points=None,
                                 multiplier=Decimal("1.5"), valid_at=None), number)[number]

    first = _buy(env, "r-bonus", bonus)
    assert first.status == 201, first.body
    assert first.body["points"]["total"] == 123 + 50
    line = first.body["breakdown"]["coupon"]
    assert line == {"series": "brand-fifty", "title": "Brand-Fifty", "code": bonus, "kind": "bonus",
                    "funded_by": "brand", "points": 50}
    # Codes are read at the till as typed: lower case and hyphens are the same code.
    second = _buy(env, "r-double", f"{double[:5]}-{double[5:]}".lower())
    assert second.status == 201, second.body
    assert second.body["points"]["total"] == 123 + 61  # floor(123 x 0.5)
    assert second.body["breakdown"]["coupon"]["points"] == 61
    assert second.body["breakdown"]["coupon"]["funded_by"] == "hub"

    with hub.unit_of_work() as uow:
        postings = uow.session.execute(
            select(JournalTransaction.partner_id, JournalTransaction.price_per_point, PointLot.points_earned)
            .join(PointLot, PointLot.earn_transaction_id == JournalTransaction.id)
            .where(JournalTransaction.kind == "coupon_bonus").order_by(JournalTransaction.id)).all()
        used = uow.session.execute(select(CouponUse.points, CouponUse.purchase_id.is_not(None))
                                   .order_by(CouponUse.id)).all()
    # Each coupon in its own lot: the brand's at its issue price, the hub's at no price.
    assert postings == [(env.brand, BRAND_PRICE, 50), (None, None, 61)]
    assert used == [(50, True), (61, True)]

    statement = _close(hub, env.brand, "brand")
    issued = [line for line in statement["lines"] if line["line_kind"] == "coupon_points_issued"]
    assert [(line["points"], Decimal(line["price_per_point"]), line["amount_minor"]) for line in issued] == [
        (50, BRAND_PRICE, 62)]  # 50 points x 1.25 cents = 62.5, rounded half to even
    # The shop's own statement carries none of it.
    assert not [line for line in _close(hub, env.shop.partner_id, "shop")["lines"]
                if line["line_kind"] == "coupon_points_issued"]

    # A full refund claws the coupon's points back with the purchase's own.
    refund = env.client.post(f"{PURCHASES}/r-bonus/refunds", {"refund_id": "rf-1", "amount_minor": AMOUNT})
    assert refund.status == 201, refund.body
    assert refund.body["points_recovered"] == 123 + 50
    with hub.unit_of_work() as uow:
        remaining = uow.session.execute(
            select(PointLot.points_remaining).join(JournalTransaction,
                                                   JournalTransaction.id == PointLot.earn_transaction_id)
            .where(JournalTransaction.kind == "coupon_bonus", JournalTransaction.partner_id == env.brand)).scalar()
    assert remaining == 0
    with hub.unit_of_work() as uow:
        view = coupons.series_view(uow.session, code="brand-fifty")
    assert (view["coupons_issued"], view["uses"], view["points"]) == (1, 1, 50)
    assert view["charged"] == [{"currency": "EUR", "price_per_point": BRAND_PRICE, "points": 50}]
    assert_audit_green(hub)


def _close(hub: HubState, partner_id: int, code: str) -> dict[str, Any]:
    """Close the partner's daily cycle around today and return its signed statement."""
    signer = hub.statement_signer
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    cycle = Cycle(code, Frequency.DAILY, today - timedelta(days=1), today + timedelta(days=1))
    with hub.unit_of_work() as uow:
        closed = settlement_closing.close_cycle(
            uow.session, partner_id=partner_id, cycle=cycle, now=cycle.ends_at + timedelta(hours=1),
            signing_key=signer.signing_key, key_id=signer.key_id, payment_terms_days=signer.payment_terms_days)
        uow.commit()
    return json.loads(closed.document_json)


def test_every_refusal_is_coupon_invalid_with_its_reason_and_writes_nothing(app):
    env = _shop(app)
    hub = env.hub
    number, other = env.member.member_number, env.other.member_number
    now = datetime.now(timezone.utc)
    codes = {
        "theirs": _issue(hub, _series(hub, "theirs"), other)[other],
        "later": _issue(hub, _series(hub, "later", valid_from=now + timedelta(days=1)), number)[number],
        "stopped": _issue(hub, _series(hub, "stopped"), number)[number],
        "elsewhere": _issue(hub, _series(hub, "elsewhere", valid_at=["brand"]), number)[number],
        "money": _issue(hub, _series(hub, "money", kind="amount_off", bonus_points=None, amount_off_minor=500,
                                     currency="EUR", points_cost=400), number)[number],
        "used": _issue(hub, _series(hub, "used"), number)[number],
        "bonus": _issue(hub, _series(hub, "bonus"), number)[number],
    }
    expired = _series(hub, "expired")
    codes["expired"] = _issue(hub, expired, number)[number]
    with hub.unit_of_work() as uow:
        coupons.stop_series(uow.session, code="stopped", reason="sent by mistake", now=now, actor="test:ops")
        # The expired series' validity ended a minute ago (set straight in the table: a series is created open).
        uow.session.execute(coupons_update_validity(expired, now - timedelta(minutes=1)))
        uow.commit()
    assert _buy(env, "r-use", codes["used"]).status == 201
    fund_member(hub, member_id=env.member.member_id, partner_id=env.shop.partner_id, points=1_000)

    before, uses = books(hub), _uses(hub)
    cases = [
        ("NOSUCHCODE", "no coupon with code 'NOSUCHCODE'"),
        (codes["theirs"], "belongs to another member"),
        (codes["later"], "is not valid before"),
        (codes["expired"], "expired at"),
        (codes["used"], "has been used up (1 of 1 uses)"),
        (codes["stopped"], "was stopped"),
        (codes["elsewhere"], "is not valid at this partner"),
        (codes["money"], "is of kind amount_off; a purchase takes bonus or multiplier coupons"),
    ]
    for index, (code, reason) in enumerate(cases):
        refused = _buy(env, f"r-refused-{index}", code)
        assert refused.status == 422, (code, refused.body)
        assert refused.body["code"] == "coupon_invalid" and reason in refused.body["detail"], refused.body
    for reference, points, reason in (("h-1", 100, "is of kind bonus; a redemption takes amount_off coupons"),
                                      ("h-2", 300, "is paid for with 400 points, not the 300 held")):
        code = codes["bonus"] if points == 100 else codes["money"]
        refused = env.client.post(REDEMPTIONS, {"card_number": env.member.card_number, "pin": PIN,
                                                "reference": reference, "points": points, "coupon_code": code})
        assert refused.status == 422 and refused.body["code"] == "coupon_invalid", refused.body
        assert reason in refused.body["detail"], refused.body
    # Nothing was written: no purchase, no hold, no points, no use counted.
    after = books(hub)
    assert after == before and _uses(hub) == uses
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Purchase)) == 1
    assert_audit_green(hub)


def coupons_update_validity(series: str, until: datetime) -> Any:
    return update(CouponSeries).where(CouponSeries.code == series).values(valid_until=until)


def test_a_single_use_coupon_is_used_once_and_a_replay_is_not_a_second_use(app):
    env = _shop(app)
    number = env.member.member_number
    code = _issue(env.hub, _series(env.hub, "once"), number)[number]
    payload = purchase_payload("r-once", env.member.card_number, amount_minor=AMOUNT, coupon_code=code)
    first = env.client.post(PURCHASES, payload, idempotency_key="key-once")
    replay = env.client.post(PURCHASES, payload, idempotency_key="key-once")
    assert first.status == replay.status == 201
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.body == first.body
    again = _buy(env, "r-twice", code)
    assert again.status == 422 and again.body["code"] == "coupon_invalid" and "used up" in again.body["detail"]
    assert _uses(env.hub) == [(code, 1)]
    with env.hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(CouponUse)) == 1
    # Issuing again to the same target adds no second coupon.
    with env.hub.unit_of_work() as uow:
        again_issued = coupons.issue(uow.session, code="once", member_numbers=[number],
                                     now=datetime.now(timezone.utc), actor="test:ops")
        uow.commit()
    assert (again_issued.issued, again_issued.already_held) == (0, 1)


def test_an_amount_off_coupon_is_paid_by_the_hold_and_given_back_when_voided_or_expired(app):
    env = _shop(app)
    hub = env.hub
    number = env.member.member_number
    code = _issue(hub, _series(hub, "five-off", kind="amount_off", bonus_points=None, amount_off_minor=500,
                               currency="EUR", points_cost=400), number)[number]
    fund_member(hub, member_id=env.member.member_id, partner_id=env.shop.partner_id, points=2_000)

    def authorize(reference: str) -> Reply:
        return env.client.post(REDEMPTIONS, {"card_number": env.member.card_number, "pin": PIN,
                                             "reference": reference, "points": 400, "coupon_code": code})

    held = authorize("h-1")
    assert held.status == 201, held.body
    assert held.body["points_held"] == 400
    assert held.body["coupon"] == {"series": "five-off", "title": "Five-Off", "code": code, "kind": "amount_off",
                                   "amount_off_minor": 500, "currency": "EUR", "points_cost": 400,
                                   "given_back": False}
    assert _uses(hub) == [(code, 1)]
    refused = authorize("h-2")
    assert refused.status == 422 and "used up" in refused.body["detail"]
    # Voided: the use comes back, and the coupon pays for another redemption.
    voided = env.client.post(f"{REDEMPTIONS}/h-1/void", {})
    assert voided.status == 200 and voided.body["status"] == "voided"
    assert _uses(hub) == [(code, 0)]
    again = authorize("h-3")
    assert again.status == 201, again.body
    captured = env.client.post(f"{REDEMPTIONS}/h-3/capture", {"points": 400})
    assert captured.status == 200 and captured.body["points_captured"] == 400
    assert _uses(hub) == [(code, 1)]
    assert_audit_green(hub)


def test_an_expired_hold_gives_its_coupon_use_back_when_the_coupon_is_next_presented(app):
    env = _shop(app)
    hub = env.hub
    number = env.member.member_number
    code = _issue(hub, _series(hub, "five-off", kind="amount_off", bonus_points=None, amount_off_minor=500,
                               currency="EUR", points_cost=400), number)[number]
    fund_member(hub, member_id=env.member.member_id, partner_id=env.shop.partner_id, points=2_000)
    held = env.client.post(REDEMPTIONS, {"card_number": env.member.card_number, "pin": PIN, "reference": "h-1",
                                         "points": 400, "ttl_s": 30, "coupon_code": code})
    assert held.status == 201, held.body
    later = datetime.now(timezone.utc) + timedelta(minutes=5)
    with hub.unit_of_work() as uow:
        holder = member_verification.verify_pin_at_till(
            uow.session, card_number=env.member.card_number, pin=PIN,
            till=_till(env), now=later)
        hold = redemptions.authorize(uow.session, partner_id=env.shop.partner_id, holder=holder, reference="h-2",
                                     points=400, ttl_s=60, terminal_id=None, now=later, coupon_code=code)
        uow.commit()
    assert hold.points_held == 400
    with hub.unit_of_work() as uow:
        assert [row.returned_at is not None for row in uow.session.scalars(
            select(CouponUse).order_by(CouponUse.id))] == [True, False]
    assert _uses(hub) == [(code, 1)]


def _till(env: SimpleNamespace) -> risk.Subject:
    return risk.Subject(partner_id=env.shop.partner_id, terminal_id=None)


def test_under_concurrency_a_single_use_coupon_is_used_exactly_once(pg_app):
    env = _shop(pg_app)
    hub = env.hub
    number = env.member.member_number
    code = _issue(hub, _series(hub, "rush"), number)[number]
    threads_count = 6
    start = threading.Barrier(threads_count)
    outcomes: list[object] = []
    now = datetime.now(timezone.utc)

    def report(index: int) -> None:
        try:
            start.wait()
            with hub.unit_of_work() as uow:
                purchases.report_purchase(uow.session, partner_id=env.shop.partner_id, report=purchases.PurchaseReport(
                    receipt_id=f"c-{index}", card_number=env.member.card_number, amount_minor=AMOUNT,
                    currency="EUR", purchased_at=now - timedelta(minutes=1), coupon_code=code),
                    now=now, expiry_months=24)
                uow.commit()
            outcomes.append("used")
        except BaseException as error:  # noqa: BLE001 - reported to the test below
            outcomes.append(error)

    threads = [threading.Thread(target=report, args=(index,)) for index in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("used") == 1
    refusals = [outcome for outcome in outcomes if outcome != "used"]
    assert len(refusals) == threads_count - 1
    assert all(isinstance(refusal, CouponInvalid) and "used up" in refusal.detail for refusal in refusals), refusals
    assert _uses(hub) == [(code, 1)]
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Purchase)) == 1
        assert uow.session.scalar(select(func.count()).select_from(CouponUse)) == 1
    assert_audit_green(hub)


def test_a_series_with_wrong_terms_is_refused_and_nothing_is_stored(hub):
    make_signing_partner(hub, now=wall_clock_partner_time(), code="shop")
    make_partner(hub, now=wall_clock_partner_time(), code="brand")
    wrong: list[dict[str, Any]] = [
        {"kind": "bonus", "bonus_points": None},
        {"kind": "multiplier", "bonus_points": None, "multiplier": Decimal("1")},
        {"kind": "multiplier", "bonus_points": None, "multiplier": Decimal("1.00001")},
        {"kind": "bonus", "multiplier": Decimal("2")},
        {"kind": "amount_off", "bonus_points": None, "amount_off_minor": 500, "points_cost": 400},
        {"kind": "amount_off", "bonus_points": None, "amount_off_minor": 500, "points_cost": 400, "currency": "USD"},
        {"valid_until": datetime(2020, 1, 1, tzinfo=timezone.utc)},
        {"uses_per_coupon": 0},
        {"funder": "nobody"},
    ]
    for terms in wrong:
        with pytest.raises((ValidationFailed, NotFound)):
            _series(hub, "wrong", **terms)
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(CouponSeries)) == 0
