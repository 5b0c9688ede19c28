"""Schemas of the back-office API; money and prices travel as decimal strings, never floats."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from alliance.api.converters import MAX_DATABASE_ID
from alliance.api.partner.schemas import (
    CARD_NUMBER,
    CURRENCY,
    MAX_AMOUNT_MINOR,
    MAX_POINTS,
    StrictSchema,
)
from alliance.api.patterns import UtcDateTime, WholeValue
from alliance.domain.identifiers import KEY_ID, TERMINAL_CODE, IdentifierRule
from alliance.domain.identifiers import PARTNER_CODE as PARTNER_CODE_RULE
from alliance.domain.money import (
    MULTIPLIER_PRECISION,
    MULTIPLIER_SCALE,
    PRICE_PRECISION,
    PRICE_SCALE,
    RATE_PRECISION,
    RATE_SCALE,
    exact_decimal_problem,
)
from alliance.services.complaints import CATEGORIES
from alliance.services.oauth import ROLES


def identifier(rule: IdentifierRule) -> WholeValue:
    """The schema validator of one identifier kind, with the character set in its error message."""
    # Anchored, so that the OpenAPI document's pattern (a search, in JSON Schema) says the same.
    return WholeValue(f"^{rule.pattern.pattern}$", error=f"a {rule.noun} has {rule.description}")


PARTNER_CODE = identifier(PARTNER_CODE_RULE)
TERMINAL = identifier(TERMINAL_CODE)
MEMBER_NUMBER = WholeValue(r"^[0-9a-f]{16}$", error="a member number")


class DecimalString(fields.Field[Decimal]):
    """An exact decimal written as a JSON string such as "0.0125"; JSON numbers are refused."""

    def __init__(self, *, scale: int = PRICE_SCALE, precision: int = PRICE_PRECISION, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = scale
        self.precision = precision

    def _deserialize(self, value: object, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> Decimal:
        if not isinstance(value, str) or len(value) > 40:
            raise ValidationError('write decimals as strings, e.g. "0.0125"')
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise ValidationError("not a decimal number") from None
        problem = exact_decimal_problem(number, scale=self.scale, precision=self.precision)
        if problem:
            raise ValidationError(problem)
        return number

    def _serialize(self, value: Decimal | None, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else str(value)


class ProfileInput(StrictSchema):
    name = fields.String(allow_none=True, validate=validate.Length(max=200))
    phone = fields.String(allow_none=True, validate=validate.Length(max=40))
    email = fields.String(allow_none=True, validate=validate.Length(max=254))
    # ISO 8601 (YYYY-MM-DD); the service refuses one before 1900 or in the future.
    birth_date = fields.Date(allow_none=True, metadata={"description": "The member's birth date, YYYY-MM-DD"})


class EnrolmentOutput(Schema):
    member_number = fields.String()
    card_number = fields.String()


class MemberOutput(Schema):
    member_number = fields.String()
    status = fields.String()
    tier = fields.String()
    enrolled_at = fields.AwareDateTime()
    profile = fields.Dict()
    balances = fields.Dict(keys=fields.String(), values=fields.Integer())
    cards = fields.List(fields.Dict())


class MemberSearchInput(StrictSchema):
    """Who to look for; in the body, because phone numbers and e-mails do not belong in URLs and access logs."""

    phone = fields.String(validate=validate.Length(1, 40))
    email = fields.String(validate=validate.Length(1, 254))

    @validates_schema
    def _one_of_them(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data.get("phone") and not data.get("email"):
            raise ValidationError("give a phone number or an e-mail address (or both)", field_name="phone")


class MemberListOutput(Schema):
    members = fields.List(fields.Nested(MemberOutput))


class HistoryQuery(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))
    before = fields.Integer(validate=validate.Range(1, MAX_DATABASE_ID))


class HistoryOutput(Schema):
    transactions = fields.List(fields.Dict())
    next_before = fields.Integer(allow_none=True)


class EmptyInput(StrictSchema):
    """No fields."""


class CardInput(StrictSchema):
    """A card, named in the body: card numbers stay out of paths and so out of access logs."""

    card_number = fields.String(required=True, validate=CARD_NUMBER)


class CardPinInput(CardInput):
    pin = fields.String(required=True, load_only=True, validate=WholeValue(r"^[0-9]{4,12}$", error="4-12 digits"))


class CardOutput(Schema):
    card_number = fields.String()


class CodeOutput(Schema):
    redemption_code = fields.String()
    expires_at = fields.AwareDateTime()


class TransferInput(StrictSchema):
    from_member = fields.String(required=True, validate=MEMBER_NUMBER)
    to_member = fields.String(required=True, validate=MEMBER_NUMBER)
    points = fields.Integer(required=True, strict=True, validate=validate.Range(1, 10**9))


class TransferOutput(Schema):
    transfer_id = fields.Integer()
    from_member = fields.String()
    to_member = fields.String()
    points = fields.Integer()
    created_at = fields.AwareDateTime()


class LadderStepInput(StrictSchema):
    from_minor = fields.Integer(required=True, strict=True, validate=validate.Range(0, MAX_AMOUNT_MINOR))
    multiplier = fields.String(required=True, validate=WholeValue(r"^[0-9]+(\.[0-9]+)?$"))


class PartnerInput(StrictSchema):
    code = fields.String(required=True, validate=PARTNER_CODE)
    name = fields.String(required=True, validate=validate.Length(1, 200))
    currency = fields.String(required=True, validate=CURRENCY)
    time_zone = fields.String(required=True, validate=validate.Length(1, 64))
    settlement_cycle = fields.String(required=True, validate=validate.OneOf(["daily", "weekly", "monthly"]))
    issue_price_per_point = DecimalString(required=True)
    redemption_price_per_point = DecimalString(required=True)
    base_points_per_unit = DecimalString(required=True, scale=RATE_SCALE, precision=RATE_PRECISION)
    amount_ladder = fields.List(fields.Nested(LadderStepInput), load_default=list, validate=validate.Length(max=20))
    per_purchase_cap_points = fields.Integer(strict=True, allow_none=True, validate=validate.Range(1, MAX_POINTS))
    per_member_day_cap_points = fields.Integer(strict=True, allow_none=True, validate=validate.Range(1, MAX_POINTS))
    return_window_days = fields.Integer(strict=True, load_default=0, validate=validate.Range(0, 365))
    cycle_fee_minor = fields.Integer(strict=True, load_default=0, validate=validate.Range(0, 10**12),
                                     metadata={"description": "Fixed fee per settlement cycle, in minor units."})


class PartnerOutput(Schema):
    code = fields.String()
    name = fields.String()
    status = fields.String()
    currency = fields.String()
    time_zone = fields.String()
    settlement_cycle = fields.String()
    return_window_days = fields.Integer()
    cycle_fee_minor = fields.Integer()
    created_at = fields.AwareDateTime()


class PartnerListOutput(Schema):
    partners = fields.List(fields.Nested(PartnerOutput))
    total = fields.Integer()
    page = fields.Integer()
    page_size = fields.Integer()


class PartnerListQuery(StrictSchema):
    page = fields.Integer(load_default=1, validate=validate.Range(1, 10**6))
    page_size = fields.Integer(load_default=100, validate=validate.Range(1, 200))


class StatusInput(StrictSchema):
    status = fields.String(required=True, validate=validate.OneOf(["pending", "active", "suspended", "terminated"]))


class PriceInput(StrictSchema):
    effective_from = UtcDateTime(required=True)
    issue_price_per_point = DecimalString(required=True)
    redemption_price_per_point = DecimalString(required=True)


class EarnRuleInput(StrictSchema):
    effective_from = UtcDateTime(required=True)
    base_points_per_unit = DecimalString(required=True, scale=RATE_SCALE, precision=RATE_PRECISION)
    amount_ladder = fields.List(fields.Nested(LadderStepInput), load_default=list, validate=validate.Length(max=20))
    per_purchase_cap_points = fields.Integer(strict=True, allow_none=True, validate=validate.Range(1, MAX_POINTS))
    per_member_day_cap_points = fields.Integer(strict=True, allow_none=True, validate=validate.Range(1, MAX_POINTS))


class TerminalInput(StrictSchema):
    code = fields.String(required=True, validate=TERMINAL)


class ReasonInput(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000),
                           metadata={"description": "Why; kept in the audit log."})


class RetiredTerminalOutput(Schema):
    keys_revoked = fields.List(fields.String(), metadata={"description": "The keys bound to the terminal, revoked."})


class KeyInput(StrictSchema):
    key_id = fields.String(required=True, validate=identifier(KEY_ID))
    public_key = fields.String(required=True, metadata={"description": "Base64 of the 32-byte Ed25519 public key."})
    terminal = fields.String(validate=TERMINAL)
    expires_at = UtcDateTime()


class PriceOutput(Schema):
    id = fields.Integer()
    effective_from = fields.AwareDateTime()
    issue_price_per_point = DecimalString()
    redemption_price_per_point = DecimalString()


class EarnRuleOutput(Schema):
    id = fields.Integer()
    effective_from = fields.AwareDateTime()
    base_points_per_unit = DecimalString(scale=RATE_SCALE, precision=RATE_PRECISION)
    amount_ladder = fields.List(fields.Dict())
    per_purchase_cap_points = fields.Integer(allow_none=True)
    per_member_day_cap_points = fields.Integer(allow_none=True)


class KeyOutput(Schema):
    id = fields.Integer(metadata={"description": "The hub's id of the key row."})
    key_id = fields.String(metadata={"description": "The keyid tills sign with."})
    status = fields.String(metadata={"description": "active or revoked"})
    terminal = fields.String(allow_none=True, metadata={"description": "The terminal the key is bound to, if any."})
    created_at = fields.AwareDateTime()
    expires_at = fields.AwareDateTime(allow_none=True)
    revoked_at = fields.AwareDateTime(allow_none=True)


class CampaignFunderInput(StrictSchema):
    partner = fields.String(required=True, validate=PARTNER_CODE)
    share_bp = fields.Integer(required=True, strict=True, validate=validate.Range(1, 10_000), metadata={
        "description": "The funder's share in basis points; a joint campaign's shares sum to 10000."})


class CampaignSegmentInput(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(1, 100))
    members = fields.List(fields.String(validate=MEMBER_NUMBER), required=True,
                          validate=validate.Length(1, 100_000), metadata={"description": "Member numbers."})


class CampaignTermsInput(StrictSchema):
    """The terms a campaign may change before it starts; every one optional."""

    name = fields.String(validate=validate.Length(1, 200))
    multiplier = DecimalString(scale=MULTIPLIER_SCALE, precision=MULTIPLIER_PRECISION)
    bonus_points = fields.Integer(strict=True, validate=validate.Range(0, 10**9))
    min_amount_minor = fields.Integer(strict=True, validate=validate.Range(0, MAX_AMOUNT_MINOR))
    starts_at = UtcDateTime()
    ends_at = UtcDateTime()
    funders = fields.List(fields.Nested(CampaignFunderInput), validate=validate.Length(2, 20), metadata={
        "description": "A joint campaign's payers in order; the remainder of a split goes by largest remainder, "
                       "ties to the first named."})
    budget_points = fields.Integer(strict=True, allow_none=True, validate=validate.Range(1, 10**15), metadata={
        "description": "Points the campaign may award in all; an award that would pass it is skipped."})
    budget_minor = fields.Integer(strict=True, allow_none=True, validate=validate.Range(1, 10**12 - 1), metadata={
        "description": "Or a budget in money, in minor units of budget_currency: what the funders may be charged "
                       "for its awards at their issue prices (exactly, per award); an award whose cost would pass "
                       "what is left is skipped. Only for a partner-funded or joint campaign, in every funder's "
                       "currency; a campaign has at most one budget."})
    budget_currency = fields.String(allow_none=True, validate=validate.Regexp(r"^[A-Z]{3}\Z"), metadata={
        "description": "The money budget's currency (ISO 4217), given with budget_minor."})
    target_tiers = fields.List(fields.String(validate=validate.OneOf(["standard", "silver", "gold", "diamond"])),
                               allow_none=True)
    min_tenure_months = fields.Integer(strict=True, allow_none=True, validate=validate.Range(0, 1200))
    segment = fields.Nested(CampaignSegmentInput, allow_none=True, metadata={
        "description": "A named list of members; only they earn the campaign (null removes it)."})


class CampaignInput(CampaignTermsInput):
    partner = fields.String(validate=PARTNER_CODE)
    name = fields.String(required=True, validate=validate.Length(1, 200))
    funded_by = fields.String(required=True, validate=validate.OneOf(["partner", "hub", "joint"]))
    multiplier = DecimalString(load_default=Decimal("1"), scale=MULTIPLIER_SCALE, precision=MULTIPLIER_PRECISION)
    bonus_points = fields.Integer(strict=True, load_default=0, validate=validate.Range(0, 10**9))
    min_amount_minor = fields.Integer(strict=True, load_default=0, validate=validate.Range(0, MAX_AMOUNT_MINOR))
    starts_at = UtcDateTime(required=True)
    ends_at = UtcDateTime(required=True)


class CampaignListQuery(StrictSchema):
    status = fields.String(validate=validate.OneOf(["scheduled", "running", "ended", "stopped"]))
    partner = fields.String(validate=PARTNER_CODE)


class CampaignStopInput(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(1, 500))


class CampaignFunderOutput(Schema):
    partner = fields.String()
    share_bp = fields.Integer()


class CampaignPayerOutput(Schema):
    payer = fields.String(metadata={"description": "A partner code, or hub."})
    points = fields.Integer()
    currency = fields.String(allow_none=True)
    value_minor = fields.Integer(allow_none=True, metadata={"description": "The points at the payer's issue price."})


class CampaignAwardedOutput(Schema):
    points = fields.Integer()
    awards = fields.Integer(metadata={"description": "Purchases the campaign gave points on."})
    by_payer = fields.List(fields.Nested(CampaignPayerOutput))


class CampaignSegmentOutput(Schema):
    name = fields.String()
    members = fields.Integer()


class CampaignOutput(Schema):
    id = fields.Integer()
    name = fields.String()
    partner = fields.String(allow_none=True)
    funded_by = fields.String()
    funders = fields.List(fields.Nested(CampaignFunderOutput))
    remainder_rule = fields.String(allow_none=True)
    multiplier = fields.Decimal(as_string=True)
    bonus_points = fields.Integer()
    min_amount_minor = fields.Integer()
    starts_at = fields.AwareDateTime()
    ends_at = fields.AwareDateTime()
    status = fields.String()
    stopped_at = fields.AwareDateTime(allow_none=True)
    stop_reason = fields.String(allow_none=True)
    budget_points = fields.Integer(allow_none=True)
    budget_used_points = fields.Integer()
    budget_minor = fields.Integer(allow_none=True, metadata={"description": "A budget in money, in minor units."})
    budget_currency = fields.String(allow_none=True)
    budget_used_amount = fields.Decimal(as_string=True, metadata={
        "description": "What the funders were charged for the awards so far, exactly, in minor units (to 8 places)."})
    budget_used_minor = fields.Integer(allow_none=True, metadata={
        "description": "The same rounded half to even to a minor unit."})
    budget_left_minor = fields.Integer(allow_none=True, metadata={
        "description": "What is left of the money budget, in minor units."})
    target_tiers = fields.List(fields.String())
    min_tenure_months = fields.Integer(allow_none=True)
    segment = fields.Nested(CampaignSegmentOutput, allow_none=True)
    awarded = fields.Nested(CampaignAwardedOutput)


class CampaignListOutput(Schema):
    campaigns = fields.List(fields.Nested(CampaignOutput))


class CreatedOutput(Schema):
    id = fields.Integer()


class ComplaintInput(StrictSchema):
    partner = fields.String(required=True, validate=PARTNER_CODE)
    category = fields.String(required=True, validate=validate.OneOf(CATEGORIES))
    description = fields.String(required=True, validate=validate.Length(1, 4000))
    member = fields.String(validate=MEMBER_NUMBER)
    receipt_id = fields.String(validate=validate.Length(1, 64))
    redemption_reference = fields.String(validate=validate.Length(1, 64))


class ComplaintTransitionInput(StrictSchema):
    status = fields.String(required=True, validate=validate.OneOf(["investigating", "resolved", "rejected"]))
    note = fields.String(validate=validate.Length(1, 4000))


class ComplaintQuery(StrictSchema):
    status = fields.String(validate=validate.OneOf(["open", "investigating", "resolved", "rejected"]))
    partner = fields.String(validate=PARTNER_CODE)
    page = fields.Integer(load_default=1, validate=validate.Range(1, 10**6))
    page_size = fields.Integer(load_default=50, validate=validate.Range(1, 200))


class ComplaintOutput(Schema):
    id = fields.Integer()
    partner = fields.String()
    category = fields.String()
    description = fields.String()
    status = fields.String()
    opened_by = fields.String()
    opened_at = fields.AwareDateTime()
    investigating_at = fields.AwareDateTime(allow_none=True)
    closed_at = fields.AwareDateTime(allow_none=True)
    resolution_note = fields.String(allow_none=True)


class ComplaintListOutput(Schema):
    complaints = fields.List(fields.Nested(ComplaintOutput))
    total = fields.Integer()
    page = fields.Integer()
    page_size = fields.Integer()


class AuditQuery(StrictSchema):
    after_sequence = fields.Integer(load_default=0, validate=validate.Range(0, MAX_DATABASE_ID))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))


class AuditOutput(Schema):
    entries = fields.List(fields.Dict())
    chain_ok = fields.Boolean()
    first_break = fields.String(allow_none=True)


PERSON_HANDLE = WholeValue(r"^[a-z0-9][a-z0-9._-]{1,63}$",
                           error="a person's handle is 2-64 lowercase letters, digits, '.', '_' or '-'")


class ClientInput(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(1, 200))
    roles = fields.List(fields.String(validate=validate.OneOf(ROLES)), required=True,
                        validate=validate.Length(1, len(ROLES)))
    person = fields.String(required=True, validate=PERSON_HANDLE,
                           metadata={"description": "Handle of the staff person who holds the client (POST /people)."})


class ClientOutput(Schema):
    client_id = fields.String()
    client_secret = fields.String(metadata={"description": "Shown once; only a digest is kept."})
    roles = fields.List(fields.String())
    person = fields.String()


class PersonInput(StrictSchema):
    handle = fields.String(required=True, validate=PERSON_HANDLE)
    name = fields.String(required=True, validate=validate.Length(1, 200))


class PersonOutput(Schema):
    handle = fields.String()
    name = fields.String()
    created_at = fields.AwareDateTime()



class GoodwillInput(StrictSchema):
    """A goodwill credit or correction of one member's points."""

    direction = fields.String(required=True, validate=validate.OneOf(["credit", "debit"]))
    points = fields.Integer(required=True, strict=True, validate=validate.Range(1, 10**9))
    reason = fields.String(required=True, validate=validate.Length(1, 500))
    complaint_id = fields.Integer(strict=True, validate=validate.Range(1, MAX_DATABASE_ID))
    reference = fields.String(validate=validate.Length(1, 64))
    funded_by = fields.String(validate=validate.Length(1, 40),
                              metadata={"description": "hub (the default for a credit) or a partner code; "
                                                       "not for a debit"})


class GoodwillQuery(StrictSchema):
    status = fields.String(validate=validate.OneOf(["pending", "posted", "rejected"]))
    member = fields.String(validate=MEMBER_NUMBER)
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))


class GoodwillDecisionInput(StrictSchema):
    decision = fields.String(required=True, validate=validate.OneOf(["approve", "reject"]))


class GoodwillOutput(Schema):
    id = fields.Integer()
    member = fields.String()
    direction = fields.String()
    points = fields.Integer()
    reason = fields.String()
    complaint_id = fields.Integer(allow_none=True)
    reference = fields.String(allow_none=True)
    funded_by = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "pending (waits for another person), posted or rejected"})
    requested_by = fields.String()
    requested_at = fields.AwareDateTime()
    decided_by = fields.String(allow_none=True)
    decided_at = fields.AwareDateTime(allow_none=True)
    posted_at = fields.AwareDateTime(allow_none=True)
    transaction_ids = fields.List(fields.Integer())


class GoodwillListOutput(Schema):
    requests = fields.List(fields.Nested(GoodwillOutput))


class TierLevelSchema(StrictSchema):
    """One tier of a tier policy version: what reaches it and what it gives."""

    tier = fields.String(required=True, validate=validate.OneOf(["standard", "silver", "gold", "diamond"]))
    threshold = fields.Integer(required=True, strict=True, validate=validate.Range(0, 10**12), metadata={
        "description": "whole currency units (spend), points (points) or months (tenure); standard is 0"})
    multiplier = fields.String(required=True, validate=validate.Length(1, 20), metadata={
        "description": "the earn multiplier as exact decimal text, at least 1, at most 4 decimal places"})
    birthday_bonus_points = fields.Integer(strict=True, load_default=0, validate=validate.Range(0, 10**9))


class TierPolicyInput(StrictSchema):
    """A new version of the tier policy, taking effect at ``effective_from``."""

    effective_from = UtcDateTime(required=True, metadata={
        "description": "at least 60 seconds from now (twice the schedule's reload interval)"})
    basis = fields.String(required=True, validate=validate.OneOf(["spend", "points", "tenure"]))
    window_months = fields.Integer(strict=True, allow_none=True, load_default=None, metadata={
        "description": "the rolling window of spend and points; empty for tenure"})
    downgrade = fields.String(required=True, validate=validate.OneOf(["one_step", "to_earned"]))
    period_months = fields.Integer(strict=True, allow_none=True, load_default=None, metadata={
        "description": "one_step only: a member falls one tier per this many months held"})
    tiers = fields.List(fields.Nested(TierLevelSchema), required=True, validate=validate.Length(1, 4))


class TierPolicyVersionOutput(Schema):
    version = fields.Integer()
    status = fields.String(metadata={"description": "in_force, scheduled or superseded"})
    effective_from = fields.AwareDateTime()
    basis = fields.String()
    window_months = fields.Integer(allow_none=True)
    downgrade = fields.String()
    period_months = fields.Integer(allow_none=True)
    tiers = fields.List(fields.Nested(TierLevelSchema))
    created_by = fields.String()
    created_at = fields.AwareDateTime()


class TierPolicyOutput(Schema):
    in_force = fields.Nested(TierPolicyVersionOutput)
    scheduled = fields.List(fields.Nested(TierPolicyVersionOutput))
    versions = fields.List(fields.Nested(TierPolicyVersionOutput), metadata={"description": "all, newest first"})


class TierChangeOutput(Schema):
    from_tier = fields.String()
    to_tier = fields.String()
    changed_at = fields.AwareDateTime()
    policy_version = fields.Integer()
    reason = fields.String()


class TierHistoryOutput(Schema):
    member = fields.String()
    changes = fields.List(fields.Nested(TierChangeOutput))
