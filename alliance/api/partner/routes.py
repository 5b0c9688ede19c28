"""Partner API routes: purchases, redemptions and balance inquiries.

Flow of every route: signature verified (``before_request``) → schema ``load`` →
service under a unit of work (idempotent for writes) → schema ``dump``. Views hold no
SQL and no business rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, request
from flask.views import MethodView
from flask_smorest import Api, Blueprint

from alliance.api.back_office.settlement_routes import (
    DocumentQuery,
    ReconciliationOutput,
    StatementPageOutput,
    StatementPageQuery,
    reconciliation_view,
    statement_document,
    statement_page,
)
from alliance.api.dumping import compiled_dump
from alliance.api.errors import problem_body
from alliance.api.partner import presenters
from alliance.api.partner.auth import (
    LIMITER_KEY,
    authenticate_partner,
    commit_unclaimed_nonce,
    current_caller,
    current_partner_request,
    finish_partner_request,
    resolve_terminal,
    utc_now,
)
from alliance.api.partner.idempotent import run_idempotent
from alliance.api.partner.schemas import (
    AuthorizeInput,
    BalanceInput,
    BalanceOutput,
    BatchInput,
    BatchOutput,
    CaptureInput,
    EventInput,
    EventOutput,
    ProblemOutput,
    PurchaseInput,
    PurchaseOutput,
    PurchaseRefundInput,
    PurchaseRefundOutput,
    RedemptionOutput,
    RedemptionRefundInput,
    VoidInput,
)
from alliance.config import Settings
from alliance.domain.rate_limits import PartnerLimiter, PartnerLimits, monotonic_seconds
from alliance.extensions import hub_state
from alliance.services import behaviour_points, member_verification, partners, purchases, redemptions, risk
from alliance.services.accounts import inquired_balances
from alliance.services.member_verification import CardHolder
from alliance.storage.unit_of_work import Session, UnitOfWork
from settlement import api as settlement_closing
from settlement.api import reconcile_statement

PREFIX = "/partner/v1"
SIGNED: list[dict[str, list[str]]] = [{"rfc9421": []}]
SIGNED_WRITE_DOC = {"security": SIGNED, "parameters": [{
    "in": "header", "name": "Idempotency-Key", "required": True, "schema": {"type": "string", "maxLength": 255},
    "description": "One key per logical operation, reused on every retry; kept at least 72 hours.",
}]}
ERRORS = {
    401: "Signature rejected: signature_missing, signature_multiple, signature_label, signature_malformed, "
         "signature_components, signature_algorithm, signature_parameters, key_unknown, key_revoked, key_expired, "
         "signature_expired, signature_from_future, signature_lifetime, signature_nonce, signature_replayed, "
         "content_digest_missing, content_digest_malformed, content_digest_mismatch, signature_invalid.",
    403: "member_not_verified, pin_locked, pin_reset_required, terminal_mismatch, terminal_retired.",
    404: "not_found: unknown, or another partner's (a purchase, redemption, statement or named terminal).",
    409: "idempotency_key_in_flight (with Retry-After), receipt_already_reported (GET "
         "/partner/v1/purchases/{receipt_id} returns the purchase already reported under it), "
         "reference_already_used, conflict, invalid_state, card_not_usable, event_already_reported (the event id "
         "was reported with other content), already_referred.",
    413: "request_entity_too_large: the body is over the limit.",
    422: "validation_failed (with per-field errors), idempotency_key_reused, insufficient_points, coupon_invalid "
         "(a coupon_code that may not be used with this call: its detail says why; nothing of the call is stored).",
    429: "rate_limited (with Retry-After): this partner is over its request rate or has too many requests in "
         "progress; nothing of the request was stored.",
}

# Schemas hold no per-call state; building one per request costs a deep copy of its fields.
# The hot replies are dumped by their schema compiled once (``alliance.api.dumping``).
DUMP_PURCHASE = compiled_dump(PurchaseOutput())
BALANCE_OUTPUT = BalanceOutput()
DUMP_BATCH = compiled_dump(BatchOutput())
EVENT_OUTPUT = EventOutput()

RETRY_AFTER = {"Retry-After": {"description": "Whole seconds to wait before retrying.",
                               "schema": {"type": "integer", "minimum": 1}}}

purchases_blueprint = Blueprint("purchases", __name__, url_prefix=f"{PREFIX}/purchases",
                                description="Report purchases (members earn points) and refund them.")
redemptions_blueprint = Blueprint("redemptions", __name__, url_prefix=f"{PREFIX}/redemptions",
                                  description="Spend points at any partner: authorize, capture, void, refund.")
balances_blueprint = Blueprint("balances", __name__, url_prefix=f"{PREFIX}/balance-inquiries",
                               description="A verified member's balance.")
statements_blueprint = Blueprint("partner_statements", __name__, url_prefix=f"{PREFIX}/statements",
                                 description="This partner's signed settlement statements.")
events_blueprint = Blueprint("partner_events", __name__, url_prefix=f"{PREFIX}/events",
                             description="Report behaviour events (sign-ins, referrals, surveys, self-service, "
                                         "recharges, bill payments); members earn points by the event type's rule.")
BLUEPRINTS = (purchases_blueprint, redemptions_blueprint, balances_blueprint, statements_blueprint, events_blueprint)


def signed(blueprint: Blueprint) -> Blueprint:
    """Make ``blueprint`` part of the signed partner API: every request verified and admitted first, the nonce
    of a write refused before its work began kept, the transaction ended; every partner blueprint does this."""
    blueprint.before_request(authenticate_partner)
    blueprint.after_request(commit_unclaimed_nonce)
    blueprint.teardown_request(finish_partner_request)
    return blueprint


for _blueprint in BLUEPRINTS:
    signed(_blueprint)


View = TypeVar("View", bound=Callable[..., Any])


def document_errors(blueprint: Blueprint, *statuses: int) -> Callable[[View], View]:
    """Document the problem+json errors of a view; every partner operation may be rate limited (429)."""
    def decorate(function: View) -> View:
        for status in sorted({*statuses, 429}):
            function = blueprint.alt_response(status, schema=ProblemOutput, description=ERRORS[status],
                                              content_type="application/problem+json",
                                              headers=RETRY_AFTER if status == 429 else None)(function)
        return function
    return decorate


def _settings() -> Settings:
    return hub_state().settings


def _purchase_report(session: Session, data: dict[str, Any]) -> purchases.PurchaseReport:
    return purchases.PurchaseReport(
        receipt_id=data["receipt_id"], card_number=data["card_number"], amount_minor=data["amount_minor"],
        currency=data["currency"], purchased_at=data["purchased_at"],
        terminal_id=resolve_terminal(session, current_caller(), data.get("terminal")),
        coupon_code=data.get("coupon_code"),
    )


@purchases_blueprint.route("")
class Purchases(MethodView):
    @purchases_blueprint.arguments(PurchaseInput())
    @purchases_blueprint.response(201, PurchaseOutput)
    @purchases_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(purchases_blueprint, 401, 404, 409, 413, 422)
    def post(self, data: dict[str, Any]) -> Response:
        """Report a purchase; the member earns points by the partner's rule."""
        now = utc_now()

        caller = current_caller()

        def operation(uow: UnitOfWork, first_rows: list[Any] | None) -> tuple[int, dict[str, Any]]:
            stored = purchases.report_purchase(uow.session, partner_id=caller.partner_id,
                                               report=_purchase_report(uow.session, data), now=now,
                                               expiry_months=_settings().points_expiry_months,
                                               first=first, context_rows=first_rows,
                                               points_notice_threshold=_settings().member_points_notice_threshold)
            return 201, DUMP_PURCHASE(presenters.purchase(uow.session, stored, now,
                                                                 card_number=data["card_number"]))
        # The card's holder in context, and the figures of the earn limits, are read in the claim's round trip.
        first = purchases.first_read(
            current_partner_request().unit_of_work.session, partner_id=caller.partner_id, now=now,
            terminal_code=data.get("terminal"), report=purchases.PurchaseReport(
                receipt_id=data["receipt_id"], card_number=data["card_number"], amount_minor=data["amount_minor"],
                currency=data["currency"], purchased_at=data["purchased_at"], terminal_id=caller.bound_terminal_id))
        return run_idempotent(operation, first=first.read)


@purchases_blueprint.route("/batch")
class PurchaseBatch(MethodView):
    @purchases_blueprint.arguments(BatchInput())
    @purchases_blueprint.response(200, BatchOutput)
    @purchases_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(purchases_blueprint, 401, 409, 413, 422)
    def post(self, data: dict[str, Any]) -> Response:
        """Report up to 1,000 purchases; each item is applied or rejected on its own."""
        def operation(uow: UnitOfWork) -> tuple[int, dict[str, Any]]:
            caller = current_caller()
            outcomes = purchases.report_purchases(
                uow.session, partner_id=caller.partner_id,
                items=[purchases.BatchItem(
                    receipt_id=item["receipt_id"], card_number=item["card_number"], amount_minor=item["amount_minor"],
                    currency=item["currency"], purchased_at=item["purchased_at"], terminal=item.get("terminal"),
                ) for item in data["purchases"]],
                resolve_terminal=lambda code: resolve_terminal(uow.session, caller, code),
                now=utc_now(), expiry_months=_settings().points_expiry_months,
                points_notice_threshold=_settings().member_points_notice_threshold)
            results = [_batch_item(uow, index, item["receipt_id"], outcome)
                       for index, (item, outcome) in enumerate(zip(data["purchases"], outcomes, strict=True))]
            applied = sum(result["status"] == "applied" for result in results)
            return 200, DUMP_BATCH({"applied": applied, "rejected": len(results) - applied, "results": results})
        return run_idempotent(operation)


def _batch_item(uow: UnitOfWork, index: int, receipt_id: str,
                outcome: purchases.BatchOutcome) -> dict[str, Any]:
    """One item of the batch's reply: its purchase as a single report presents it, or its problem."""
    if outcome.error is not None:
        return {"index": index, "receipt_id": receipt_id, "status": "rejected", "purchase": None,
                "problem": problem_body(outcome.error)}
    stored = outcome.purchase
    assert stored is not None, "an outcome without an error holds its stored purchase"
    # The card number and the terminal's code are at hand (no query per item); the reply's
    # "now" is the batch's, which every stored purchase carries as its reported_at.
    purchase = presenters.purchase(uow.session, stored, stored.reported_at, card_number=stored.card_number,
                                   terminal=stored.terminal_code)
    return {"index": index, "receipt_id": receipt_id, "status": "applied", "purchase": purchase, "problem": None}


@purchases_blueprint.route("/<receipt_id>")
class PurchaseByReceipt(MethodView):
    @purchases_blueprint.response(200, PurchaseOutput)
    @purchases_blueprint.doc(security=SIGNED)
    @document_errors(purchases_blueprint, 401, 404)
    def get(self, receipt_id: str) -> dict[str, object]:
        """One of this partner's purchases, by receipt id."""
        with hub_state().unit_of_work() as uow:
            row = purchases.find_purchase(uow.session, partner_id=current_caller().partner_id, receipt_id=receipt_id)
            return presenters.purchase(uow.session, row, utc_now())


@purchases_blueprint.route("/<receipt_id>/refunds")
class PurchaseRefunds(MethodView):
    @purchases_blueprint.arguments(PurchaseRefundInput())
    @purchases_blueprint.response(201, PurchaseRefundOutput)
    @purchases_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(purchases_blueprint, 401, 404, 409, 422)
    def post(self, data: dict[str, Any], receipt_id: str) -> Response:
        """Refund part or all of a purchase; points come back off in proportion, pending first."""
        def operation(uow: UnitOfWork) -> tuple[int, dict[str, Any]]:
            now = utc_now()
            outcome = purchases.refund_purchase(
                uow.session, partner_id=current_caller().partner_id, receipt_id=receipt_id,
                refund_id=data["refund_id"], amount_minor=data["amount_minor"], now=now)
            refund = outcome.refund
            return 201, PurchaseRefundOutput().dump({
                "refund_id": refund.refund_id, "amount_minor": refund.amount_minor,
                "points_recovered": refund.points_recovered, "points_unrecovered": refund.points_unrecovered,
                "created_at": refund.created_at, "purchase": presenters.purchase(uow.session, outcome.purchase, now),
            })
        return run_idempotent(operation)


def _till(session: Session, terminal_code: str | None) -> risk.Subject:
    """The partner's till a request comes from, for the risk controls."""
    caller = current_caller()
    return risk.Subject(partner_id=caller.partner_id,
                        terminal_id=resolve_terminal(session, caller, terminal_code))


def _pin_verified(card_number: str, pin: str, terminal_code: str | None) -> Callable[[UnitOfWork], CardHolder]:
    """A preparation checking card + PIN in the request's transaction; failures are counted."""
    def prepare(uow: UnitOfWork) -> CardHolder:
        return member_verification.verify_pin_at_till(uow.session, card_number=card_number, pin=pin,
                                                      till=_till(uow.session, terminal_code), now=utc_now())
    return prepare


@redemptions_blueprint.route("")
class Redemptions(MethodView):
    @redemptions_blueprint.arguments(AuthorizeInput())
    @redemptions_blueprint.response(201, RedemptionOutput)
    @redemptions_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(redemptions_blueprint, 401, 403, 404, 409, 413, 422)
    def post(self, data: dict[str, Any]) -> Response:
        """Authorize: verify the member and hold points for a redemption here."""
        by_pin = "pin" in data

        def operation(uow: UnitOfWork, holder: CardHolder | None = None) -> tuple[int, dict[str, Any]]:
            now = utc_now()
            caller = current_caller()
            verified = holder or member_verification.redeem_code_at_till(
                uow.session, code=data["redemption_code"], till=_till(uow.session, data.get("terminal")), now=now)
            hold = redemptions.authorize(
                uow.session, partner_id=caller.partner_id, holder=verified, reference=data["reference"],
                points=data["points"], ttl_s=data.get("ttl_s", _settings().hold_ttl_s),
                terminal_id=resolve_terminal(uow.session, caller, data.get("terminal")), now=now,
                coupon_code=data.get("coupon_code"))
            reply = presenters.redemption(uow.session, hold)
            if "coupon_code" in data:
                reply["coupon"] = redemptions.coupon_of(uow.session, hold)
            return 201, RedemptionOutput().dump(reply)
        if by_pin:
            return run_idempotent(operation, prepare=_pin_verified(data["card_number"], data["pin"],
                                                                   data.get("terminal")))
        return run_idempotent(operation)


@redemptions_blueprint.route("/<reference>")
class RedemptionByReference(MethodView):
    @redemptions_blueprint.response(200, RedemptionOutput)
    @redemptions_blueprint.doc(security=SIGNED)
    @document_errors(redemptions_blueprint, 401, 404)
    def get(self, reference: str) -> dict[str, object]:
        """One of this partner's redemptions, by reference."""
        with hub_state().unit_of_work() as uow:
            hold = redemptions.find_redemption(uow.session, partner_id=current_caller().partner_id, reference=reference)
            return presenters.redemption(uow.session, hold)


# A redemption service acting on one hold (capture, void, refund); a refund also answers its refund row.
RedemptionAction = Callable[..., presenters.StoredHold | tuple[presenters.StoredHold, object]]


def _redemption_action(action: RedemptionAction) -> Callable[[str, dict[str, Any]], Response]:
    def operation_for(reference: str, data: dict[str, Any]) -> Response:
        def operation(uow: UnitOfWork) -> tuple[int, dict[str, Any]]:
            hold = action(uow.session, partner_id=current_caller().partner_id, reference=reference, now=utc_now(),
                          **data)
            if isinstance(hold, tuple):
                hold = hold[0]
            return 200, RedemptionOutput().dump(presenters.redemption(uow.session, hold))
        return run_idempotent(operation)
    return operation_for


@redemptions_blueprint.route("/<reference>/capture")
class RedemptionCapture(MethodView):
    @redemptions_blueprint.arguments(CaptureInput())
    @redemptions_blueprint.response(200, RedemptionOutput)
    @redemptions_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(redemptions_blueprint, 401, 404, 409, 422)
    def post(self, data: dict[str, Any], reference: str) -> Response:
        """Capture: spend some or all of the held points, once; the rest go back."""
        return _redemption_action(redemptions.capture)(reference, data)


@redemptions_blueprint.route("/<reference>/void")
class RedemptionVoid(MethodView):
    @redemptions_blueprint.arguments(VoidInput())
    @redemptions_blueprint.response(200, RedemptionOutput)
    @redemptions_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(redemptions_blueprint, 401, 404, 409, 422)
    def post(self, data: dict[str, Any], reference: str) -> Response:
        """Void: release every held point of an authorized redemption."""
        return _redemption_action(redemptions.void)(reference, data)


@redemptions_blueprint.route("/<reference>/refunds")
class RedemptionRefunds(MethodView):
    @redemptions_blueprint.arguments(RedemptionRefundInput())
    @redemptions_blueprint.response(200, RedemptionOutput)
    @redemptions_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(redemptions_blueprint, 401, 404, 409, 422)
    def post(self, data: dict[str, Any], reference: str) -> Response:
        """Refund a captured redemption: points go back to the member."""
        return _redemption_action(redemptions.refund)(reference, data)


@balances_blueprint.route("")
class BalanceInquiries(MethodView):
    @balances_blueprint.arguments(BalanceInput())
    @balances_blueprint.response(200, BalanceOutput)
    @balances_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(balances_blueprint, 401, 403, 404, 413, 422)
    def post(self, data: dict[str, Any]) -> Response:
        """Balance of a member verified by card and PIN."""
        def operation(uow: UnitOfWork, holder: CardHolder) -> tuple[int, dict[str, Any]]:
            # Read after the PIN check's card lock, in a statement of its own: a redemption
            # on this card that held the lock has committed by now, and its hold shows.
            balances = inquired_balances(uow.session, holder.member_id)
            return 200, BALANCE_OUTPUT.dump({
                "card_number": presenters.mask_card_number(data["card_number"]), "tier": holder.tier,
                "points_available": balances["available"], "points_pending": balances["pending"],
                "points_held": balances["held"],
            })
        return run_idempotent(operation, prepare=_pin_verified(data["card_number"], data["pin"],
                                                               data.get("terminal")),
                              operation_writes=False)


@statements_blueprint.route("")
class PartnerStatements(MethodView):
    @statements_blueprint.arguments(StatementPageQuery(), location="query")
    @statements_blueprint.response(200, StatementPageOutput)
    @statements_blueprint.doc(security=SIGNED)
    @document_errors(statements_blueprint, 401, 422)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """This partner's statements, oldest cycle first, a page at a time (``page``, ``page_size`` up to 200)."""
        with hub_state().unit_of_work() as uow:
            partner_id = current_caller().partner_id
            code = partners.partner_code(uow.session, partner_id)
            return statement_page(uow.session, partner_id=partner_id, partner_code=code, query=query)


@statements_blueprint.route("/<int:statement_id>")
class PartnerStatementDocument(MethodView):
    @statements_blueprint.arguments(DocumentQuery(), location="query")
    @statements_blueprint.response(200, description="The exact signed bytes (JSON or CSV) or a detached signature.")
    @statements_blueprint.doc(security=SIGNED)
    @document_errors(statements_blueprint, 401, 404, 422)
    def get(self, query: dict[str, Any], statement_id: int) -> Response:
        """One of this partner's statements as signed; another partner's is not found."""
        with hub_state().unit_of_work() as uow:
            item = settlement_closing.statement_by_id(uow.session, statement_id=statement_id,
                                                      partner_id=current_caller().partner_id)
        return statement_document(item, query["format"])


@statements_blueprint.route("/<int:statement_id>/reconciliations")
class PartnerStatementReconciliations(MethodView):
    @statements_blueprint.response(201, ReconciliationOutput)
    @statements_blueprint.doc(**SIGNED_WRITE_DOC, requestBody={"required": True, "content": {"text/csv": {
        "schema": {"type": "string"},
        "example": "receipt_id,amount_minor,currency,occurred_on\r\nr-1,12345,EUR,2026-11-23\r\n"}}})
    @document_errors(statements_blueprint, 401, 404, 409, 413, 422)
    def post(self, statement_id: int) -> Response:
        """Upload this partner's own CSV of a statement's cycle; the hub reports every difference."""
        def operation(uow: UnitOfWork) -> tuple[int, dict[str, Any]]:
            row = reconcile_statement(uow.session, statement_id=statement_id, document=request.get_data(cache=True),
                                      source="partner", actor=f"partner-key:{current_caller().key_id}",
                                      now=utc_now(), partner_id=current_caller().partner_id)
            return 201, ReconciliationOutput().dump(reconciliation_view(row))
        return run_idempotent(operation)


def _event_body(view: behaviour_points.EventView) -> dict[str, Any]:
    """A reported event as the partner reads it."""
    return {"event_id": view.event_id, "event_type": view.event_type, "member_number": view.member_number,
            "occurred_at": view.occurred_at, "amount_minor": view.amount_minor, "currency": view.currency,
            "referred_member": view.referred_member_number, "status": view.status, "reason": view.reason,
            "points_awarded": view.points_awarded, "streak_day": view.streak_day, "reported_at": view.reported_at,
            "awards": [{"member_number": award.member_number, "side": award.side, "points": award.points,
                        "streak_bonus_points": award.streak_bonus_points, "funded_by": award.funded_by,
                        "awarded_at": award.awarded_at} for award in view.awards]}


@events_blueprint.route("")
class Events(MethodView):
    @events_blueprint.arguments(EventInput())
    @events_blueprint.response(201, EventOutput)
    @events_blueprint.alt_response(200, schema=EventOutput, description="The event id was reported before with the "
                                   "same content: the event as stored, nothing counted twice.")
    @events_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(events_blueprint, 401, 404, 409, 413, 422)
    def post(self, data: dict[str, Any]) -> Response:
        """Report a behaviour event once per event id; the member earns its rule's points (0 with a reason if
        capped or not eligible), issued by the rule's funder."""
        def operation(uow: UnitOfWork) -> tuple[int, dict[str, Any]]:
            settings = _settings()
            view = behaviour_points.report_event(
                uow.session, partner_id=current_caller().partner_id, now=utc_now(),
                policy=behaviour_points.Policy(time_zone=settings.alliance_time_zone,
                                               expiry_months=settings.points_expiry_months),
                report=behaviour_points.EventReport(
                    event_id=data["event_id"], event_type=data["event_type"], occurred_at=data["occurred_at"],
                    card_number=data.get("card_number"), member_number=data.get("member_number"),
                    amount_minor=data.get("amount_minor"), currency=data.get("currency"),
                    referred_member_number=data.get("referred_member")))
            return (200 if view.replayed else 201), EVENT_OUTPUT.dump(_event_body(view))
        return run_idempotent(operation)


def init_app(app: Flask, api: Api) -> None:
    """Register the partner blueprints, each verifying signatures before anything else."""
    api.spec.components.security_scheme("rfc9421", {
        "type": "apiKey", "in": "header", "name": "Signature",
        "description": "RFC 9421 HTTP Message Signature, label pos, alg ed25519, covering @method @path @query "
                       "and, with a body, content-type content-digest idempotency-key; created, expires "
                       "(≤ 300 s later), nonce (≥ 128 bits), keyid. Content-Digest per RFC 9530.",
    })
    settings = hub_state(app).settings
    hub_state(app).extras[LIMITER_KEY] = PartnerLimiter(
        PartnerLimits(rate_per_s=settings.partner_rate_per_s, burst=settings.partner_burst,
                      max_in_flight=settings.partner_max_in_flight), clock=monotonic_seconds)
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
