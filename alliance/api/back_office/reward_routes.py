"""The rewards catalog and its orders in the back office (docs/rewards.md).

Partner managers and administrators keep the catalog: propose a reward for a supplier,
approve it (a second person), withdraw it, schedule its prices, add stock, upload voucher
codes (the reply counts them, never echoes them). Customer service and administrators
place and cancel orders for a member and record returns; partner managers and
administrators read orders and record, on a supplier's behalf, that it fulfilled one or
could not. An order is named by its channel (``back-office`` for orders placed here, or
the partner code of the desk that placed it) and its reference.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Flask
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import Schema, fields, validate

from alliance.api.back_office.auth import actor, require_role
from alliance.api.back_office.routes import PREFIX, committed_change, documented
from alliance.api.partner.schemas import StrictSchema
from alliance.api.patterns import UtcDateTime, WholeValue
from alliance.domain.earning import TIER_ORDER
from alliance.extensions import hub_state
from alliance.services import member_admin, partners, rewards

CATALOG_ROLES = ("partner_manager", "admin")
ORDER_ROLES = ("customer_service", "admin")
SUPPLIER_ROLES = ("partner_manager", "admin")
ORDER_READER_ROLES = ("customer_service", "partner_manager", "admin")
REWARD_STATUSES = ("proposed", "listed", "withdrawn")
ORDER_STATUSES = ("placed", "fulfilled", "failed", "cancelled", "expired", "returned")
CODE = WholeValue(r"^[a-z0-9][a-z0-9-]{1,39}$", error="2-40 lower-case letters, digits or hyphens")
REFERENCE = WholeValue(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$",
                       error="1-64 letters, digits or . _ : / -, starting with a letter or digit")
MEMBER_NUMBER = WholeValue(r"^[0-9a-f]{16}$", error="a member number")

rewards_blueprint = Blueprint("back_office_rewards", __name__, url_prefix=PREFIX,
                              description="The rewards catalog (partner managers) and members' reward orders "
                                          "(customer service; fulfilment on a supplier's behalf).")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _whole(minimum: int, maximum: int, **extra: Any) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(minimum, maximum), **extra)


class RewardProposalInput(StrictSchema):
    supplier = fields.String(required=True, validate=validate.Length(1, 40),
                             metadata={"description": "The code of the partner supplying it (the operator partner "
                                                      "for bill credit)."})
    code = fields.String(required=True, validate=CODE)
    kind = fields.String(required=True, validate=validate.OneOf(rewards.KINDS))
    title = fields.String(required=True, validate=validate.Length(1, 120))
    description = fields.String(allow_none=True, validate=validate.Length(max=2000))
    points_price = _whole(1, rewards.MAX_POINTS_PRICE, required=True,
                          metadata={"description": "Points a member pays per item."})
    unit_price_minor = _whole(0, rewards.MAX_UNIT_PRICE_MINOR, required=True,
                              metadata={"description": "What the hub reimburses the supplier per item, in minor "
                                                       "units of the supplier's currency (bill credit: the credit "
                                                       "per item)."})
    min_tier = fields.String(allow_none=True, validate=validate.OneOf(TIER_ORDER))
    per_member_limit = _whole(1, 10_000, allow_none=True,
                              metadata={"description": "Items one member may hold (placed or fulfilled)."})
    stock = _whole(0, 10**9, allow_none=True,
                   metadata={"description": "Goods and experiences only; a voucher's stock is its pool of codes."})
    fulfilment_days = _whole(1, rewards.MAX_FULFILMENT_DAYS,
                             metadata={"description": "Days the supplier has to fulfil an order (default 7)."})
    return_days = _whole(0, 365, metadata={"description": "Days after fulfilment an order may be returned "
                                                          "(default 14; bill credit: 0)."})
    valid_from = UtcDateTime(allow_none=True, metadata={"description": "Default: now."})
    valid_until = UtcDateTime(allow_none=True)


class RewardQuery(StrictSchema):
    status = fields.String(validate=validate.OneOf(REWARD_STATUSES),
                           metadata={"description": "Default: every status."})
    supplier = fields.String(validate=validate.Length(1, 40))


class RewardWithdrawalInput(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(1, 500))


class RewardPriceInput(StrictSchema):
    points_price = _whole(1, rewards.MAX_POINTS_PRICE, required=True)
    unit_price_minor = _whole(0, rewards.MAX_UNIT_PRICE_MINOR, required=True)
    effective_from = UtcDateTime(required=True, metadata={"description": "In the future; orders placed before "
                                                                         "keep their price."})


class RewardStockInput(StrictSchema):
    items = _whole(1, 10**9, required=True)


class RewardVoucherCodesInput(StrictSchema):
    codes = fields.List(fields.String(validate=validate.Length(1, 64)), required=True,
                        validate=validate.Length(1, rewards.MAX_CODES_PER_UPLOAD),
                        metadata={"description": "The supplier's codes, 4-64 letters, digits or hyphens each; "
                                                 "kept encrypted, shown only to the member who orders one."})


class CatalogRewardOutput(Schema):
    code = fields.String()
    supplier = fields.String()
    kind = fields.String()
    title = fields.String()
    description = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "proposed, listed or withdrawn."})
    min_tier = fields.String(allow_none=True)
    per_member_limit = fields.Integer(allow_none=True)
    stock = fields.Integer(allow_none=True, metadata={"description": "Goods and experiences: items left."})
    vouchers_left = fields.Integer(allow_none=True, metadata={"description": "Vouchers: codes left in the pool."})
    fulfilment_days = fields.Integer()
    return_days = fields.Integer()
    valid_from = fields.AwareDateTime()
    valid_until = fields.AwareDateTime(allow_none=True)
    points_price = fields.Integer(allow_none=True, metadata={"description": "The price in force."})
    unit_price_minor = fields.Integer(allow_none=True)
    currency = fields.String()
    proposed_by = fields.String()
    approved_by = fields.String(allow_none=True)
    approved_at = fields.AwareDateTime(allow_none=True)


class CatalogOutput(Schema):
    rewards = fields.List(fields.Nested(CatalogRewardOutput))


class RewardVoucherCodesOutput(Schema):
    reward = fields.String()
    codes_added = fields.Integer()
    vouchers_left = fields.Integer()


class RewardOrderInput(StrictSchema):
    reference = fields.String(required=True, validate=REFERENCE,
                              metadata={"description": "The back office's own reference; the same reference again "
                                                       "finds the order (a retry) instead of placing another."})
    reward = fields.String(required=True, validate=CODE)
    items = _whole(1, rewards.MAX_ITEMS_PER_ORDER, load_default=1)


class RewardOrderOutput(Schema):
    channel = fields.String()
    reference = fields.String()
    member_number = fields.String()
    reward = fields.String()
    reward_kind = fields.String()
    supplier = fields.String()
    items = fields.Integer()
    points = fields.Integer()
    unit_price_minor = fields.Integer()
    amount_minor = fields.Integer(metadata={"description": "items x unit_price_minor: what the supplier is "
                                                           "reimbursed."})
    currency = fields.String()
    status = fields.String(metadata={"description": "placed, fulfilled, failed, cancelled, expired or returned."})
    placed_by = fields.String()
    placed_at = fields.AwareDateTime()
    fulfil_by = fields.AwareDateTime()
    fulfilled_at = fields.AwareDateTime(allow_none=True)
    returnable_until = fields.AwareDateTime(allow_none=True)
    closed_at = fields.AwareDateTime(allow_none=True)
    fulfilment_note = fields.String(allow_none=True)
    end_reason = fields.String(allow_none=True)


class PlacedRewardOrderOutput(Schema):
    order = fields.Nested(RewardOrderOutput)
    voucher_codes = fields.List(fields.String(), allow_none=True,
                                metadata={"description": "A voucher's codes, in this answer only; a retry (200) "
                                                         "answers null."})
    replayed = fields.Boolean()


class RewardOrderQuery(StrictSchema):
    status = fields.String(validate=validate.OneOf(ORDER_STATUSES))
    supplier = fields.String(validate=validate.Length(1, 40))
    member = fields.String(validate=MEMBER_NUMBER)
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))
    offset = fields.Integer(load_default=0, validate=validate.Range(0, 10**9))


class RewardOrderListOutput(Schema):
    orders = fields.List(fields.Nested(RewardOrderOutput))


class RewardFulfilmentInput(StrictSchema):
    note = fields.String(allow_none=True, validate=validate.Length(max=200),
                         metadata={"description": "What the supplier said: a parcel number, which bill."})


class RewardOrderReasonInput(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(1, 500))


@rewards_blueprint.route("/rewards")
class Rewards(MethodView):
    @require_role(*CATALOG_ROLES)
    @rewards_blueprint.arguments(RewardQuery, location="query")
    @rewards_blueprint.response(200, CatalogOutput)
    @documented(rewards_blueprint, 404)
    def get(self, query: dict[str, Any]) -> dict[str, object]:
        """The catalog by code, with each reward's price in force; filtered by status and supplier."""
        with hub_state().read_only_unit_of_work() as uow:
            return {"rewards": rewards.catalog(uow.session, now=_now(), status=query.get("status"),
                                               supplier=query.get("supplier"))}

    @require_role(*CATALOG_ROLES)
    @rewards_blueprint.arguments(RewardProposalInput)
    @rewards_blueprint.response(201, CatalogRewardOutput)
    @documented(rewards_blueprint, 404, 409)
    def post(self, data: dict[str, Any]) -> rewards.RewardView:
        """Propose a reward with its first price; it is listed once another person approves it."""
        return committed_change(rewards.propose_reward, **data)


@rewards_blueprint.route("/rewards/<reward_code>")
class RewardByCode(MethodView):
    @require_role(*CATALOG_ROLES)
    @rewards_blueprint.response(200, CatalogRewardOutput)
    @documented(rewards_blueprint, 404)
    def get(self, reward_code: str) -> rewards.RewardView:
        """One reward with its price in force, its stock or its voucher codes left."""
        with hub_state().read_only_unit_of_work() as uow:
            return rewards.reward_view(uow.session, reward_code, now=_now())


@rewards_blueprint.route("/rewards/<reward_code>/approval")
class RewardApproval(MethodView):
    @require_role(*CATALOG_ROLES)
    @rewards_blueprint.response(200, CatalogRewardOutput)
    @documented(rewards_blueprint, 404, 409)
    def post(self, reward_code: str) -> rewards.RewardView:
        """List a proposed reward; the person who proposed it cannot (409 conflict)."""
        return committed_change(rewards.approve_reward, code=reward_code)


@rewards_blueprint.route("/rewards/<reward_code>/withdrawal")
class RewardWithdrawal(MethodView):
    @require_role(*CATALOG_ROLES)
    @rewards_blueprint.arguments(RewardWithdrawalInput)
    @rewards_blueprint.response(200, CatalogRewardOutput)
    @documented(rewards_blueprint, 404, 409)
    def post(self, data: dict[str, Any], reward_code: str) -> rewards.RewardView:
        """Take a reward off the catalog; orders already placed go on to their end."""
        return committed_change(rewards.withdraw_reward, code=reward_code, reason=data["reason"])


@rewards_blueprint.route("/rewards/<reward_code>/prices")
class RewardPrices(MethodView):
    @require_role(*CATALOG_ROLES)
    @rewards_blueprint.arguments(RewardPriceInput)
    @rewards_blueprint.response(201, CatalogRewardOutput)
    @documented(rewards_blueprint, 404, 409)
    def post(self, data: dict[str, Any], reward_code: str) -> rewards.RewardView:
        """Schedule a new price from a future moment; orders placed before keep theirs."""
        return committed_change(rewards.schedule_price, code=reward_code, **data)


@rewards_blueprint.route("/rewards/<reward_code>/stock")
class RewardStock(MethodView):
    @require_role(*CATALOG_ROLES)
    @rewards_blueprint.arguments(RewardStockInput)
    @rewards_blueprint.response(200, CatalogRewardOutput)
    @documented(rewards_blueprint, 404)
    def post(self, data: dict[str, Any], reward_code: str) -> rewards.RewardView:
        """Add items to a reward whose stock the hub counts (goods, experiences)."""
        return committed_change(rewards.add_stock, code=reward_code, items=data["items"])


@rewards_blueprint.route("/rewards/<reward_code>/voucher-codes")
class RewardVoucherCodes(MethodView):
    @require_role(*CATALOG_ROLES)
    @rewards_blueprint.arguments(RewardVoucherCodesInput)
    @rewards_blueprint.response(201, RewardVoucherCodesOutput)
    @documented(rewards_blueprint, 404, 409)
    def post(self, data: dict[str, Any], reward_code: str) -> dict[str, object]:
        """Add a supplier's voucher codes to the pool, encrypted; answers how many, never the codes. A code already
        in the pool refuses the whole upload (409)."""
        state = hub_state()
        with state.unit_of_work() as uow:
            added = rewards.upload_voucher_codes(uow.session, code=reward_code, codes=data["codes"],
                                                 key_ring=state.key_ring, actor=actor(), now=_now())
            left = rewards.reward_view(uow.session, reward_code, now=_now()).vouchers_left
            uow.commit()
        return {"reward": reward_code, "codes_added": added, "vouchers_left": left}


@rewards_blueprint.route("/members/<member_number>/reward-orders")
class MemberRewardOrders(MethodView):
    @require_role(*ORDER_ROLES)
    @rewards_blueprint.arguments(RewardOrderInput)
    @rewards_blueprint.response(201, PlacedRewardOrderOutput)
    @rewards_blueprint.alt_response(200, schema=PlacedRewardOrderOutput, description="A retry: the order placed before "
                                                                               "under this reference, no codes.")
    @documented(rewards_blueprint, 404, 409)
    def post(self, data: dict[str, Any], member_number: str) -> tuple[rewards.PlacedOrder, int]:
        """Order a reward for a member: their points are held at the supplier until it fulfils the order. A voucher
        is fulfilled at once and its codes are in this answer only. 409 ``out_of_stock``, ``reward_unavailable``,
        ``order_limit_reached``; 422 ``insufficient_points``."""
        state = hub_state()
        with state.unit_of_work() as uow:
            member = member_admin.member_by_number(uow.session, member_number)
            placed = rewards.place_order(uow.session, reward_code=data["reward"], member_id=member.id,
                                         items=data["items"], channel=rewards.BACK_OFFICE_CHANNEL,
                                         reference=data["reference"], actor=actor(), key_ring=state.key_ring,
                                         now=_now())
            uow.commit()
        return placed, 200 if placed.replayed else 201


@rewards_blueprint.route("/reward-orders")
class RewardOrders(MethodView):
    @require_role(*ORDER_READER_ROLES)
    @rewards_blueprint.arguments(RewardOrderQuery, location="query")
    @rewards_blueprint.response(200, RewardOrderListOutput)
    @documented(rewards_blueprint, 404)
    def get(self, query: dict[str, Any]) -> dict[str, object]:
        """Orders newest first, filtered by status, supplier and member."""
        with hub_state().read_only_unit_of_work() as uow:
            session = uow.session
            supplier_id = partners.partner_id_by_code(session, query["supplier"]) if "supplier" in query else None
            member_id = member_admin.member_by_number(session, query["member"]).id if "member" in query else None
            return {"orders": rewards.orders(session, now=_now(), supplier_id=supplier_id, member_id=member_id,
                                             status=query.get("status"), limit=query["limit"],
                                             offset=query["offset"])}


@rewards_blueprint.route("/reward-orders/<channel>/<path:reference>")
class RewardOrderByReference(MethodView):
    @require_role(*ORDER_READER_ROLES)
    @rewards_blueprint.response(200, RewardOrderOutput)
    @documented(rewards_blueprint, 404)
    def get(self, channel: str, reference: str) -> rewards.OrderView:
        """One order (a placed order past its time reads as expired)."""
        with hub_state().read_only_unit_of_work() as uow:
            return rewards.order_view(uow.session, channel=channel, reference=reference, now=_now())


@rewards_blueprint.route("/reward-orders/<channel>/<path:reference>/fulfilment")
class RewardOrderFulfilment(MethodView):
    @require_role(*SUPPLIER_ROLES)
    @rewards_blueprint.arguments(RewardFulfilmentInput)
    @rewards_blueprint.response(200, RewardOrderOutput)
    @documented(rewards_blueprint, 404, 409)
    def post(self, data: dict[str, Any], channel: str, reference: str) -> rewards.OrderView:
        """Record that the supplier fulfilled the order: its points are spent. Again: nothing changes."""
        return committed_change(rewards.fulfil_order, channel=channel, reference=reference, supplier_id=None,
                                note=data.get("note"))


@rewards_blueprint.route("/reward-orders/<channel>/<path:reference>/failure")
class RewardOrderFailure(MethodView):
    @require_role(*SUPPLIER_ROLES)
    @rewards_blueprint.arguments(RewardOrderReasonInput)
    @rewards_blueprint.response(200, RewardOrderOutput)
    @documented(rewards_blueprint, 404, 409)
    def post(self, data: dict[str, Any], channel: str, reference: str) -> rewards.OrderView:
        """Record that the supplier cannot fulfil the order: the points come back, the stock is freed."""
        return committed_change(rewards.fail_order, channel=channel, reference=reference, supplier_id=None,
                                reason=data["reason"])


@rewards_blueprint.route("/reward-orders/<channel>/<path:reference>/cancellation")
class RewardOrderCancellation(MethodView):
    @require_role(*ORDER_ROLES)
    @rewards_blueprint.arguments(RewardOrderReasonInput)
    @rewards_blueprint.response(200, RewardOrderOutput)
    @documented(rewards_blueprint, 404, 409)
    def post(self, data: dict[str, Any], channel: str, reference: str) -> rewards.OrderView:
        """The member cancels: before fulfilment the hold is released; after it, the order is returned (within the
        reward's return days, else 409 ``return_window_closed``)."""
        return committed_change(rewards.cancel_order, channel=channel, reference=reference, reason=data["reason"])


@rewards_blueprint.route("/reward-orders/<channel>/<path:reference>/return")
class RewardOrderReturn(MethodView):
    @require_role(*ORDER_ROLES)
    @rewards_blueprint.arguments(RewardOrderReasonInput)
    @rewards_blueprint.response(200, RewardOrderOutput)
    @documented(rewards_blueprint, 404, 409)
    def post(self, data: dict[str, Any], channel: str, reference: str) -> rewards.OrderView:
        """A fulfilled order comes back within its reward's return days: every point goes back to the member
        (409 ``return_window_closed`` after)."""
        return committed_change(rewards.return_order, channel=channel, reference=reference, supplier_id=None,
                                reason=data["reason"])


def init_app(app: Flask, api: Api) -> None:
    """Register the rewards routes."""
    api.register_blueprint(rewards_blueprint)
