"""Partner API routes of the rewards catalog: a desk orders for a member present, a supplier fulfils.

Same flow as ``routes``: signature verified (``before_request``) → schema ``load`` →
``rewards`` service under the request's unit of work (idempotent for writes) → schema
``dump``. An order is named by its channel (the code of the partner whose desk placed it,
or ``back-office``) and the desk's reference; a supplier acts only on its own orders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from alliance.api.partner.auth import (
    current_caller,
    utc_now,
)
from alliance.api.partner.idempotent import run_idempotent
from alliance.api.partner.routes import PREFIX, SIGNED, SIGNED_WRITE_DOC, document_errors, signed
from alliance.api.partner.schemas import CARD_NUMBER, REFERENCE, StrictSchema
from alliance.api.patterns import WholeValue
from alliance.extensions import hub_state
from alliance.services import member_verification, partners, rewards, risk
from alliance.services.member_verification import CardHolder, MemberNotVerified
from alliance.storage.unit_of_work import Session, UnitOfWork

ORDER_STATUSES = ("placed", "fulfilled", "failed", "cancelled", "expired", "returned")
MAX_PAGE = 200
ERRORS = {
    401: "Signature rejected (see the partner API's other operations for every signature code).",
    403: "member_not_verified (wrong PIN, or a redemption code that is unknown, used, expired or not the card's "
         "member's), pin_locked, pin_reset_required.",
    404: "not_found: an unknown card or reward, or an order that is unknown or another supplier's.",
    409: "idempotency_key_in_flight (with Retry-After), out_of_stock, reward_unavailable (not listed, not valid now, "
         "above the member's tier, or its supplier not active), order_limit_reached, return_window_closed, "
         "invalid_state (the order is not in a state that allows it: failing a fulfilled order, fulfilling an "
         "expired one), conflict (the reference was used for another reward, member or number of items), "
         "card_not_usable.",
    413: "request_entity_too_large: the body is over the limit.",
    422: "validation_failed (with per-field errors), idempotency_key_reused, insufficient_points.",
    429: "rate_limited (with Retry-After): nothing of the request was stored.",
}

REWARD_CODE = WholeValue(r"^[a-z0-9][a-z0-9-]{1,39}$", error="a reward code")
PIN = WholeValue(r"^[0-9]{4,12}$", error="4-12 digits")
REDEMPTION_CODE = WholeValue(r"^[A-Za-z0-9]{6,32}$", error="a redemption code")


class PartnerRewardOutput(Schema):
    """A reward a member can order now."""

    code = fields.String()
    title = fields.String()
    description = fields.String(allow_none=True)
    kind = fields.String(metadata={"description": "goods, voucher, experience or bill_credit"})
    supplier = fields.String(metadata={"description": "The code of the partner that supplies it."})
    points_price = fields.Integer(metadata={"description": "Points per item, the price in force now."})
    bill_credit_minor = fields.Integer(allow_none=True, metadata={
        "description": "Bill credit only: the credit per item, in minor units of currency."})
    currency = fields.String(allow_none=True, metadata={"description": "The currency of bill_credit_minor."})
    stock = fields.Integer(allow_none=True, metadata={"description": "Goods and experiences: items left."})
    vouchers_left = fields.Integer(allow_none=True, metadata={"description": "Vouchers: codes left in the pool."})
    min_tier = fields.String(allow_none=True, metadata={"description": "The lowest tier that may order it."})
    per_member_limit = fields.Integer(allow_none=True, metadata={
        "description": "How many items one member may hold at once (placed or fulfilled)."})
    fulfilment_days = fields.Integer(metadata={"description": "Days the supplier has to fulfil an order."})
    return_days = fields.Integer(metadata={"description": "Days after fulfilment an order may be returned."})
    valid_until = fields.AwareDateTime(allow_none=True)


class PartnerCatalogOutput(Schema):
    rewards = fields.List(fields.Nested(PartnerRewardOutput))


class PartnerRewardOrderInput(StrictSchema):
    """A member orders a reward at the desk, proving presence with the card and its PIN or a one-time code."""

    reference = fields.String(required=True, validate=REFERENCE, metadata={
        "description": "The desk's order reference, unique per partner: the order's natural key."})
    reward = fields.String(required=True, validate=REWARD_CODE)
    items = fields.Integer(required=True, strict=True, validate=validate.Range(1, rewards.MAX_ITEMS_PER_ORDER))
    card_number = fields.String(required=True, validate=CARD_NUMBER)
    pin = fields.String(validate=PIN, load_only=True)
    redemption_code = fields.String(validate=REDEMPTION_CODE, load_only=True, metadata={
        "description": "A one-time code of the card's member, instead of the PIN."})

    @validates_schema
    def _one_proof(self, data: dict[str, Any], **_: object) -> None:
        if ("pin" in data) == ("redemption_code" in data):
            raise ValidationError("give the card's pin or a redemption_code (one of them)", field_name="pin")


class PartnerRewardOrderOutput(Schema):
    """An order as its desk and its supplier see it."""

    channel = fields.String(metadata={"description": "The code of the partner whose desk placed it, or back-office."})
    reference = fields.String()
    member_number = fields.String()
    reward = fields.String()
    reward_kind = fields.String()
    supplier = fields.String()
    items = fields.Integer()
    points = fields.Integer(metadata={"description": "The points the order holds, or spent once fulfilled."})
    unit_price_minor = fields.Integer(allow_none=True, metadata={
        "description": "Per item: what the hub reimburses the supplier, or for bill credit the credit to apply. "
                       "Shown to the supplier, and to the desk for bill credit only."})
    amount_minor = fields.Integer(allow_none=True, metadata={"description": "items × unit_price_minor."})
    currency = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "placed, fulfilled, failed, cancelled, expired (a placed order "
                                                    "past fulfil_by reads as expired) or returned"})
    placed_at = fields.AwareDateTime()
    fulfil_by = fields.AwareDateTime()
    fulfilled_at = fields.AwareDateTime(allow_none=True)
    returnable_until = fields.AwareDateTime(allow_none=True)
    closed_at = fields.AwareDateTime(allow_none=True)
    fulfilment_note = fields.String(allow_none=True)
    end_reason = fields.String(allow_none=True)
    voucher_codes = fields.List(fields.String(), metadata={
        "description": "Vouchers only, in the reply that placed the order (and its idempotent replay): the codes "
                       "to hand the member. They are never shown again."})


class PartnerRewardOrderPageQuery(StrictSchema):
    status = fields.String(validate=validate.OneOf(ORDER_STATUSES))
    limit = fields.Integer(load_default=50, validate=validate.Range(1, MAX_PAGE))
    offset = fields.Integer(load_default=0, validate=validate.Range(0, 10**9))


class PartnerRewardOrderPageOutput(Schema):
    orders = fields.List(fields.Nested(PartnerRewardOrderOutput))
    limit = fields.Integer()
    offset = fields.Integer()


class PartnerFulfilmentInput(StrictSchema):
    note = fields.String(validate=validate.Length(1, 200), metadata={
        "description": "What the member got: a parcel number, which bill the credit went on."})


class PartnerReasonInput(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(1, 500))


ORDER_OUTPUT = PartnerRewardOrderOutput()

rewards_blueprint = Blueprint("partner_rewards", __name__, url_prefix=f"{PREFIX}/rewards",
                              description="The rewards members can order now.")
orders_blueprint = Blueprint("partner_reward_orders", __name__, url_prefix=f"{PREFIX}/reward-orders",
                             description="Order rewards for a member at the desk; fulfil, fail or take back the "
                                         "orders this partner supplies.")
BLUEPRINTS = (rewards_blueprint, orders_blueprint)
for _blueprint in BLUEPRINTS:
    signed(_blueprint)


def _actor() -> str:
    return f"partner-key:{current_caller().key_id}"


def _reward_body(view: rewards.RewardView) -> dict[str, Any]:
    credit = view.kind == "bill_credit"
    return {"code": view.code, "title": view.title, "description": view.description, "kind": view.kind,
            "supplier": view.supplier, "points_price": view.points_price,
            "bill_credit_minor": view.unit_price_minor if credit else None,
            "currency": view.currency if credit else None, "stock": view.stock,
            "vouchers_left": view.vouchers_left, "min_tier": view.min_tier,
            "per_member_limit": view.per_member_limit, "fulfilment_days": view.fulfilment_days,
            "return_days": view.return_days, "valid_until": view.valid_until}


def _order_body(view: rewards.OrderView, *, supplier: bool,
                voucher_codes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """An order; its money is the supplier's business, save bill credit, whose amount the desk tells the member."""
    money = supplier or view.reward_kind == "bill_credit"
    body: dict[str, Any] = {
        "channel": view.channel, "reference": view.reference, "member_number": view.member_number,
        "reward": view.reward, "reward_kind": view.reward_kind, "supplier": view.supplier, "items": view.items,
        "points": view.points, "unit_price_minor": view.unit_price_minor if money else None,
        "amount_minor": view.amount_minor if money else None, "currency": view.currency if money else None,
        "status": view.status, "placed_at": view.placed_at, "fulfil_by": view.fulfil_by,
        "fulfilled_at": view.fulfilled_at, "returnable_until": view.returnable_until, "closed_at": view.closed_at,
        "fulfilment_note": view.fulfilment_note, "end_reason": view.end_reason}
    if voucher_codes is not None:
        body["voucher_codes"] = list(voucher_codes)
    return body


def _till() -> risk.Subject:
    """The desk a request comes from, for the card-testing limits (a terminal-bound key names its terminal)."""
    caller = current_caller()
    return risk.Subject(partner_id=caller.partner_id, terminal_id=caller.bound_terminal_id)


def _pin_verified(card_number: str, pin: str) -> Callable[[UnitOfWork], CardHolder]:
    """A preparation checking card + PIN in the request's transaction; failures are counted."""
    def prepare(uow: UnitOfWork) -> CardHolder:
        return member_verification.verify_pin_at_till(uow.session, card_number=card_number, pin=pin,
                                                      till=_till(), now=utc_now())
    return prepare


def _code_verified(session: Session, card_number: str, code: str) -> CardHolder:
    """A one-time code used at the desk, which must belong to the card's member."""
    holder = member_verification.redeem_code_at_till(session, code=code, till=_till(), now=utc_now())
    if member_verification.active_card_holder(session, card_number).member_id != holder.member_id:
        raise MemberNotVerified("the redemption code is not the card's member's")
    return holder


@rewards_blueprint.route("")
class Rewards(MethodView):
    @rewards_blueprint.response(200, PartnerCatalogOutput)
    @rewards_blueprint.doc(security=SIGNED)
    @document_errors(rewards_blueprint, 401)
    def get(self) -> dict[str, Any]:
        """The rewards a member can order now: listed, valid now and not sold out, by code."""
        with hub_state().unit_of_work() as uow:
            views = rewards.catalog(uow.session, now=utc_now(), orderable_only=True)
            return {"rewards": [_reward_body(view) for view in views]}


@orders_blueprint.route("")
class RewardOrders(MethodView):
    @orders_blueprint.arguments(PartnerRewardOrderInput())
    @orders_blueprint.response(201, PartnerRewardOrderOutput)
    @orders_blueprint.alt_response(200, schema=PartnerRewardOrderOutput, description=(
        "The reference was ordered before (a new request, not a retry under the same key): the order as "
        "stored, without voucher codes; nothing is ordered twice."))
    @orders_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(orders_blueprint, 401, 403, 404, 409, 413, 422)
    def post(self, data: dict[str, Any]) -> Response:
        """Order a reward for a member at this partner's desk; the points are held at the supplier until it
        fulfils (a voucher is fulfilled at once and its codes are in the reply)."""
        caller = current_caller()

        def operation(uow: UnitOfWork, holder: CardHolder | None = None) -> tuple[int, dict[str, Any]]:
            desk = partners.partner_code(uow.session, caller.partner_id)
            assert desk is not None, "a verified caller is a partner"
            verified = holder
            if verified is None and rewards.order_exists(uow.session, channel=desk, reference=data["reference"]):
                # Asked again under a new key: the order is found, and the member's one-time code is not used up.
                verified = member_verification.active_card_holder(uow.session, data["card_number"])
            if verified is None:
                verified = _code_verified(uow.session, data["card_number"], data["redemption_code"])
            placed = rewards.place_order(
                uow.session, reward_code=data["reward"], member_id=verified.member_id, items=data["items"],
                channel=desk, reference=data["reference"], actor=_actor(), key_ring=hub_state().key_ring,
                now=utc_now())
            supplier = placed.order.supplier == desk
            return (200 if placed.replayed else 201), ORDER_OUTPUT.dump(
                _order_body(placed.order, supplier=supplier, voucher_codes=placed.voucher_codes))
        if "pin" in data:
            return run_idempotent(operation, prepare=_pin_verified(data["card_number"], data["pin"]))
        return run_idempotent(operation)

    @orders_blueprint.arguments(PartnerRewardOrderPageQuery(), location="query")
    @orders_blueprint.response(200, PartnerRewardOrderPageOutput)
    @orders_blueprint.doc(security=SIGNED)
    @document_errors(orders_blueprint, 401, 422)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """The orders this partner supplies, newest first: what it must fulfil (``status=placed``)."""
        with hub_state().unit_of_work() as uow:
            views = rewards.orders(uow.session, now=utc_now(), supplier_id=current_caller().partner_id,
                                   status=query.get("status"), limit=query["limit"], offset=query["offset"])
            return {"orders": [_order_body(view, supplier=True) for view in views], "limit": query["limit"],
                    "offset": query["offset"]}


@orders_blueprint.route("/<channel>/<path:reference>")
class RewardOrderByReference(MethodView):
    @orders_blueprint.response(200, PartnerRewardOrderOutput)
    @orders_blueprint.doc(security=SIGNED)
    @document_errors(orders_blueprint, 401, 404)
    def get(self, channel: str, reference: str) -> dict[str, Any]:
        """One order this partner supplies; another supplier's is not found."""
        with hub_state().unit_of_work() as uow:
            view = rewards.order_view(uow.session, channel=channel, reference=reference,
                                      supplier_id=current_caller().partner_id, now=utc_now())
            return _order_body(view, supplier=True)


# A rewards service ending or fulfilling one of the supplier's orders.
OrderAction = Callable[..., rewards.OrderView]


def _supplier_action(action: OrderAction, channel: str, reference: str, **arguments: Any) -> Response:
    def operation(uow: UnitOfWork) -> tuple[int, dict[str, Any]]:
        view = action(uow.session, channel=channel, reference=reference, supplier_id=current_caller().partner_id,
                      actor=_actor(), now=utc_now(), **arguments)
        return 200, ORDER_OUTPUT.dump(_order_body(view, supplier=True))
    return run_idempotent(operation)


@orders_blueprint.route("/<channel>/<path:reference>/fulfilment")
class RewardOrderFulfilment(MethodView):
    @orders_blueprint.arguments(PartnerFulfilmentInput())
    @orders_blueprint.response(200, PartnerRewardOrderOutput)
    @orders_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(orders_blueprint, 401, 404, 409, 413, 422)
    def post(self, data: dict[str, Any], channel: str, reference: str) -> Response:
        """This supplier fulfilled the order: its held points are spent. Fulfilling it again changes nothing."""
        return _supplier_action(rewards.fulfil_order, channel, reference, note=data.get("note"))


@orders_blueprint.route("/<channel>/<path:reference>/failure")
class RewardOrderFailure(MethodView):
    @orders_blueprint.arguments(PartnerReasonInput())
    @orders_blueprint.response(200, PartnerRewardOrderOutput)
    @orders_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(orders_blueprint, 401, 404, 409, 413, 422)
    def post(self, data: dict[str, Any], channel: str, reference: str) -> Response:
        """This supplier cannot fulfil a placed order: its points go back to the member, its stock is freed."""
        return _supplier_action(rewards.fail_order, channel, reference, reason=data["reason"])


@orders_blueprint.route("/<channel>/<path:reference>/return")
class RewardOrderReturn(MethodView):
    @orders_blueprint.arguments(PartnerReasonInput())
    @orders_blueprint.response(200, PartnerRewardOrderOutput)
    @orders_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(orders_blueprint, 401, 404, 409, 413, 422)
    def post(self, data: dict[str, Any], channel: str, reference: str) -> Response:
        """A fulfilled order came back to this supplier within the return window: every point goes back."""
        return _supplier_action(rewards.return_order, channel, reference, reason=data["reason"])


def init_app(app: Flask, api: Api) -> None:
    """Register the rewards blueprints (after ``routes.init_app``, which declares the signature scheme)."""
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
