"""Partners' credit limits for finance and admin: the exposure, limit changes and their second-person decisions.

GET a partner's credit (its limit, last computed exposure and state, changes waiting);
POST a limit change (a first or lower limit applies at once; a raise or a removal waits
for another person); POST a decision on a waiting change (the person who asked for it
cannot, 409 ``same_approver``). Prepaid point blocks: POST a block the partner paid for
ahead (priced at its issue price in force; it covers its issuance, and pays its statements
as they are invoiced), GET its blocks and what is left of them.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import Schema, fields, validate

from alliance.api.back_office.auth import require_role
from alliance.api.back_office.routes import PREFIX, committed_change, documented
from alliance.api.back_office.schemas import DecimalString
from alliance.api.partner.schemas import StrictSchema
from alliance.api.patterns import WholeValue
from alliance.extensions import hub_state
from settlement.api import credit

credit_blueprint = Blueprint("back_office_credit", __name__, url_prefix=PREFIX,
                             description="Finance: partners' credit limits and exposure (unsettled issuance).")
MAX_MINOR = 10**18
REFERENCE = WholeValue(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$",
                       error="1-64 letters, digits or . _ : / -, starting with a letter or digit")


class CreditLimitChangeInput(StrictSchema):
    limit_minor = fields.Integer(required=True, strict=True, allow_none=True,
                                 validate=validate.Range(min=0, max=MAX_MINOR),
                                 metadata={"description": "Minor units of the partner's currency; null removes the "
                                                          "limit."})
    reason = fields.String(required=True, validate=validate.Length(min=1, max=credit.MAX_REASON_LENGTH))


class CreditDecisionInput(StrictSchema):
    decision = fields.String(required=True, validate=validate.OneOf(tuple(credit.DECISIONS)))


class CreditLimitChangeOutput(Schema):
    id = fields.Integer()
    partner = fields.String()
    limit_minor = fields.Integer(allow_none=True)
    reason = fields.String()
    status = fields.String(metadata={"description": "pending, approved or rejected."})
    requested_by = fields.String()
    requested_at = fields.AwareDateTime()
    decided_by = fields.String(allow_none=True)
    decided_at = fields.AwareDateTime(allow_none=True)


class CreditOutput(Schema):
    partner = fields.String()
    currency = fields.String()
    limit_minor = fields.Integer(allow_none=True, metadata={"description": "Null: no limit."})
    warning_minor = fields.Integer(allow_none=True, metadata={"description": "Where the warning band starts."})
    exposure_minor = fields.Integer(metadata={"description": "Owed on closed statements, unpaid, plus the open "
                                                             "period's issuance, rounded up, minus the prepaid "
                                                             "balance; never below zero."})
    state = fields.String(metadata={"description": "ok, warning or over (new issuance refused)."})
    computed_at = fields.AwareDateTime(allow_none=True, metadata={"description": "Null: computed for this answer."})
    pending_changes = fields.List(fields.Nested(CreditLimitChangeOutput))
    prepaid_minor = fields.Integer(metadata={"description": "Money of prepaid blocks no statement was paid from "
                                                            "yet (already taken off the exposure)."})


class PrepaidBlockInput(StrictSchema):
    points = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=credit.MAX_BLOCK_POINTS))
    reference = fields.String(required=True, validate=REFERENCE,
                              metadata={"description": "Finance's receipt reference; unique per partner."})
    paid_on = fields.Date(required=True, metadata={"description": "The day the partner's money arrived."})


class PrepaidBlockOutput(Schema):
    id = fields.Integer()
    partner = fields.String()
    points = fields.Integer()
    price_per_point = DecimalString(metadata={"description": "The partner's issue price in force when recorded."})
    amount_minor = fields.Integer(metadata={"description": "Points x price in minor units, rounded up."})
    currency = fields.String()
    reference = fields.String()
    paid_on = fields.Date()
    recorded_by = fields.String()
    recorded_at = fields.AwareDateTime()
    applied_minor = fields.Integer(metadata={"description": "What of the block paid statements."})
    left_minor = fields.Integer()


class BlockBoughtOutput(Schema):
    block = fields.Nested(PrepaidBlockOutput)
    balance_minor = fields.Integer(metadata={"description": "The partner's prepaid balance after the block."})
    credit = fields.Nested(CreditOutput)


class PrepaidBlocksOutput(Schema):
    partner = fields.String()
    currency = fields.String()
    balance_minor = fields.Integer()
    blocks = fields.List(fields.Nested(PrepaidBlockOutput))


@credit_blueprint.route("/partners/<code>/credit")
class PartnerCreditView(MethodView):
    @require_role("finance", "admin")
    @credit_blueprint.response(200, CreditOutput)
    @documented(credit_blueprint, 404)
    def get(self, code: str) -> credit.CreditView:
        """A partner's credit limit, its last computed exposure and state, and the changes waiting for a decision."""
        with hub_state().unit_of_work() as uow:
            return credit.credit_of(uow.session, partner_code=code)


@credit_blueprint.route("/partners/<code>/credit/limit-changes")
class PartnerCreditLimitChanges(MethodView):
    @require_role("finance", "admin")
    @credit_blueprint.arguments(CreditLimitChangeInput)
    @credit_blueprint.response(201, CreditLimitChangeOutput)
    @documented(credit_blueprint, 404, 409)
    def post(self, data: dict[str, Any], code: str) -> credit.LimitChangeView:
        """Set a partner's credit limit: a first or lower one applies at once; a raise or removal waits for another
        person (409 ``limit_change_pending`` while one waits)."""
        return committed_change(credit.request_limit_change, partner_code=code, limit_minor=data["limit_minor"],
                                reason=data["reason"], warning_percent=hub_state().settings.credit_warning_percent)


@credit_blueprint.route("/partners/<code>/credit/limit-changes/<int:change_id>/decision")
class PartnerCreditLimitDecision(MethodView):
    @require_role("finance", "admin")
    @credit_blueprint.arguments(CreditDecisionInput)
    @credit_blueprint.response(200, CreditLimitChangeOutput)
    @documented(credit_blueprint, 404, 409)
    def post(self, data: dict[str, Any], code: str, change_id: int) -> credit.LimitChangeView:
        """Approve (apply) or reject a waiting raise or removal; the person who asked cannot (409 same_approver)."""
        return committed_change(credit.decide_limit_change, change_id=change_id, partner_code=code,
                                decision=data["decision"],
                                warning_percent=hub_state().settings.credit_warning_percent)


@credit_blueprint.route("/partners/<code>/credit/prepaid-blocks")
class PartnerPrepaidBlocks(MethodView):
    @require_role("finance", "admin")
    @credit_blueprint.response(200, PrepaidBlocksOutput)
    @documented(credit_blueprint, 404)
    def get(self, code: str) -> credit.PrepaidView:
        """A partner's prepaid blocks, oldest first, with what each paid and has left, and its prepaid balance."""
        with hub_state().unit_of_work() as uow:
            return credit.prepaid_blocks(uow.session, partner_code=code)

    @require_role("finance", "admin")
    @credit_blueprint.arguments(PrepaidBlockInput)
    @credit_blueprint.response(201, BlockBoughtOutput)
    @documented(credit_blueprint, 404, 409)
    def post(self, data: dict[str, Any], code: str) -> credit.BlockBought:
        """Record a block of points the partner paid for ahead, at its issue price in force; answers the block, the
        balance and the refreshed credit (409 ``duplicate_reference`` for a receipt already recorded)."""
        return committed_change(credit.buy_block, partner_code=code, points=data["points"],
                                reference=data["reference"], paid_on=data["paid_on"])


def init_app(app: Flask, api: Api) -> None:
    """Register the partners' credit routes."""
    api.register_blueprint(credit_blueprint)
