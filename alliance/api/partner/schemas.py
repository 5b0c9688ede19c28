"""Marshmallow schemas of the partner API: the edge only; unknown fields are refused."""

from __future__ import annotations

from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from alliance.api.patterns import UtcDateTime, WholeValue
from alliance.services.ledger import MAX_HOLD_TTL_S

REFERENCE = WholeValue(r"^[A-Za-z0-9._:-]{1,64}$", error="1-64 letters, digits or . _ : -")
CARD_NUMBER = WholeValue(r"^[0-9]{16}$", error="16 digits")
CURRENCY = WholeValue(r"^[A-Z]{3}$", error="a three-letter ISO 4217 code")
TERMINAL = WholeValue(r"^[a-z0-9][a-z0-9-]{1,39}$", error="a terminal code")
MAX_AMOUNT_MINOR = 10**12
MAX_POINTS = 10**12
MAX_BATCH_ITEMS = 1000
MIN_HOLD_TTL_S = 30


class StrictSchema(Schema):
    """Refuse fields the API does not know (mass assignment, typos)."""

    class Meta:
        unknown = RAISE


COUPON_CODE = WholeValue(r"^[0-9A-Za-z -]{4,32}$", error="a coupon code")


class BatchPurchaseInput(StrictSchema):
    """One purchase of a batch as a till reports it (a coupon goes with a single report only)."""

    receipt_id = fields.String(required=True, validate=REFERENCE,
                               metadata={"description": "The partner's receipt id, unique per partner."})
    card_number = fields.String(required=True, validate=CARD_NUMBER)
    amount_minor = fields.Integer(required=True, strict=True, validate=validate.Range(1, MAX_AMOUNT_MINOR),
                                  metadata={"description": "Amount paid, in minor units of the currency."})
    currency = fields.String(required=True, validate=CURRENCY)
    purchased_at = UtcDateTime(required=True, metadata={"description": "When the purchase happened, with offset."})
    terminal = fields.String(validate=TERMINAL,
                             metadata={"description": "Terminal code; a terminal-bound key implies it."})


class PurchaseInput(BatchPurchaseInput):
    """One purchase as a till reports it, with the member's coupon if one is presented."""

    coupon_code = fields.String(validate=COUPON_CODE, metadata={
        "description": "A bonus or multiplier coupon of the card's member, used with this purchase; refused whole "
                       "(422 coupon_invalid) if it may not be."})


class BatchInput(StrictSchema):
    """Up to 1,000 purchases; each is applied or rejected on its own."""

    purchases = fields.List(fields.Nested(BatchPurchaseInput), required=True,
                            validate=validate.Length(1, MAX_BATCH_ITEMS))


class PointsOutput(Schema):
    total = fields.Integer()
    partner_funded = fields.Integer()
    hub_funded = fields.Integer()
    state = fields.String(metadata={"description": "pending (inside the return window), active, or "
                                                   "held_for_review (pending until the alliance's review releases "
                                                   "them; the purchase itself is recorded)"})
    pending_until = fields.AwareDateTime(allow_none=True)


class PurchaseOutput(Schema):
    """A reported purchase and what it earned."""

    receipt_id = fields.String()
    card_number = fields.String(metadata={"description": "Masked card number."})
    amount_minor = fields.Integer()
    currency = fields.String()
    purchased_at = fields.AwareDateTime()
    reported_at = fields.AwareDateTime()
    terminal = fields.String(allow_none=True)
    points = fields.Nested(PointsOutput)
    breakdown = fields.Dict(
        metadata={"description": "How the points were computed: rate, ladder, tier, campaigns, caps."})
    refunded_amount_minor = fields.Integer()


class BatchItemOutput(Schema):
    index = fields.Integer()
    receipt_id = fields.String()
    status = fields.String(metadata={"description": "applied or rejected"})
    purchase = fields.Nested(PurchaseOutput, allow_none=True)
    problem = fields.Dict(allow_none=True, metadata={"description": "problem+json of a rejected item"})


class BatchOutput(Schema):
    applied = fields.Integer()
    rejected = fields.Integer()
    results = fields.List(fields.Nested(BatchItemOutput))


class PurchaseRefundInput(StrictSchema):
    refund_id = fields.String(required=True, validate=REFERENCE)
    amount_minor = fields.Integer(required=True, strict=True, validate=validate.Range(1, MAX_AMOUNT_MINOR))


class PurchaseRefundOutput(Schema):
    refund_id = fields.String()
    amount_minor = fields.Integer()
    points_recovered = fields.Integer()
    points_unrecovered = fields.Integer(metadata={"description": "Points the member had already spent."})
    created_at = fields.AwareDateTime()
    purchase = fields.Nested(PurchaseOutput)


class MemberProofInput(StrictSchema):
    """The member proves presence with card and PIN, or with a one-time redemption code."""

    card_number = fields.String(validate=CARD_NUMBER)
    pin = fields.String(validate=WholeValue(r"^[0-9]{4,12}$", error="4-12 digits"), load_only=True)
    redemption_code = fields.String(validate=WholeValue(r"^[A-Za-z0-9]{6,32}$", error="a redemption code"),
                                    load_only=True)

    @validates_schema
    def _one_proof(self, data: dict[str, Any], **_: object) -> None:
        # Exactly one proof: two proofs could name two members, and which one pays must
        # never be guessed.
        by_pin = "card_number" in data and "pin" in data and "redemption_code" not in data
        by_code = "redemption_code" in data and "card_number" not in data and "pin" not in data
        if not (by_pin or by_code):
            raise ValidationError("give card_number with pin, or redemption_code alone", field_name="pin")


class AuthorizeInput(MemberProofInput):
    reference = fields.String(required=True, validate=REFERENCE,
                              metadata={"description": "The partner's redemption reference, unique per partner."})
    points = fields.Integer(required=True, strict=True, validate=validate.Range(1, MAX_POINTS))
    ttl_s = fields.Integer(strict=True, validate=validate.Range(MIN_HOLD_TTL_S, MAX_HOLD_TTL_S),
                           metadata={"description": "How long the hold lives; the hub default if absent."})
    terminal = fields.String(validate=TERMINAL)
    coupon_code = fields.String(validate=COUPON_CODE, metadata={
        "description": "An amount_off coupon of the member, paid for with exactly the points held; refused whole "
                       "(422 coupon_invalid) if it may not be used."})


class CaptureInput(StrictSchema):
    points = fields.Integer(required=True, strict=True, validate=validate.Range(1, MAX_POINTS))


class VoidInput(StrictSchema):
    """A void carries no fields; the body is an empty object."""


class RedemptionRefundInput(StrictSchema):
    refund_id = fields.String(required=True, validate=REFERENCE)
    points = fields.Integer(required=True, strict=True, validate=validate.Range(1, MAX_POINTS))


class RedemptionOutput(Schema):
    reference = fields.String()
    status = fields.String(metadata={"description": "authorized, captured, voided or expired"})
    points_held = fields.Integer()
    points_captured = fields.Integer()
    points_refunded = fields.Integer()
    created_at = fields.AwareDateTime()
    expires_at = fields.AwareDateTime()
    closed_at = fields.AwareDateTime(allow_none=True)
    terminal = fields.String(allow_none=True)
    coupon = fields.Dict(metadata={
        "description": "The amount_off coupon used with this redemption (in the authorization's reply): its series, "
                       "code, amount off and the points it costs."})


class BalanceInput(StrictSchema):
    card_number = fields.String(required=True, validate=CARD_NUMBER)
    pin = fields.String(required=True, load_only=True, validate=WholeValue(r"^[0-9]{4,12}$", error="4-12 digits"))


class BalanceOutput(Schema):
    card_number = fields.String()
    tier = fields.String()
    points_available = fields.Integer()
    points_pending = fields.Integer()
    points_held = fields.Integer()


class ProblemOutput(Schema):
    """RFC 9457 problem details, as every error of the hub is reported."""

    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    code = fields.String(metadata={"description": "Stable machine-readable code; see the operation's responses."})
    request_id = fields.String()
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()),
                         metadata={"description": "Per-field messages, for invalid input."})


EVENT_MEMBER_NUMBER = WholeValue(r"^[0-9a-f]{16}$", error="a member number")
EVENT_TYPES = ("sign_in", "referral", "survey", "self_service", "recharge", "bill_payment")


class EventInput(StrictSchema):
    """One behaviour event (a sign-in, referral, survey, self-service, recharge or bill payment)."""

    event_id = fields.String(required=True, validate=REFERENCE,
                             metadata={"description": "The partner's event id, unique per partner: the event's "
                                                      "natural key, so it is counted once."})
    event_type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    card_number = fields.String(validate=CARD_NUMBER, metadata={"description": "The member's card, or ..."})
    member_number = fields.String(validate=EVENT_MEMBER_NUMBER, metadata={"description": "... the member number."})
    occurred_at = UtcDateTime(required=True, metadata={"description": "When it happened, with offset; caps and "
                                                                      "streaks count by the alliance's day of it."})
    amount_minor = fields.Integer(strict=True, validate=validate.Range(1, MAX_AMOUNT_MINOR),
                                  metadata={"description": "Recharges and bill payments only: the amount paid."})
    currency = fields.String(validate=CURRENCY, metadata={"description": "The currency of amount_minor (ISO 4217)."})
    referred_member = fields.String(validate=EVENT_MEMBER_NUMBER,
                                    metadata={"description": "Referrals only: the new member's member number."})

    @validates_schema
    def _one_member(self, data: dict[str, Any], **_: object) -> None:
        if ("card_number" in data) == ("member_number" in data):
            raise ValidationError("give card_number or member_number (one of them)", field_name="card_number")


class EventAwardOutput(Schema):
    member_number = fields.String()
    side = fields.String(metadata={"description": "member, or for a referral referrer / referred"})
    points = fields.Integer()
    streak_bonus_points = fields.Integer()
    funded_by = fields.String(metadata={"description": "hub, or the code of the partner that issued the points"})
    awarded_at = fields.AwareDateTime()


class EventOutput(Schema):
    """A reported event and what it gave."""

    event_id = fields.String()
    event_type = fields.String()
    member_number = fields.String()
    occurred_at = fields.AwareDateTime()
    amount_minor = fields.Integer(allow_none=True)
    currency = fields.String(allow_none=True)
    referred_member = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "awarded, not_awarded, or pending (a referral waiting for the "
                                                    "referred member's first purchase)"})
    reason = fields.String(allow_none=True, metadata={
        "description": "Why no points (or fewer): no_rule_in_force, tier_not_eligible, tenure_too_short, "
                       "day_cap_reached, month_cap_reached, already_signed_in_today, amount_below_one_unit, "
                       "referred_member_not_new, awaiting_first_purchase."})
    points_awarded = fields.Integer(metadata={"description": "The reported member's points for this event."})
    streak_day = fields.Integer(allow_none=True, metadata={"description": "Sign-ins: the consecutive day it is."})
    reported_at = fields.AwareDateTime()
    awards = fields.List(fields.Nested(EventAwardOutput))
