"""Schemas of the back-office risk controls: the policy and its versions, the pattern rules, decisions with their
evidence, the review queue's cases and a review's outcome."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from alliance.api.back_office.schemas import MEMBER_NUMBER, PARTNER_CODE
from alliance.api.partner.schemas import StrictSchema
from alliance.api.patterns import UtcDateTime, WholeValue
from alliance.domain.risk_patterns import Pattern
from alliance.services import risk, risk_actions

DECISION_TOKEN = WholeValue(r"^[Rr][0-9A-Fa-f]{12}$", error="a decision reference: R and twelve hex digits")
POLICY_DESCRIPTION = ("The policy document: limits, and optionally partners and tiers overrides (docs/risk.md, "
                      "\"The policy\").")


class PolicyVersionInput(StrictSchema):
    policy = fields.Dict(keys=fields.String(), required=True, metadata={"description": POLICY_DESCRIPTION})
    effective_from = UtcDateTime(required=True, metadata={
        "description": "At least 60 seconds ahead, and after the latest version's start."})
    reason = fields.String(required=True, validate=validate.Length(min=1, max=risk.MAX_REASON_CHARACTERS))


class PolicyVersionOutput(Schema):
    version = fields.Integer()
    effective_from = fields.AwareDateTime()
    reason = fields.String()
    created_by = fields.String()
    created_at = fields.AwareDateTime()
    policy = fields.Dict(metadata={"description": POLICY_DESCRIPTION})
    status = fields.String(metadata={"description": "scheduled, in_force or superseded."})


class PolicyOutput(Schema):
    version = fields.Integer(allow_none=True, metadata={
        "description": "The version in force; null while the built-in default policy is."})
    policy = fields.Dict(metadata={"description": "The policy in force: " + POLICY_DESCRIPTION})
    versions = fields.List(fields.Nested(PolicyVersionOutput), metadata={"description": "Newest first."})


PATTERN_NAMES = ", ".join(pattern.value for pattern in Pattern)


class PatternRuleOutput(Schema):
    name = fields.String(metadata={"description": PATTERN_NAMES + "."})
    terms = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "The terms in force by name (whole numbers; docs/risk.md, \"Pattern rules\")."})
    action = fields.String(metadata={"description": "flag, hold or refuse."})
    enabled = fields.Boolean()
    term_minimums = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "The terms the pattern has, each with the smallest value it may take."})
    term_maximum = fields.Integer(metadata={"description": "The largest value any term may take."})
    actions = fields.List(fields.String(), metadata={"description": "The actions that fit where the pattern runs."})
    default_terms = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "The built-in terms."})
    default_action = fields.String(metadata={"description": "The built-in action."})
    updated_by = fields.String(allow_none=True, metadata={
        "description": "Who changed the rule last; null while the built-in rule is in force."})
    updated_at = fields.AwareDateTime(allow_none=True)


class PatternRuleListOutput(Schema):
    patterns = fields.List(fields.Nested(PatternRuleOutput), metadata={
        "description": "Every pattern's rule in force: " + PATTERN_NAMES + "."})


class PatternRuleInput(StrictSchema):
    terms = fields.Dict(keys=fields.String(), metadata={
        "description": "The terms to change, by name, each a whole number; the others keep their value."})
    action = fields.String(metadata={"description": "flag, hold or refuse, among the pattern's actions."})
    enabled = fields.Boolean(metadata={"description": "false switches the pattern off, true on."})
    reason = fields.String(required=True, validate=validate.Length(min=1, max=risk.MAX_REASON_CHARACTERS), metadata={
        "description": "Why (kept in the audit entry)."})


class DecisionQuery(StrictSchema):
    status = fields.String(validate=validate.OneOf(risk.REVIEW_STATUSES), metadata={
        "description": "Only decisions in this review status; left out: every status."})
    member = fields.String(validate=MEMBER_NUMBER, metadata={"description": "A member number."})
    partner = fields.String(validate=PARTNER_CODE, metadata={"description": "A partner's code."})
    token = fields.String(validate=DECISION_TOKEN, metadata={
        "description": "The decision's reference, as a refused till's answer names it (any case)."})
    limit = fields.Integer(load_default=200, validate=validate.Range(1, 1_000))


class DecisionOutput(Schema):
    decision_id = fields.Integer()
    token = fields.String(metadata={"description": "The reference a refusal's answer names."})
    decided_at = fields.AwareDateTime()
    operation = fields.String(metadata={"description": "earn, redeem, verification or transfer."})
    action = fields.String(metadata={"description": "flag, hold or refuse."})
    policy_version = fields.Integer(allow_none=True, metadata={"description": "Null: the built-in default."})
    partner_code = fields.String(allow_none=True)
    terminal_code = fields.String(allow_none=True)
    member_number = fields.String(allow_none=True)
    reference = fields.String(allow_none=True, metadata={"description": "The partner's receipt or reference."})
    points = fields.Integer()
    evidence = fields.List(fields.Dict(), metadata={
        "description": "Each limit passed: its name, scope, measure, window, caps, action and the count and "
                       "points it saw."})
    review_status = fields.String(metadata={"description": "open, released, reversed, dismissed or confirmed."})
    reviewed_by = fields.String(allow_none=True)
    reviewed_at = fields.AwareDateTime(allow_none=True)
    review_note = fields.String(allow_none=True)
    proposed_action = fields.String(allow_none=True, metadata={
        "description": "A release or reversal above the approval threshold waiting for a second person."})
    proposed_by = fields.String(allow_none=True)


class DecisionListOutput(Schema):
    decisions = fields.List(fields.Nested(DecisionOutput), metadata={"description": "Newest first."})


class CaseQuery(StrictSchema):
    by = fields.String(load_default="member", validate=validate.OneOf(risk.GROUPINGS))


class CaseOutput(Schema):
    subject = fields.String(metadata={"description": "A member number, partner/terminal, or partner code."})
    decisions = fields.Integer()
    points = fields.Integer()
    actions = fields.Dict(keys=fields.String(), values=fields.Integer(),
                          metadata={"description": "Open decisions by action (flag, hold, refuse)."})
    latest = fields.AwareDateTime()
    decision_ids = fields.List(fields.Integer())


class CaseListOutput(Schema):
    by = fields.String()
    cases = fields.List(fields.Nested(CaseOutput), metadata={"description": "Most decisions first."})


class ReviewInput(StrictSchema):
    action = fields.String(required=True, validate=validate.OneOf(tuple(risk.REVIEW_ACTIONS)), metadata={
        "description": "release or reverse a hold; dismiss or confirm a flag or a refusal."})
    note = fields.String(required=True, validate=validate.Length(min=1, max=risk.MAX_REASON_CHARACTERS))


class ActInput(StrictSchema):
    action = fields.String(required=True, validate=validate.OneOf(risk_actions.CASE_ACTIONS), metadata={
        "description": "block_card (the card the decision came from), revoke_terminal_keys (every active key "
                       "bound to its till) or open_complaint (with its partner, tied to its purchase or "
                       "redemption when that was recorded)."})
    note = fields.String(required=True, validate=validate.Length(min=1, max=risk.MAX_REASON_CHARACTERS))


class ActOutput(Schema):
    decision_id = fields.Integer()
    action = fields.String()
    card_blocked = fields.Boolean()
    keys_revoked = fields.List(fields.String())
    complaint_id = fields.Integer()


class ReviewOutput(Schema):
    decision_id = fields.Integer()
    status = fields.String(metadata={
        "description": "released, reversed, dismissed or confirmed; proposed when a second person must review it "
                       "the same way."})
    points_released = fields.Integer()
    points_reversed = fields.Integer()
    points_unrecovered = fields.Integer(metadata={"description": "Held points the member had already spent."})
