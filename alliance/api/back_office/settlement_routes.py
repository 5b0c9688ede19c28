"""Settlement for the finance role, and the hub's public statement keys.

Finance closes due cycles, lists and fetches signed statements (the exact signed bytes,
JSON or CSV, with their detached signatures) and reads the cycle summary across
partners. The statement keys are public so partners can verify statements offline.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from flask import Blueprint as FlaskBlueprint
from flask import Flask, Response, jsonify
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import Schema, fields, validate

from alliance.api.back_office.auth import actor, require_role
from alliance.api.back_office.routes import PREFIX, documented
from alliance.api.back_office.schemas import PARTNER_CODE
from alliance.api.partner.schemas import CURRENCY, StrictSchema
from alliance.api.patterns import UtcDateTime
from alliance.extensions import hub_state
from alliance.services import partner_admin, partners
from alliance.storage.unit_of_work import Session
from settlement import api as settlement

settlement_blueprint = Blueprint("back_office_settlement", __name__, url_prefix=f"{PREFIX}/settlement",
                                 description="Finance: close cycles, signed statements, the cycle summary.")
public_keys_blueprint = FlaskBlueprint("statement_keys", __name__)
DOCUMENT_FORMATS = ("json", "csv", "json-signature", "csv-signature")


class ClosingInput(StrictSchema):
    partner = fields.String(validate=PARTNER_CODE)


class StatementPageQuery(StrictSchema):
    """A page of a partner's statements: pages count from 1, at most 200 statements a page."""

    page = fields.Integer(load_default=1, validate=validate.Range(1, 10**6))
    page_size = fields.Integer(load_default=100,
                               validate=validate.Range(1, settlement.MAX_STATEMENT_PAGE_SIZE))


class StatementQuery(StatementPageQuery):
    partner = fields.String(required=True, validate=PARTNER_CODE)


class DocumentQuery(StrictSchema):
    format = fields.String(load_default="json", validate=validate.OneOf(DOCUMENT_FORMATS))


class SummaryQuery(StrictSchema):
    cycle_ends_at = UtcDateTime(required=True)
    currency = fields.String(required=True, validate=CURRENCY)


class StatementOutput(Schema):
    statement_id = fields.Integer()
    partner = fields.String()
    cycle_starts_at = fields.AwareDateTime()
    cycle_ends_at = fields.AwareDateTime()
    net_minor = fields.Integer()
    closing_balance_minor = fields.Integer()
    key_id = fields.String()


class StatementListOutput(Schema):
    statements = fields.List(fields.Nested(StatementOutput))


class StatementPageOutput(Schema):
    statements = fields.List(fields.Nested(StatementOutput))
    total = fields.Integer()
    page = fields.Integer()
    page_size = fields.Integer()


def statement_page(session: Session, *, partner_id: int, partner_code: str | None,
                   query: dict[str, Any]) -> dict[str, Any]:
    """One page of a partner's statements, oldest cycle first, with how many there are in all."""
    items = settlement.partner_statement_page(session, partner_id=partner_id, page=query["page"],
                                                      page_size=query["page_size"])
    return {"statements": [statement_view(item, partner_code) for item in items],
            "total": settlement.partner_statement_count(session, partner_id=partner_id),
            "page": query["page"], "page_size": query["page_size"]}


def statement_view(item: settlement.ClosedStatement | settlement.StatementSummary,
                   partner_code: str | None) -> dict[str, Any]:
    return {"statement_id": item.statement_id, "partner": partner_code, "cycle_starts_at": item.cycle_starts_at,
            "cycle_ends_at": item.cycle_ends_at, "net_minor": item.net_minor,
            "closing_balance_minor": item.closing_balance_minor, "key_id": item.key_id}


def statement_document(item: settlement.ClosedStatement, document_format: str) -> Response:
    """The exact stored bytes of one rendering or signature of a statement."""
    body, content_type = {
        "json": (item.document_json, "application/json"),
        "csv": (item.document_csv, "text/csv; charset=utf-8"),
        "json-signature": (item.signature_json, "application/json"),
        "csv-signature": (item.signature_csv, "application/json"),
    }[document_format]
    return Response(body, status=200, content_type=content_type)


@settlement_blueprint.route("/closings")
class Closings(MethodView):
    @require_role("finance")
    @settlement_blueprint.arguments(ClosingInput)
    @settlement_blueprint.response(200, StatementListOutput)
    @documented(settlement_blueprint, 404)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Close every overdue cycle (of one partner, or all), oldest first."""
        state = hub_state()
        now = datetime.now(timezone.utc)
        if data.get("partner"):
            with state.unit_of_work() as uow:
                partner_admin.partner_by_code(uow.session, data["partner"])
        closed = settlement.close_due_cycles_by(state.session_factory, actor=actor(), now=now,
                                                signer=state.statement_signer, partner_code=data.get("partner"))
        with state.unit_of_work() as uow:
            codes = partners.codes_by_id(uow.session)
        return {"statements": [statement_view(item, codes[item.partner_id]) for item in closed]}


@settlement_blueprint.route("/statements")
class Statements(MethodView):
    @require_role("finance")
    @settlement_blueprint.arguments(StatementQuery, location="query")
    @settlement_blueprint.response(200, StatementPageOutput)
    @documented(settlement_blueprint, 404)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """A partner's statements, oldest cycle first, a page at a time."""
        with hub_state().read_only_unit_of_work() as uow:
            partner = partner_admin.partner_by_code(uow.session, query["partner"])
            return statement_page(uow.session, partner_id=partner.id, partner_code=partner.code, query=query)


@settlement_blueprint.route("/statements/<int:statement_id>")
class StatementDocument(MethodView):
    @require_role("finance")
    @settlement_blueprint.arguments(DocumentQuery, location="query")
    @settlement_blueprint.response(200, description="The exact signed bytes (JSON or CSV) or a detached signature.")
    @documented(settlement_blueprint, 404)
    def get(self, query: dict[str, Any], statement_id: int) -> Response:
        """One statement as signed: JSON, CSV, or either's detached Ed25519 signature."""
        with hub_state().unit_of_work() as uow:
            item = settlement.statement_by_id(uow.session, statement_id=statement_id)
        return statement_document(item, query["format"])


@settlement_blueprint.route("/summary")
class Summary(MethodView):
    @require_role("finance")
    @settlement_blueprint.arguments(SummaryQuery, location="query")
    @settlement_blueprint.response(200)
    @documented(settlement_blueprint)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Across partners for cycles ending at one instant: nets, gross vs net, netting efficiency, the
        issuer → redeemer matrix."""
        with hub_state().read_only_unit_of_work() as uow:
            summary = settlement.cycle_summary(uow.session, cycle_ends_at=query["cycle_ends_at"],
                                                       currency=query["currency"])
        return json.loads(json.dumps(summary, default=_plain))


class ReconciliationInput(StrictSchema):
    document = fields.String(
        required=True, validate=validate.Length(max=16 * 1024 * 1024),
        metadata={"description": "The partner's CSV: receipt_id,amount_minor,currency,occurred_on"})


class ReconciliationOutput(Schema):
    report_id = fields.Integer()
    statement_id = fields.Integer()
    discrepancies = fields.Integer()
    report = fields.Dict(metadata={"description": "matched, missing_at_hub, missing_at_partner, mismatched"})
    report_csv = fields.String()


class StoredReconciliation(Protocol):
    """A stored reconciliation report's columns, as ``reconciliation_view`` reads them."""

    @property
    def id(self) -> int: ...
    @property
    def statement_id(self) -> int: ...
    @property
    def discrepancies(self) -> int: ...
    @property
    def report_json(self) -> str: ...
    @property
    def report_csv(self) -> str: ...


def reconciliation_view(row: StoredReconciliation) -> dict[str, Any]:
    """A stored reconciliation report as the API shows it."""
    return {"report_id": row.id, "statement_id": row.statement_id, "discrepancies": row.discrepancies,
            "report": json.loads(row.report_json), "report_csv": row.report_csv}


@settlement_blueprint.route("/statements/<int:statement_id>/reconciliations")
class StatementReconciliations(MethodView):
    @require_role("finance")
    @settlement_blueprint.arguments(ReconciliationInput)
    @settlement_blueprint.response(201, ReconciliationOutput)
    @documented(settlement_blueprint, 404)
    def post(self, data: dict[str, Any], statement_id: int) -> dict[str, Any]:
        """Reconcile a statement against a partner's CSV sent to finance; the report is stored."""
        with hub_state().unit_of_work() as uow:
            row = settlement.reconcile_statement(uow.session, statement_id=statement_id,
                                                 document=data["document"].encode("utf-8"), source="back_office",
                                                 actor=actor(), now=datetime.now(timezone.utc))
            uow.commit()
            return reconciliation_view(row)


def _plain(value: object) -> object:
    """JSON for the summary's dataclasses and Decimals (as strings, never floats)."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    return str(value)


@public_keys_blueprint.get("/settlement/v1/statement-keys")
def statement_keys() -> Response:
    """The hub's public statement keys, for verifying statements offline."""
    signer = hub_state().statement_signer
    public_key = signer.signing_key.public_key()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return jsonify(keys=[{"key_id": signer.key_id, "algorithm": "ed25519",
                          "public_key_b64": base64.b64encode(raw).decode(), "public_key_pem": pem.decode()}])


def init_app(app: Flask, api: Api) -> None:
    """Register the finance routes and the public statement keys."""
    api.register_blueprint(settlement_blueprint)
    app.register_blueprint(public_keys_blueprint)
