"""Back-office routes, each behind an OAuth 2 bearer token with the right role.

customer_service: members, cards, PINs, codes, history, transfers, export, erasure,
complaints. partner_manager: partners, prices, earn rules, campaigns, terminals, keys,
complaints. admin: back-office clients and the audit log. finance: settlement (later).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, NoReturn, Protocol, TypeVar

from flask import Flask
from flask.views import MethodView
from flask_smorest import Api, Blueprint

from alliance.api.back_office import schemas as s
from alliance.api.back_office.auth import actor, require_role
from alliance.api.partner.schemas import ProblemOutput
from alliance.domain.errors import AllianceError, ValidationFailed
from alliance.extensions import HubState, hub_state
from alliance.services import (
    audit_log,
    campaigns,
    complaints,
    goodwill,
    member_admin,
    oauth,
    partner_admin,
    partners,
    staff_people,
    tier_policy,
)
from alliance.services.accounts import member_balances
from alliance.services.partners import PartnerTerms
from alliance.storage.unit_of_work import Session

PREFIX = "/back-office/v1"
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
ERRORS = {400: "search_by_post: member search takes a POST with a JSON body.",
          401: "not_authenticated: no valid bearer token.", 403: "role_refused: the token lacks the role.",
          404: "not_found", 409: "conflict, invalid_state", 422: "validation_failed (per-field errors)"}

members_blueprint = Blueprint("back_office_members", __name__, url_prefix=PREFIX,
                              description="Customer service: members, cards, PINs, transfers, privacy.")
partners_blueprint = Blueprint("back_office_partners", __name__, url_prefix=PREFIX,
                               description="Partner managers: onboarding, status, prices, rules, campaigns, keys.")
complaints_blueprint = Blueprint("back_office_complaints", __name__, url_prefix=PREFIX,
                                 description="Complaints against partners and their lifecycle.")
admin_blueprint = Blueprint("back_office_admin", __name__, url_prefix=PREFIX,
                            description="Administrators: back-office clients and the audit log.")
BLUEPRINTS = (members_blueprint, partners_blueprint, complaints_blueprint, admin_blueprint)


class SearchByPost(AllianceError):
    """The old member search with phone or e-mail in the query string."""

    code = "search_by_post"
    http_status = 400
    title = "Search with POST"


# In every view, require_role is the outermost decorator: the token is checked before the
# body is parsed, so an unauthenticated caller learns nothing about valid input.


View = TypeVar("View", bound=Callable[..., Any])
Result = TypeVar("Result")


def documented(blueprint: Blueprint, *statuses: int) -> Callable[[View], View]:
    """Document bearer security and the problem+json error responses of a view."""
    def decorate(function: View) -> View:
        for status in sorted({401, 403, 422, *statuses}):
            function = blueprint.alt_response(status, schema=ProblemOutput, description=ERRORS[status],
                                              content_type="application/problem+json")(function)
        return blueprint.doc(security=BEARER)(function)
    return decorate


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _state() -> HubState:
    return hub_state()


class _StoredMember(Protocol):
    """What a member's view reads of the stored member."""

    @property
    def id(self) -> int: ...
    @property
    def member_number(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def tier(self) -> str: ...
    @property
    def enrolled_at(self) -> datetime: ...


def _member_view(session: Session, member: _StoredMember) -> dict[str, object]:
    cards = member_admin.cards_of(session, member.id)
    return {
        "member_number": member.member_number, "status": member.status, "tier": member.tier,
        "enrolled_at": member.enrolled_at,
        "profile": member_admin.read_profile(session, key_ring=_state().key_ring, member_id=member.id),
        "balances": member_balances(session, member.id),
        "cards": [{"card_number": number, "status": status} for number, status in cards],
    }


@members_blueprint.route("/members")
class Members(MethodView):
    @require_role("customer_service")
    @members_blueprint.arguments(s.ProfileInput)
    @members_blueprint.response(201, s.EnrolmentOutput)
    @documented(members_blueprint, 422)
    def post(self, data: dict[str, Any]) -> dict[str, object]:
        """Enrol a member with a first card; personal data is encrypted at rest."""
        with _state().unit_of_work() as uow:
            enrolment = member_admin.enrol_with_profile(uow.session, key_ring=_state().key_ring,
                                                        profile={k: v for k, v in data.items() if v}, now=_now(),
                                                        actor=actor())
            uow.commit()
        return {"member_number": enrolment.member_number, "card_number": enrolment.card_number}

    @require_role("customer_service")
    @documented(members_blueprint, 400)
    @members_blueprint.doc(deprecated=True)
    def get(self) -> NoReturn:
        """Refused: search with ``POST /members/search`` and a JSON body.

        A phone number or e-mail address in the query string is written to every access
        log and proxy on the way; this form is answered with 400 ``search_by_post``
        whatever it carries, so callers move to the POST instead of silently working.
        """
        raise SearchByPost("search for members with POST /back-office/v1/members/search and a JSON body "
                           '{"phone": ..., "email": ...}: personal data does not belong in a URL')


@members_blueprint.route("/members/search")
class MemberSearch(MethodView):
    @require_role("customer_service")
    @members_blueprint.arguments(s.MemberSearchInput)
    @members_blueprint.response(200, s.MemberListOutput)
    @documented(members_blueprint, 422)
    def post(self, data: dict[str, Any]) -> dict[str, object]:
        """Find members by phone or e-mail, given in the body (matched through a keyed hash, not by decrypting)."""
        with _state().unit_of_work() as uow:
            found = member_admin.find_by_contact(uow.session, key_ring=_state().key_ring, phone=data.get("phone"),
                                                 email=data.get("email"))
            return {"members": [_member_view(uow.session, member) for member in found]}


@members_blueprint.route("/members/<member_number>")
class MemberByNumber(MethodView):
    @require_role("customer_service")
    @members_blueprint.response(200, s.MemberOutput)
    @documented(members_blueprint, 404)
    def get(self, member_number: str) -> dict[str, object]:
        """A member with profile, balances and cards."""
        with _state().unit_of_work() as uow:
            return _member_view(uow.session, member_admin.member_by_number(uow.session, member_number))


@members_blueprint.route("/members/<member_number>/profile")
class MemberProfileRoute(MethodView):
    @require_role("customer_service")
    @members_blueprint.arguments(s.ProfileInput)
    @members_blueprint.response(200, s.MemberOutput)
    @documented(members_blueprint, 404, 409, 422)
    def patch(self, data: dict[str, Any], member_number: str) -> dict[str, object]:
        """Change name, phone, e-mail or birth date (YYYY-MM-DD, from 1900, not in the future); null clears a field."""
        with _state().unit_of_work() as uow:
            member_admin.update_profile(uow.session, key_ring=_state().key_ring, member_number=member_number,
                                        changes=data, now=_now(), actor=actor())
            uow.commit()
            return _member_view(uow.session, member_admin.member_by_number(uow.session, member_number))


@members_blueprint.route("/members/<member_number>/history")
class MemberHistory(MethodView):
    @require_role("customer_service")
    @members_blueprint.arguments(s.HistoryQuery, location="query")
    @members_blueprint.response(200, s.HistoryOutput)
    @documented(members_blueprint, 404, 422)
    def get(self, query: dict[str, Any], member_number: str) -> dict[str, object]:
        """The member's journal transactions, newest first; page with ``before``."""
        with _state().unit_of_work() as uow:
            items = member_admin.history(uow.session, member_number=member_number, limit=query["limit"],
                                         before_transaction_id=query.get("before"))
        for item in items:
            item["posted_at"] = item["posted_at"].isoformat()
        next_before = items[-1]["transaction_id"] if len(items) == query["limit"] else None
        return {"transactions": items, "next_before": next_before}


@members_blueprint.route("/members/<member_number>/export")
class MemberExport(MethodView):
    @require_role("customer_service")
    @members_blueprint.response(200)
    @documented(members_blueprint, 404)
    def get(self, member_number: str) -> dict[str, object]:
        """Everything held on the member, as JSON (a data subject access request)."""
        with _state().unit_of_work() as uow:
            exported = member_admin.export(uow.session, key_ring=_state().key_ring, member_number=member_number,
                                           actor=actor(), now=_now())
            uow.commit()
        return exported


@members_blueprint.route("/members/<member_number>/erasure")
class MemberErasure(MethodView):
    @require_role("customer_service")
    @members_blueprint.arguments(s.EmptyInput)
    @members_blueprint.response(204)
    @documented(members_blueprint, 404, 409)
    def post(self, _: dict[str, Any], member_number: str) -> None:
        """Erase the member's personal data; the ledger and settlements stay intact."""
        with _state().unit_of_work() as uow:
            member_admin.erase(uow.session, member_number=member_number, now=_now(), actor=actor())
            uow.commit()


@members_blueprint.route("/members/<member_number>/redemption-codes")
class MemberCodes(MethodView):
    @require_role("customer_service")
    @members_blueprint.arguments(s.EmptyInput)
    @members_blueprint.response(201, s.CodeOutput)
    @documented(members_blueprint, 404)
    def post(self, _: dict[str, Any], member_number: str) -> dict[str, object]:
        """Issue a one-time redemption code (15 minutes)."""
        with _state().unit_of_work() as uow:
            code, expires_at = member_admin.new_redemption_code(uow.session, member_number=member_number, now=_now(),
                                                               actor=actor())
            uow.commit()
        return {"redemption_code": code, "expires_at": expires_at}


# Card numbers travel in request bodies, never in paths: a path is written to access logs.


@members_blueprint.route("/cards/replacement")
class CardReplacement(MethodView):
    @require_role("customer_service")
    @members_blueprint.arguments(s.CardInput)
    @members_blueprint.response(201, s.CardOutput)
    @documented(members_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any]) -> dict[str, object]:
        """Block a lost card (named in the body) and issue a new one; balance, lots and holds carry over."""
        with _state().unit_of_work() as uow:
            _, new_number = member_admin.replace_card(uow.session, card_number=data["card_number"], now=_now(),
                                                      actor=actor())
            uow.commit()
        return {"card_number": new_number}


@members_blueprint.route("/cards/pin")
class CardPin(MethodView):
    @require_role("customer_service")
    @members_blueprint.arguments(s.CardPinInput)
    @members_blueprint.response(204)
    @documented(members_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any]) -> None:
        """Set or reset the PIN of the card named in the body; this also unlocks a card locked by wrong PINs."""
        with _state().unit_of_work() as uow:
            member_admin.reset_pin(uow.session, card_number=data["card_number"], pin=data["pin"], now=_now(),
                                   actor=actor())
            uow.commit()


@members_blueprint.route("/transfers")
class Transfers(MethodView):
    @require_role("customer_service")
    @members_blueprint.arguments(s.TransferInput)
    @members_blueprint.response(201, s.TransferOutput)
    @documented(members_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any]) -> dict[str, object]:
        """Move points between members, within per-transfer, daily and membership-age limits."""
        settings = _state().settings
        limits = member_admin.TransferLimits(settings.transfer_max_points, settings.transfer_daily_max_points,
                                             settings.transfer_min_membership_days)
        with _state().unit_of_work() as uow:
            moved = member_admin.transfer_points(uow.session, from_member_number=data["from_member"],
                                                 to_member_number=data["to_member"], points=data["points"],
                                                 limits=limits, now=_now(), actor=actor())
            uow.commit()
            return {"transfer_id": moved.id, "from_member": data["from_member"], "to_member": data["to_member"],
                    "points": moved.points, "created_at": moved.created_at}


def goodwill_policy() -> goodwill.GoodwillPolicy:
    """Goodwill's settings: the approval threshold and how long credited points live."""
    settings = _state().settings
    return goodwill.GoodwillPolicy(approval_threshold_points=settings.goodwill_approval_threshold_points,
                                   expiry_months=settings.points_expiry_months)


def _goodwill_view(view: goodwill.GoodwillView) -> dict[str, object]:
    return {"id": view.request_id, "member": view.member_number, "direction": view.direction, "points": view.points,
            "reason": view.reason, "complaint_id": view.complaint_id, "reference": view.reference,
            "funded_by": view.funded_by, "status": view.status, "requested_by": view.requested_by,
            "requested_at": view.requested_at, "decided_by": view.decided_by, "decided_at": view.decided_at,
            "posted_at": view.posted_at, "transaction_ids": list(view.transaction_ids)}


@members_blueprint.route("/members/<member_number>/goodwill")
class MemberGoodwill(MethodView):
    @require_role("customer_service")
    @members_blueprint.arguments(s.GoodwillInput)
    @members_blueprint.response(201, s.GoodwillOutput)
    @documented(members_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any], member_number: str) -> dict[str, object]:
        """Credit (goodwill, tied to the member's complaint) or debit (a correction) the member's points.

        Up to the approval threshold it is posted at once (``status`` posted); above it, it
        is requested (``status`` pending) and posted only when another person approves it.
        """
        with _state().unit_of_work() as uow:
            made = goodwill.request_goodwill(
                uow.session, member_number=member_number, direction=data["direction"], points=data["points"],
                reason=data["reason"], complaint_id=data.get("complaint_id"), reference=data.get("reference"),
                funded_by=data.get("funded_by"), policy=goodwill_policy(), now=_now(), actor=actor())
            uow.commit()
        return _goodwill_view(made)


@members_blueprint.route("/goodwill")
class GoodwillRequests(MethodView):
    @require_role("customer_service", "admin")
    @members_blueprint.arguments(s.GoodwillQuery, location="query")
    @members_blueprint.response(200, s.GoodwillListOutput)
    @documented(members_blueprint, 422)
    def get(self, query: dict[str, Any]) -> dict[str, object]:
        """Goodwill credits and corrections, newest first; ``status=pending`` lists those awaiting approval."""
        with _state().unit_of_work() as uow:
            found = goodwill.goodwill_requests(uow.session, status=query.get("status"),
                                               member_number=query.get("member"), limit=query["limit"])
        return {"requests": [_goodwill_view(view) for view in found]}


@members_blueprint.route("/goodwill/<int:request_id>/decision")
class GoodwillDecision(MethodView):
    @require_role("customer_service", "admin")
    @members_blueprint.arguments(s.GoodwillDecisionInput)
    @members_blueprint.response(200, s.GoodwillOutput)
    @documented(members_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any], request_id: int) -> dict[str, object]:
        """Approve (and so post) or reject a pending request; its requester (the same person) gets 409."""
        with _state().unit_of_work() as uow:
            decided = goodwill.decide_goodwill(uow.session, request_id=request_id, decision=data["decision"],
                                               policy=goodwill_policy(), now=_now(), actor=actor())
            uow.commit()
        return _goodwill_view(decided)


def _partner_view(partner: object) -> dict[str, object]:
    return {name: getattr(partner, name) for name in ("code", "name", "status", "currency", "time_zone",
                                                      "settlement_cycle", "return_window_days", "cycle_fee_minor",
                                                      "created_at")}


@partners_blueprint.route("/partners")
class Partners(MethodView):
    @require_role("partner_manager")
    @partners_blueprint.arguments(s.PartnerInput)
    @partners_blueprint.response(201, s.PartnerOutput)
    @documented(partners_blueprint, 409, 422)
    def post(self, data: dict[str, Any]) -> dict[str, object]:
        """Onboard a partner (status pending until activated)."""
        terms = PartnerTerms(
            currency=data["currency"], time_zone=data["time_zone"], settlement_cycle=data["settlement_cycle"],
            issue_price_per_point=data["issue_price_per_point"],
            redemption_price_per_point=data["redemption_price_per_point"],
            base_points_per_unit=data["base_points_per_unit"], amount_ladder=data["amount_ladder"],
            per_purchase_cap_points=data.get("per_purchase_cap_points"),
            per_member_day_cap_points=data.get("per_member_day_cap_points"),
            return_window_days=data["return_window_days"], cycle_fee_minor=data["cycle_fee_minor"],
        )
        with _state().unit_of_work() as uow:
            partner = partner_admin.onboard(uow.session, code=data["code"], name=data["name"], terms=terms,
                                            now=_now(), actor=actor())
            uow.commit()
            return _partner_view(partner)

    @require_role("partner_manager")
    @partners_blueprint.arguments(s.PartnerListQuery, location="query")
    @partners_blueprint.response(200, s.PartnerListOutput)
    @documented(partners_blueprint)
    def get(self, query: dict[str, Any]) -> dict[str, object]:
        """Partners by code with their status, a page at a time."""
        page, page_size = query["page"], query["page_size"]
        with _state().unit_of_work() as uow:
            rows, total = partner_admin.partners_page(uow.session, page=page, page_size=page_size)
            return {"partners": [_partner_view(partner) for partner in rows], "total": total, "page": page,
                    "page_size": page_size}


@partners_blueprint.route("/partners/<code>")
class PartnerByCode(MethodView):
    @require_role("partner_manager")
    @partners_blueprint.response(200, s.PartnerOutput)
    @documented(partners_blueprint, 404)
    def get(self, code: str) -> dict[str, object]:
        """One partner."""
        with _state().unit_of_work() as uow:
            return _partner_view(partner_admin.partner_by_code(uow.session, code))


@partners_blueprint.route("/partners/<code>/status")
class PartnerStatus(MethodView):
    @require_role("partner_manager")
    @partners_blueprint.arguments(s.StatusInput)
    @partners_blueprint.response(200, s.PartnerOutput)
    @documented(partners_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any], code: str) -> dict[str, object]:
        """Activate, suspend or terminate a partner."""
        with _state().unit_of_work() as uow:
            partner = partner_admin.change_status(uow.session, code=code, status=data["status"], now=_now(),
                                                  actor=actor())
            uow.commit()
            return _partner_view(partner)


def committed_change(action: Callable[..., Result], **arguments: object) -> Result:
    """Run a back-office change (a service taking now and actor) in one committed unit of work."""
    with _state().unit_of_work() as uow:
        result = action(uow.session, now=_now(), actor=actor(), **arguments)
        uow.commit()
    return result


def _partner_write(action: Callable[..., int], **fixed: object) -> dict[str, int]:
    """Run a partner-management service that creates a row and returns its id, then answer 201 with that id."""
    return {"id": committed_change(action, **fixed)}


@partners_blueprint.route("/partners/<code>/prices")
class PartnerPrices(MethodView):
    @require_role("partner_manager")
    @partners_blueprint.arguments(s.PriceInput)
    @partners_blueprint.response(201, s.PriceOutput)
    @documented(partners_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any], code: str) -> partner_admin.PriceView:
        """Schedule new issue and redemption prices from a moment on; answers the scheduled prices."""
        return committed_change(partner_admin.add_price, code=code, **data)


@partners_blueprint.route("/partners/<code>/earn-rules")
class PartnerEarnRules(MethodView):
    @require_role("partner_manager")
    @partners_blueprint.arguments(s.EarnRuleInput)
    @partners_blueprint.response(201, s.EarnRuleOutput)
    @documented(partners_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any], code: str) -> partner_admin.EarnRuleView:
        """Schedule a new earn rule from a moment on; answers the scheduled rule."""
        return committed_change(partner_admin.add_earn_rule, code=code, effective_from=data["effective_from"],
                                base_points_per_unit=data["base_points_per_unit"],
                                amount_ladder=data["amount_ladder"],
                                per_purchase_cap_points=data.get("per_purchase_cap_points"),
                                per_member_day_cap_points=data.get("per_member_day_cap_points"))


@partners_blueprint.route("/partners/<code>/terminals")
class PartnerTerminals(MethodView):
    @require_role("partner_manager")
    @partners_blueprint.arguments(s.TerminalInput)
    @partners_blueprint.response(201, s.CreatedOutput)
    @documented(partners_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any], code: str) -> dict[str, int]:
        """Register a terminal."""
        return _partner_write(partner_admin.new_terminal, code=code, terminal_code=data["code"])


@partners_blueprint.route("/partners/<code>/terminals/<terminal_code>/retirement")
class PartnerTerminalRetirement(MethodView):
    @require_role("partner_manager")
    @partners_blueprint.arguments(s.ReasonInput)
    @partners_blueprint.response(201, s.RetiredTerminalOutput)
    @documented(partners_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any], code: str, terminal_code: str) -> dict[str, list[str]]:
        """Retire a terminal for good: requests naming it are refused and the keys bound to it revoked."""
        return {"keys_revoked": committed_change(partner_admin.retire_terminal, code=code,
                                                 terminal_code=terminal_code, reason=data["reason"])}


@partners_blueprint.route("/partners/<code>/keys")
class PartnerKeys(MethodView):
    @require_role("partner_manager")
    @partners_blueprint.arguments(s.KeyInput)
    @partners_blueprint.response(201, s.KeyOutput)
    @documented(partners_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any], code: str) -> partner_admin.KeyView:
        """Register an Ed25519 public key (rotation: several may be active); answers the key as registered."""
        try:
            public_key = base64.b64decode(data["public_key"], validate=True)
        except (binascii.Error, ValueError):
            raise ValidationFailed("public_key must be base64", fields={"public_key": ["not base64"]}) from None
        return committed_change(partner_admin.new_key, code=code, key_id=data["key_id"], public_key=public_key,
                                terminal_code=data.get("terminal"), expires_at=data.get("expires_at"))


@partners_blueprint.route("/partners/<code>/keys/<key_id>/revocation")
class PartnerKeyRevocation(MethodView):
    @require_role("partner_manager")
    @partners_blueprint.arguments(s.EmptyInput)
    @partners_blueprint.response(201, s.KeyOutput)
    @documented(partners_blueprint, 404, 409)
    def post(self, _: dict[str, Any], code: str, key_id: str) -> partner_admin.KeyView:
        """Revoke a key at once; answers the key, now revoked."""
        return committed_change(partner_admin.revoke, code=code, key_id=key_id)


def _campaign_extras(data: dict[str, Any]) -> dict[str, Any]:
    """A campaign's joint funders, budget, targeting and segment as the service takes them (only those given)."""
    extras: dict[str, Any] = {}
    if data.get("funders") is not None:
        extras["funders"] = [(funder["partner"], funder["share_bp"]) for funder in data["funders"]]
    if "segment" in data:
        segment = data["segment"]
        extras["segment_name"] = segment["name"] if segment else None
        extras["segment_members"] = segment["members"] if segment else []
    return extras


@partners_blueprint.route("/campaigns")
class Campaigns(MethodView):
    @require_role("partner_manager")
    @partners_blueprint.arguments(s.CampaignInput)
    @partners_blueprint.response(201, s.CreatedOutput)
    @documented(partners_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any]) -> dict[str, int]:
        """Create a campaign, funded by its partner, by the hub, or jointly by named partners in stated shares."""
        return _partner_write(campaigns.add_campaign, code=data.get("partner"), name=data["name"],
                              funded_by=data["funded_by"], multiplier=data["multiplier"],
                              bonus_points=data["bonus_points"], min_amount_minor=data["min_amount_minor"],
                              starts_at=data["starts_at"], ends_at=data["ends_at"],
                              budget_points=data.get("budget_points"), target_tiers=data.get("target_tiers"),
                              min_tenure_months=data.get("min_tenure_months"), budget_minor=data.get("budget_minor"),
                              budget_currency=data.get("budget_currency"), **_campaign_extras(data))

    @require_role("partner_manager")
    @partners_blueprint.arguments(s.CampaignListQuery, location="query")
    @partners_blueprint.response(200, s.CampaignListOutput)
    @documented(partners_blueprint, 404, 422)
    def get(self, query: dict[str, Any]) -> dict[str, object]:
        """Campaigns newest first, with what each awarded; filter by status and by partner (at it or funded by it)."""
        with _state().unit_of_work() as uow:
            return {"campaigns": campaigns.list_campaigns(uow.session, now=_now(), status=query.get("status"),
                                                          partner_code=query.get("partner"))}


@partners_blueprint.route("/campaigns/<int:campaign_id>")
class CampaignById(MethodView):
    @require_role("partner_manager")
    @partners_blueprint.response(200, s.CampaignOutput)
    @documented(partners_blueprint, 404)
    def get(self, campaign_id: int) -> dict[str, object]:
        """One campaign: its terms, funders and shares, targeting, budget, status and what it has awarded."""
        with _state().unit_of_work() as uow:
            return campaigns.campaign_view(uow.session, campaign_id=campaign_id, now=_now())

    @require_role("partner_manager")
    @partners_blueprint.arguments(s.CampaignTermsInput)
    @partners_blueprint.response(200, s.CampaignOutput)
    @documented(partners_blueprint, 404, 409, 422)
    def patch(self, data: dict[str, Any], campaign_id: int) -> dict[str, object]:
        """Change any term of a campaign before it starts; refused (409) once it runs, ended or was stopped."""
        extras = _campaign_extras(data)
        changes = {key: value for key, value in data.items() if key not in ("funders", "segment")}
        committed_change(campaigns.change_campaign, campaign_id=campaign_id, changes=changes, **extras)
        with _state().unit_of_work() as uow:
            return campaigns.campaign_view(uow.session, campaign_id=campaign_id, now=_now())


@partners_blueprint.route("/campaigns/<int:campaign_id>/stop")
class CampaignStop(MethodView):
    @require_role("partner_manager")
    @partners_blueprint.arguments(s.CampaignStopInput)
    @partners_blueprint.response(200, s.CampaignOutput)
    @documented(partners_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any], campaign_id: int) -> dict[str, object]:
        """Stop a campaign early with a reason: from now on it awards nothing."""
        committed_change(campaigns.stop_campaign, campaign_id=campaign_id, reason=data["reason"])
        with _state().unit_of_work() as uow:
            return campaigns.campaign_view(uow.session, campaign_id=campaign_id, now=_now())


class _StoredComplaint(Protocol):
    """A stored complaint: its columns are read by name, its partner by id."""

    @property
    def partner_id(self) -> int: ...


def _complaint_view(session: Session, complaint: _StoredComplaint) -> dict[str, object]:
    view = {name: getattr(complaint, name) for name in ("id", "category", "description", "status", "opened_by",
                                                         "opened_at", "investigating_at", "closed_at",
                                                         "resolution_note")}
    view["partner"] = partners.partner_code(session, complaint.partner_id)
    return view


@complaints_blueprint.route("/complaints")
class Complaints(MethodView):
    @require_role("customer_service")
    @complaints_blueprint.arguments(s.ComplaintInput)
    @complaints_blueprint.response(201, s.ComplaintOutput)
    @documented(complaints_blueprint, 404, 422)
    def post(self, data: dict[str, Any]) -> dict[str, object]:
        """File a complaint against a partner, optionally tied to a purchase or redemption."""
        with _state().unit_of_work() as uow:
            complaint = complaints.file_complaint(
                uow.session, partner_code=data["partner"], category=data["category"], description=data["description"],
                member_number=data.get("member"), receipt_id=data.get("receipt_id"),
                redemption_reference=data.get("redemption_reference"), now=_now(), actor=actor())
            uow.commit()
            return _complaint_view(uow.session, complaint)

    @require_role("customer_service", "partner_manager")
    @complaints_blueprint.arguments(s.ComplaintQuery, location="query")
    @complaints_blueprint.response(200, s.ComplaintListOutput)
    @documented(complaints_blueprint, 404, 422)
    def get(self, query: dict[str, Any]) -> dict[str, object]:
        """Complaints, newest first, filtered by status and partner, a page at a time."""
        with _state().unit_of_work() as uow:
            rows, total = complaints.list_complaints(uow.session, status=query.get("status"),
                                                     partner_code=query.get("partner"), page=query["page"],
                                                     page_size=query["page_size"])
            return {"complaints": [_complaint_view(uow.session, row) for row in rows], "total": total,
                    "page": query["page"], "page_size": query["page_size"]}


@complaints_blueprint.route("/complaints/<int:complaint_id>/transitions")
class ComplaintTransitions(MethodView):
    @require_role("customer_service", "partner_manager")
    @complaints_blueprint.arguments(s.ComplaintTransitionInput)
    @complaints_blueprint.response(200, s.ComplaintOutput)
    @documented(complaints_blueprint, 404, 409, 422)
    def post(self, data: dict[str, Any], complaint_id: int) -> dict[str, object]:
        """Move a complaint to investigating, then to resolved or rejected with a note."""
        with _state().unit_of_work() as uow:
            complaint = complaints.transition(uow.session, complaint_id=complaint_id, status=data["status"],
                                              note=data.get("note"), now=_now(), actor=actor())
            uow.commit()
            return _complaint_view(uow.session, complaint)


@admin_blueprint.route("/clients")
class Clients(MethodView):
    @require_role("admin")
    @admin_blueprint.arguments(s.ClientInput)
    @admin_blueprint.response(201, s.ClientOutput)
    @documented(admin_blueprint, 404, 422)
    def post(self, data: dict[str, Any]) -> dict[str, object]:
        """Register a back-office client of one staff person for some roles; the secret is shown once."""
        with _state().unit_of_work() as uow:
            created = oauth.create_client_by(uow.session, name=data["name"], roles=data["roles"],
                                             person=data["person"], actor=actor(), now=_now())
            uow.commit()
        return {"client_id": created.client_id, "client_secret": created.client_secret, "roles": list(created.roles),
                "person": created.person}


@admin_blueprint.route("/people")
class People(MethodView):
    @require_role("admin")
    @admin_blueprint.arguments(s.PersonInput)
    @admin_blueprint.response(201, s.PersonOutput)
    @documented(admin_blueprint, 409, 422)
    def post(self, data: dict[str, Any]) -> dict[str, object]:
        """Register a staff person, who can then hold clients and console logins (four eyes compares people)."""
        with _state().unit_of_work() as uow:
            person = staff_people.add_person(uow.session, handle=data["handle"], name=data["name"], actor=actor(),
                                             now=_now())
            uow.commit()
            return {"handle": person.handle, "name": person.name, "created_at": person.created_at}


@admin_blueprint.route("/clients/<client_id>/revocation")
class ClientRevocation(MethodView):
    @require_role("admin")
    @admin_blueprint.arguments(s.EmptyInput)
    @admin_blueprint.response(204)
    @documented(admin_blueprint, 404)
    def post(self, _: dict[str, Any], client_id: str) -> None:
        """Revoke a client and its tokens."""
        with _state().unit_of_work() as uow:
            oauth.revoke_client_by(uow.session, client_id=client_id, actor=actor(), now=_now())
            uow.commit()


@admin_blueprint.route("/audit-log")
class AuditLog(MethodView):
    @require_role("admin")
    @admin_blueprint.arguments(s.AuditQuery, location="query")
    @admin_blueprint.response(200, s.AuditOutput)
    @documented(admin_blueprint, 422)
    def get(self, query: dict[str, Any]) -> dict[str, object]:
        """Audit entries after a sequence number, with the whole chain's verification."""
        with _state().unit_of_work() as uow:
            rows = audit_log.entries_after(uow.session, after_sequence=query["after_sequence"], limit=query["limit"])
            report = audit_log.verify(uow.session)
            entries = [{"sequence": row.sequence, "occurred_at": row.occurred_at.isoformat(), "actor": row.actor,
                        "action": row.action, "subject": row.subject, "before": row.before, "after": row.after,
                        "entry_hash": row.entry_hash} for row in rows]
        broken = report.first_break
        return {"entries": entries, "chain_ok": broken is None,
                "first_break": f"sequence {broken.sequence}: {broken.reason}" if broken else None}


def init_app(app: Flask, api: Api) -> None:
    """Register the back-office blueprints and document bearer tokens."""
    api.spec.components.security_scheme("bearer", {
        "type": "oauth2", "description": "OAuth 2 client credentials; roles are scopes.",
        "flows": {"clientCredentials": {"tokenUrl": "/oauth/token",
                                        "scopes": {role: f"the {role} role" for role in oauth.ROLES}}},
    })
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)


TIER_POLICY_READERS = ("admin", "partner_manager", "customer_service")
# Who may schedule a tier policy version: the same people who run campaigns (partner
# managers) and administrators; the console's Tier policy page admits the same two.
TIER_POLICY_WRITERS = ("admin", "partner_manager")


def _tier_version_view(version: tier_policy.PolicyVersion) -> dict[str, object]:
    return {**tier_policy.describe(version.policy), "effective_from": version.policy.effective_from,
            "status": version.status, "created_by": version.created_by, "created_at": version.created_at}


@partners_blueprint.route("/tier-policy")
class TierPolicySchedule(MethodView):
    @require_role(*TIER_POLICY_READERS)
    @partners_blueprint.response(200, s.TierPolicyOutput)
    @documented(partners_blueprint)
    def get(self) -> dict[str, object]:
        """The tier policy in force now, the versions scheduled to follow, and every version (newest first)."""
        with _state().unit_of_work() as uow:
            found = tier_policy.versions(uow.session, now=_now())
        views = [(version.status, _tier_version_view(version)) for version in found]
        return {"in_force": next(view for status, view in views if status == "in_force"),
                "scheduled": [view for status, view in views if status == "scheduled"],
                "versions": [view for _, view in views]}

    @require_role(*TIER_POLICY_WRITERS)
    @partners_blueprint.arguments(s.TierPolicyInput)
    @partners_blueprint.response(201, s.TierPolicyVersionOutput)
    @documented(partners_blueprint)
    def post(self, data: dict[str, Any]) -> dict[str, object]:
        """Schedule a new version of the tier policy; it takes effect at ``effective_from``, never earlier.

        ``effective_from`` must lie at least twice the schedule's reload interval ahead (60
        seconds), so every process knows the version before its first earn under it.
        """
        with _state().unit_of_work() as uow:
            made = tier_policy.propose_version(
                uow.session, basis=data["basis"], window_months=data["window_months"], downgrade=data["downgrade"],
                period_months=data["period_months"], levels=tier_policy.levels_from_data(data["tiers"]),
                effective_from=data["effective_from"], now=_now(), actor=actor())
            uow.commit()
        return _tier_version_view(made)


@members_blueprint.route("/members/<member_number>/tier-history")
class MemberTierHistory(MethodView):
    @require_role(*TIER_POLICY_READERS)
    @members_blueprint.response(200, s.TierHistoryOutput)
    @documented(members_blueprint, 404)
    def get(self, member_number: str) -> dict[str, object]:
        """The member's tier changes, newest first, each with the policy version and the reason."""
        with _state().unit_of_work() as uow:
            changes = tier_policy.tier_history(uow.session, member_number=member_number)
        return {"member": member_number, "changes": [
            {"from_tier": change.from_tier, "to_tier": change.to_tier, "changed_at": change.changed_at,
             "policy_version": change.policy_version, "reason": change.reason} for change in changes]}
