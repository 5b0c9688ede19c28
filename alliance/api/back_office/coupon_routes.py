"""Partner coupons for partner managers and admins: series, issuing coupons to a target, their codes, stopping.

POST a series (a bonus, a multiplier or an amount off, funded by a partner or the hub);
GET the series (newest first) or one with its uses and points so far; POST an issue to a
target (tiers, a tenure in months, member numbers: one coupon per member, added only to
members holding none); GET the codes, paged, as JSON or CSV (``format=csv``) for the
operator's messaging; POST a stop with a reason. Every change is audited. docs/coupons.md.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from alliance.api.back_office.auth import require_role
from alliance.api.back_office.routes import PREFIX, committed_change, documented
from alliance.api.back_office.schemas import DecimalString
from alliance.api.partner.schemas import CURRENCY, StrictSchema
from alliance.api.patterns import UtcDateTime, WholeValue
from alliance.domain.coupons import SERIES_CODE, CouponKind
from alliance.domain.earning import Tier
from alliance.domain.money import MULTIPLIER_PRECISION, MULTIPLIER_SCALE
from alliance.extensions import hub_state
from alliance.services import coupons

coupon_blueprint = Blueprint("back_office_coupons", __name__, url_prefix=PREFIX,
                             description="Partner managers: coupon series, issuing coupons to members, their codes.")
ROLES = ("partner_manager", "admin")
PARTNER = WholeValue(r"^[a-z0-9][a-z0-9-]{1,39}$", error="a partner code")
MAX_POINTS = 10**9
MAX_MINOR = 10**12


class CouponSeriesInput(StrictSchema):
    code = fields.String(required=True, validate=validate.Regexp(SERIES_CODE, error="a lower-case slug"))
    title = fields.String(required=True, validate=validate.Length(1, 200))
    funder = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9][a-z0-9-]{1,39}\Z"),
                           metadata={"description": "A partner code, or hub (the hub's marketing budget)."})
    kind = fields.String(required=True, validate=validate.OneOf(tuple(CouponKind)))
    bonus_points = fields.Integer(strict=True, validate=validate.Range(1, MAX_POINTS),
                                  metadata={"description": "bonus: the points added to the purchase."})
    multiplier = DecimalString(scale=MULTIPLIER_SCALE, precision=MULTIPLIER_PRECISION, metadata={
        "description": "multiplier: an exact decimal above 1 (at most 4 places); the extra is "
                       "floor(base points x (multiplier - 1))."})
    amount_off_minor = fields.Integer(strict=True, validate=validate.Range(1, MAX_MINOR),
                                      metadata={"description": "amount_off: the money off, in minor units."})
    currency = fields.String(validate=CURRENCY, metadata={"description": "amount_off: its currency."})
    points_cost = fields.Integer(strict=True, validate=validate.Range(1, MAX_POINTS),
                                 metadata={"description": "amount_off: the points the redemption must hold."})
    valid_from = UtcDateTime(required=True)
    valid_until = UtcDateTime(required=True)
    uses_per_coupon = fields.Integer(strict=True, load_default=1, validate=validate.Range(1, 1000))
    valid_at = fields.List(fields.String(validate=PARTNER), validate=validate.Length(1, 500), metadata={
        "description": "Partners where it may be used; default the funder's own tills, or every partner for hub."})


class CouponSeriesListQuery(StrictSchema):
    status = fields.String(validate=validate.OneOf(("active", "stopped")))
    funder = fields.String(validate=validate.Regexp(r"^[a-z0-9][a-z0-9-]{1,39}\Z"))


class CouponChargedOutput(Schema):
    currency = fields.String()
    price_per_point = DecimalString()
    points = fields.Integer()


class CouponSeriesOutput(Schema):
    code = fields.String()
    title = fields.String()
    funder = fields.String()
    kind = fields.String()
    bonus_points = fields.Integer(allow_none=True)
    multiplier = DecimalString(scale=MULTIPLIER_SCALE, precision=MULTIPLIER_PRECISION, allow_none=True)
    amount_off_minor = fields.Integer(allow_none=True)
    currency = fields.String(allow_none=True)
    points_cost = fields.Integer(allow_none=True)
    valid_from = fields.AwareDateTime()
    valid_until = fields.AwareDateTime()
    uses_per_coupon = fields.Integer()
    valid_at = fields.List(fields.String(), metadata={"description": "Partner codes; [\"*\"]: every partner."})
    status = fields.String(metadata={"description": "active or stopped."})
    stopped_reason = fields.String(allow_none=True)
    stopped_by = fields.String(allow_none=True)
    stopped_at = fields.AwareDateTime(allow_none=True)
    created_by = fields.String()
    created_at = fields.AwareDateTime()
    coupons_issued = fields.Integer()
    uses = fields.Integer(metadata={"description": "Uses counted (not given back)."})
    uses_given_back = fields.Integer(metadata={"description": "amount_off uses whose redemption was voided or "
                                                              "expired."})
    points = fields.Integer(metadata={"description": "Points posted (bonus, multiplier) or paid (amount_off)."})
    charged = fields.List(fields.Nested(CouponChargedOutput),
                          metadata={"description": "A partner funder's points by issue price charged."})


class CouponSeriesListOutput(Schema):
    series = fields.List(fields.Nested(CouponSeriesOutput))


class CouponIssueInput(StrictSchema):
    tiers = fields.List(fields.String(validate=validate.OneOf(tuple(Tier))), validate=validate.Length(1, 10))
    min_tenure_months = fields.Integer(strict=True, validate=validate.Range(0, 1200))
    member_numbers = fields.List(fields.String(validate=validate.Length(1, 20)),
                                 validate=validate.Length(1, coupons.MAX_ISSUE),
                                 metadata={"description": "A segment or an explicit list of members."})

    @validates_schema
    def _a_target(self, data: dict[str, Any], **_: object) -> None:
        if not data:
            raise ValidationError("name a target: tiers, min_tenure_months or member_numbers", field_name="tiers")


class CouponIssueOutput(Schema):
    issued = fields.Integer(metadata={"description": "Coupons given now."})
    already_held = fields.Integer(metadata={"description": "Members of the target holding one already."})
    series = fields.Nested(CouponSeriesOutput)


class CouponCodesQuery(StrictSchema):
    page = fields.Integer(load_default=1, validate=validate.Range(1, 10**6))
    per_page = fields.Integer(load_default=100, validate=validate.Range(1, coupons.MAX_PAGE))
    format = fields.String(load_default="json", validate=validate.OneOf(("json", "csv")))


class CouponCodeOutput(Schema):
    member_number = fields.String()
    code = fields.String()
    uses = fields.Integer()
    uses_allowed = fields.Integer()
    issued_at = fields.AwareDateTime()


class CouponCodesOutput(Schema):
    series = fields.String()
    page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer()
    coupons = fields.List(fields.Nested(CouponCodeOutput))


class CouponStopInput(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(1, 500))


def _view(code: str) -> dict[str, Any]:
    with hub_state().unit_of_work() as uow:
        return coupons.series_view(uow.session, code=code)


@coupon_blueprint.route("/coupon-series")
class CouponSeriesCollection(MethodView):
    @require_role(*ROLES)
    @coupon_blueprint.arguments(CouponSeriesInput)
    @coupon_blueprint.response(201, CouponSeriesOutput)
    @documented(coupon_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Create a coupon series: its kind and terms, funder, validity, uses per coupon and where it is valid."""
        committed_change(coupons.create_series, **data)
        return _view(data["code"])

    @require_role(*ROLES)
    @coupon_blueprint.arguments(CouponSeriesListQuery, location="query")
    @coupon_blueprint.response(200, CouponSeriesListOutput)
    @documented(coupon_blueprint, 404)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Coupon series newest first, with their uses; filter by status and funder."""
        with hub_state().unit_of_work() as uow:
            return {"series": coupons.list_series(uow.session, status=query.get("status"),
                                                  funder=query.get("funder"))}


@coupon_blueprint.route("/coupon-series/<series_code>")
class CouponSeriesByCode(MethodView):
    @require_role(*ROLES)
    @coupon_blueprint.response(200, CouponSeriesOutput)
    @documented(coupon_blueprint, 404)
    def get(self, series_code: str) -> dict[str, Any]:
        """One series: its terms, coupons issued, uses and the points so far, and what its funder was charged."""
        return _view(series_code)


@coupon_blueprint.route("/coupon-series/<series_code>/issues")
class CouponSeriesIssues(MethodView):
    @require_role(*ROLES)
    @coupon_blueprint.arguments(CouponIssueInput)
    @coupon_blueprint.response(201, CouponIssueOutput)
    @documented(coupon_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any], series_code: str) -> dict[str, Any]:
        """Give a coupon to every active member of the target who has none of the series yet."""
        issued = committed_change(coupons.issue, code=series_code, **data)
        return {"issued": issued.issued, "already_held": issued.already_held, "series": _view(series_code)}


@coupon_blueprint.route("/coupon-series/<series_code>/codes")
class CouponSeriesCodes(MethodView):
    @require_role(*ROLES)
    @coupon_blueprint.arguments(CouponCodesQuery, location="query")
    # Documented by hand: one 200 in two content types, JSON (the default) or CSV (``format=csv``).
    @coupon_blueprint.doc(responses={"200": {"description": "A page of the series' coupons.", "content": {
        "application/json": {"schema": CouponCodesOutput},
        "text/csv": {"schema": {"type": "string", "description": "The page as CSV (``format=csv``)."}}}}})
    @documented(coupon_blueprint, 404)
    def get(self, query: dict[str, Any], series_code: str) -> Response:
        """A page of the series' coupons in issue order: member number, code and uses, for messaging."""
        with hub_state().unit_of_work() as uow:
            listed = coupons.coupon_codes(uow.session, code=series_code, page=query["page"],
                                          per_page=query["per_page"])
        if query["format"] == "csv":
            filename = f"coupons-{series_code}-page-{query['page']}.csv"
            return Response(coupons.codes_csv(listed["coupons"]), status=200, content_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{filename}"'})
        return jsonify(CouponCodesOutput().dump(listed))


@coupon_blueprint.route("/coupon-series/<series_code>/stop")
class CouponSeriesStop(MethodView):
    @require_role(*ROLES)
    @coupon_blueprint.arguments(CouponStopInput)
    @coupon_blueprint.response(200, CouponSeriesOutput)
    @documented(coupon_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any], series_code: str) -> dict[str, Any]:
        """Stop a series with a reason: from now on none of its coupons is accepted at a till."""
        committed_change(coupons.stop_series, code=series_code, reason=data["reason"])
        return _view(series_code)


def init_app(app: Flask, api: Api) -> None:
    """Register the coupon routes."""
    api.register_blueprint(coupon_blueprint)
