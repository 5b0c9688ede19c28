"""The finance workflow for the finance role: adjustments with a second approver, invoices, payments, overdue.

Adjustments: POST one (a signed amount, + the partner owes, − a credit), then another
staff client approves or rejects it; an approved adjustment lands in the partner's next
cycle closed after the approval. Statements: mark invoiced (once), record payments
(partial allowed, never more than the absolute net), list overdue statements.
Disputes: open one on a statement line; resolve it with an approved adjustment, or reject it.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, Response, jsonify
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import Schema, fields, validate

from alliance.api.back_office.auth import require_role
from alliance.api.back_office.routes import PREFIX, committed_change, documented
from alliance.api.back_office.schemas import PARTNER_CODE
from alliance.api.converters import MAX_DATABASE_ID
from alliance.api.partner.schemas import StrictSchema
from alliance.api.patterns import UtcDateTime, WholeValue
from alliance.domain.errors import NotFound
from alliance.extensions import hub_state
from settlement import api as finance

finance_blueprint = Blueprint("back_office_finance", __name__, url_prefix=f"{PREFIX}/settlement",
                              description="Finance: adjustments approved by a second client, invoices, payments, "
                                          "overdue statements.")
REFERENCE = WholeValue(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$",
                       error="1-64 letters, digits or . _ : / -, starting with a letter or digit")
MAX_MINOR = 10**18
MAX_LINE_NUMBER = 2**31 - 1


class AdjustmentInput(StrictSchema):
    partner = fields.String(required=True, validate=PARTNER_CODE)
    amount_minor = fields.Integer(required=True, strict=True, validate=validate.Range(min=-MAX_MINOR, max=MAX_MINOR))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=finance.MAX_REASON_LENGTH))
    reference = fields.String(required=True, validate=REFERENCE)


class PageQuery(StrictSchema):
    """A page of a list: pages count from 1; at most 200 rows a page."""

    page = fields.Integer(load_default=1, validate=validate.Range(1, 10**6))
    page_size = fields.Integer(load_default=100, validate=validate.Range(1, finance.MAX_PAGE_SIZE))


class AdjustmentQuery(PageQuery):
    partner = fields.String(validate=PARTNER_CODE)
    status = fields.String(validate=validate.OneOf(("pending", "approved", "rejected")))


class DecisionInput(StrictSchema):
    decision = fields.String(required=True, validate=validate.OneOf(tuple(finance.DECISIONS)))


class AdjustmentOutput(Schema):
    id = fields.Integer()
    partner = fields.String()
    amount_minor = fields.Integer()
    currency = fields.String()
    reason = fields.String()
    reference = fields.String()
    status = fields.String()
    requested_by = fields.String()
    requested_at = fields.AwareDateTime()
    decided_by = fields.String(allow_none=True)
    decided_at = fields.AwareDateTime(allow_none=True)
    applied_run_id = fields.Integer(allow_none=True)


class AdjustmentListOutput(Schema):
    adjustments = fields.List(fields.Nested(AdjustmentOutput))
    total = fields.Integer()
    page = fields.Integer()
    page_size = fields.Integer()


class InvoicedInput(StrictSchema):
    reference = fields.String(required=True, validate=REFERENCE)


class PaymentInput(StrictSchema):
    amount_minor = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=MAX_MINOR))
    paid_on = fields.Date(required=True)
    reference = fields.String(required=True, validate=REFERENCE)


class OverdueQuery(PageQuery):
    as_of = fields.Date()


class StatementStatusOutput(Schema):
    statement_id = fields.Integer()
    partner = fields.String()
    currency = fields.String()
    net_minor = fields.Integer()
    due_date = fields.Date()
    invoiced = fields.Boolean()
    paid_minor = fields.Integer()
    outstanding_minor = fields.Integer()
    paid = fields.Boolean()


class OverdueOutput(Schema):
    as_of = fields.Date()
    statements = fields.List(fields.Nested(StatementStatusOutput))
    total = fields.Integer()
    page = fields.Integer()
    page_size = fields.Integer()


class DisputeInput(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=finance.MAX_REASON_LENGTH))


class DisputeQuery(PageQuery):
    partner = fields.String(validate=PARTNER_CODE)
    status = fields.String(validate=validate.OneOf(("open", *finance.RESOLUTIONS)))


class ResolutionInput(StrictSchema):
    outcome = fields.String(required=True, validate=validate.OneOf(finance.RESOLUTIONS))
    adjustment_id = fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_DATABASE_ID))


class DisputeOutput(Schema):
    id = fields.Integer()
    statement_id = fields.Integer()
    line_number = fields.Integer()
    partner = fields.String()
    reason = fields.String()
    status = fields.String()
    opened_by = fields.String()
    opened_at = fields.AwareDateTime()
    resolved_by = fields.String(allow_none=True)
    resolved_at = fields.AwareDateTime(allow_none=True)
    adjustment_id = fields.Integer(allow_none=True)


class DisputeListOutput(Schema):
    disputes = fields.List(fields.Nested(DisputeOutput))
    total = fields.Integer()
    page = fields.Integer()
    page_size = fields.Integer()


@finance_blueprint.route("/adjustments")
class Adjustments(MethodView):
    @require_role("finance")
    @finance_blueprint.arguments(AdjustmentInput)
    @finance_blueprint.response(201, AdjustmentOutput)
    @documented(finance_blueprint, 404, 409)
    def post(self, data: dict[str, Any]) -> finance.AdjustmentView:
        """Request a credit (< 0) or debit (> 0) for a partner; another staff client must approve it."""
        return committed_change(finance.request_adjustment, partner_code=data["partner"],
                                amount_minor=data["amount_minor"], reason=data["reason"], reference=data["reference"])

    @require_role("finance")
    @finance_blueprint.arguments(AdjustmentQuery, location="query")
    @finance_blueprint.response(200, AdjustmentListOutput)
    @documented(finance_blueprint)
    def get(self, query: dict[str, Any]) -> dict[str, object]:
        """Adjustments, optionally of one partner or in one status, oldest first, a page at a time."""
        with hub_state().unit_of_work() as uow:
            adjustments, total = finance.adjustments_page(uow.session, partner_code=query.get("partner"),
                                                          status=query.get("status"), page=query["page"],
                                                          page_size=query["page_size"])
        return {"adjustments": adjustments, "total": total, "page": query["page"], "page_size": query["page_size"]}


@finance_blueprint.route("/adjustments/<int:adjustment_id>/decision")
class AdjustmentDecision(MethodView):
    @require_role("finance")
    @finance_blueprint.arguments(DecisionInput)
    @finance_blueprint.response(200, AdjustmentOutput)
    @documented(finance_blueprint, 404, 409)
    def post(self, data: dict[str, Any], adjustment_id: int) -> finance.AdjustmentView:
        """Approve or reject a pending adjustment; the client that requested it cannot (409 same_approver)."""
        return committed_change(finance.decide_adjustment, adjustment_id=adjustment_id, decision=data["decision"])


@finance_blueprint.route("/statements/<int:statement_id>/invoiced")
class StatementInvoiced(MethodView):
    @require_role("finance")
    @finance_blueprint.arguments(InvoicedInput)
    @finance_blueprint.response(201, StatementStatusOutput)
    @documented(finance_blueprint, 404, 409)
    def post(self, data: dict[str, Any], statement_id: int) -> finance.StatementStatus:
        """Mark a statement invoiced (once)."""
        return committed_change(finance.mark_invoiced, statement_id=statement_id, reference=data["reference"])


@finance_blueprint.route("/statements/<int:statement_id>/payments")
class StatementPayments(MethodView):
    @require_role("finance")
    @finance_blueprint.arguments(PaymentInput)
    @finance_blueprint.response(201, StatementStatusOutput)
    @documented(finance_blueprint, 404, 409)
    def post(self, data: dict[str, Any], statement_id: int) -> finance.StatementStatus:
        """Record a payment of an invoiced statement; partial payments add up to at most the absolute net."""
        return committed_change(finance.record_payment, statement_id=statement_id, amount_minor=data["amount_minor"],
                                paid_on=data["paid_on"], reference=data["reference"])


class PrepaidPaymentOutput(Schema):
    statement_id = fields.Integer()
    partner = fields.String()
    currency = fields.String()
    net_minor = fields.Integer()
    applied_minor = fields.Integer(metadata={"description": "What was drawn from prepaid money now."})
    paid_minor = fields.Integer()
    outstanding_minor = fields.Integer()
    paid = fields.Boolean()
    balance_minor = fields.Integer(metadata={"description": "The partner's prepaid balance left."})


@finance_blueprint.route("/statements/<int:statement_id>/prepaid-payments")
class StatementPrepaidPayments(MethodView):
    @require_role("finance", "admin")
    @finance_blueprint.response(201, PrepaidPaymentOutput)
    @documented(finance_blueprint, 404, 409)
    def post(self, statement_id: int) -> finance.credit.PrepaidPayment:
        """Pay an invoiced statement from its partner's prepaid blocks, up to what is outstanding and left (409
        ``not_invoiced``, ``nothing_owed`` or ``no_prepaid_balance``)."""
        return committed_change(finance.apply_prepaid, statement_id=statement_id)


@finance_blueprint.route("/overdue")
class Overdue(MethodView):
    @require_role("finance")
    @finance_blueprint.arguments(OverdueQuery, location="query")
    @finance_blueprint.response(200, OverdueOutput)
    @documented(finance_blueprint)
    def get(self, query: dict[str, Any]) -> dict[str, object]:
        """Statements owed to the hub, past their due date and not fully paid by ``as_of`` (default: today, UTC)."""
        as_of: date = query.get("as_of") or datetime.now(timezone.utc).date()
        with hub_state().read_only_unit_of_work() as uow:
            return {"as_of": as_of, "statements": finance.overdue(uow.session, as_of=as_of, page=query["page"],
                                                                  page_size=query["page_size"]),
                    "total": finance.overdue_total(uow.session, as_of=as_of), "page": query["page"],
                    "page_size": query["page_size"]}


@finance_blueprint.route("/statements/<int:statement_id>/lines/<int:line_number>/disputes")
class LineDisputes(MethodView):
    @require_role("finance")
    @finance_blueprint.arguments(DisputeInput)
    @finance_blueprint.response(201, DisputeOutput)
    @documented(finance_blueprint, 404)
    def post(self, data: dict[str, Any], statement_id: int, line_number: int) -> finance.DisputeView:
        """Open a dispute on one line of a closed statement."""
        if line_number > MAX_LINE_NUMBER:
            # A 32-bit INTEGER column: a larger number names no line (404, not a database error).
            raise NotFound(f"statement {statement_id} has no line {line_number}")
        return committed_change(finance.open_dispute, statement_id=statement_id, line_number=line_number,
                                reason=data["reason"])


@finance_blueprint.route("/disputes")
class Disputes(MethodView):
    @require_role("finance")
    @finance_blueprint.arguments(DisputeQuery, location="query")
    @finance_blueprint.response(200, DisputeListOutput)
    @documented(finance_blueprint)
    def get(self, query: dict[str, Any]) -> dict[str, object]:
        """Disputes, optionally of one partner or in one status, oldest first, a page at a time."""
        with hub_state().unit_of_work() as uow:
            disputes, total = finance.disputes_page(uow.session, partner_code=query.get("partner"),
                                                    status=query.get("status"), page=query["page"],
                                                    page_size=query["page_size"])
        return {"disputes": disputes, "total": total, "page": query["page"], "page_size": query["page_size"]}


@finance_blueprint.route("/disputes/<int:dispute_id>/resolution")
class DisputeResolution(MethodView):
    @require_role("finance")
    @finance_blueprint.arguments(ResolutionInput)
    @finance_blueprint.response(200, DisputeOutput)
    @documented(finance_blueprint, 404, 409)
    def post(self, data: dict[str, Any], dispute_id: int) -> finance.DisputeView:
        """Resolve an open dispute: ``adjusted`` with an approved adjustment of the same partner, or ``rejected``."""
        return committed_change(finance.resolve_dispute, dispute_id=dispute_id, outcome=data["outcome"],
                                adjustment_id=data.get("adjustment_id"))


liability_blueprint = Blueprint("back_office_liability", __name__, url_prefix=PREFIX,
                                description="Finance: the points liability, outstanding points valued, as of any "
                                            "moment.")
LIABILITY_FORMATS = ("json", "csv")


class AsOf(fields.Field):
    """A calendar date (``YYYY-MM-DD``: the end of that day in the alliance's time zone) or a date-time with offset."""

    default_error_messages = {"invalid": "Not a date (YYYY-MM-DD) or a date and time with its offset."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date | datetime:
        if isinstance(value, str) and len(value) == len("YYYY-MM-DD"):
            try:
                return date.fromisoformat(value)
            except ValueError:
                raise self.make_error("invalid") from None
        moment = UtcDateTime()._deserialize(value, attr, data, **kwargs)
        return moment


class LiabilityQuery(StrictSchema):
    as_of = AsOf(metadata={"description": "A date (its end in the alliance's time zone) or a date-time with "
                                          "offset; default now. Never in the future."})
    format = fields.String(load_default="json", validate=validate.OneOf(LIABILITY_FORMATS))


class LiabilityLineOutput(Schema):
    issuer = fields.String(allow_none=True, metadata={"description": "A partner code, or ``hub`` for hub-funded."})
    issuer_name = fields.String(allow_none=True)
    expiry_month = fields.String(allow_none=True, metadata={"description": "YYYY-MM in the alliance's time zone."})
    pending_points = fields.Integer()
    available_points = fields.Integer()
    held_points = fields.Integer()
    outstanding_points = fields.Integer()
    expected_to_expire_points = fields.Integer()
    expected_to_redeem_points = fields.Integer()
    value_minor = fields.Dict(keys=fields.String(), values=fields.Integer(),
                              metadata={"description": "Currency → whole minor units."})


class RedemptionPriceOutput(Schema):
    currency = fields.String()
    points = fields.Integer()
    amount = fields.Decimal(as_string=True)


class LiabilityOutput(Schema):
    as_of = fields.AwareDateTime()
    time_zone = fields.String()
    look_back_from = fields.AwareDateTime()
    expired_points = fields.Integer(metadata={"description": "Of lots that reached expiry in the look-back."})
    redeemed_points = fields.Integer(metadata={"description": "Of lots that reached expiry in the look-back."})
    breakage_rate = fields.String(metadata={"description": "The exact share expected to expire, as a fraction."})
    redemptions = fields.List(fields.Nested(RedemptionPriceOutput))
    by_issuer = fields.List(fields.Nested(LiabilityLineOutput))
    by_expiry_month = fields.List(fields.Nested(LiabilityLineOutput))
    cells = fields.List(fields.Nested(LiabilityLineOutput))
    total = fields.Nested(LiabilityLineOutput)
    ledger_points = fields.Integer(metadata={"description": "The members' accounts in the journal at as_of."})
    ties_out = fields.Boolean()


@liability_blueprint.route("/liability")
class Liability(MethodView):
    @require_role("finance")
    @liability_blueprint.arguments(LiabilityQuery, location="query")
    # Documented by hand: one 200 in two content types, JSON (the default) or CSV (``format=csv``).
    @liability_blueprint.doc(responses={"200": {"description": "The points liability.", "content": {
        "application/json": {"schema": LiabilityOutput},
        "text/csv": {"schema": {"type": "string", "description": "The report as CSV (``format=csv``)."}}}}})
    @documented(liability_blueprint)
    def get(self, query: dict[str, Any]) -> Response:
        """The points the alliance owes members at ``as_of``, by issuer and expiry month, valued, with breakage."""
        state = hub_state()
        now = datetime.now(timezone.utc)
        zone = state.settings.alliance_time_zone
        as_of = finance.as_of_moment(query.get("as_of"), time_zone=zone, now=now)
        with state.read_only_unit_of_work() as uow:
            report = finance.points_liability(uow.session, as_of=as_of, time_zone=zone, now=now)
        if query["format"] == "csv":
            filename = f"points-liability-{report.as_of.astimezone(ZoneInfo(zone)).date().isoformat()}.csv"
            return Response(finance.render_liability_csv(report), status=200, content_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{filename}"'})
        return jsonify(LiabilityOutput().dump(liability_json(report)))


def liability_json(report: finance.LiabilityReport) -> dict[str, object]:
    """The report as the API's JSON body."""
    rate = report.breakage_rate
    return {
        "as_of": report.as_of, "time_zone": report.time_zone, "look_back_from": report.look_back_from,
        "expired_points": report.expired_points, "redeemed_points": report.redeemed_points,
        "breakage_rate": f"{rate.numerator}/{rate.denominator}", "redemptions": report.redemptions,
        "by_issuer": report.by_issuer, "by_expiry_month": report.by_expiry_month, "cells": report.cells,
        "total": report.total, "ledger_points": report.ledger_points, "ties_out": report.ties_out,
    }


def init_app(app: Flask, api: Api) -> None:
    """Register the finance workflow routes and the points liability."""
    api.register_blueprint(finance_blueprint)
    api.register_blueprint(liability_blueprint)
