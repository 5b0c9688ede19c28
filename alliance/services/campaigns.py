"""Campaigns: extra points in a period, with the funder stated; run by the operator.

A campaign is funded by the reporting partner, by the hub's marketing budget, or jointly
by named partners in stated shares (basis points summing to 10,000; each funder is
charged exactly its share of every award, the remainder of an indivisible split by the
largest-remainder rule, ties to the funder named first: ``earning.split_by_shares``).
It may target tiers, a tenure (whole months since enrolment) and a segment (a named list
of members the operator uploads with the campaign), and have a budget in points or (for a
partner-funded or joint campaign) in money: an award that would pass what is left of the
budget is skipped, and the budget is counted under the campaign's row lock, so concurrent
purchases never exceed it. A money budget counts what the funders are charged for the
awards: points x each funder's issue price in force, the exact cost (in fractions of a
minor unit, since statements round per line and not per award). The operator
lists campaigns, reads one with what it has awarded, changes any term before it starts,
and stops it early with a reason (from then on it awards nothing). Every change is audited.

The purchase pipeline (``alliance.services.purchases``) asks a ``CampaignBook`` which
running campaigns apply to a member, which fit their budget, and for the postings and
award rows of what they gave.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from alliance.domain.clock import add_months
from alliance.domain.credit import OVER_LIMIT
from alliance.domain.earning import Campaign as CampaignRule
from alliance.domain.earning import CampaignPoints, EarnBreakdown, Funder, JointFunding, Tier
from alliance.domain.errors import Conflict, InvalidState, NotFound, ValidationFailed
from alliance.domain.ledger import AccountKind, account_code
from alliance.domain.money import MULTIPLIER_PRECISION, MULTIPLIER_SCALE, exact_decimal_problem, minor_units_per_unit
from alliance.models import (
    Campaign,
    CampaignAward,
    CampaignFunder,
    CampaignSegmentMember,
    JournalTransaction,
    LedgerAccount,
    Member,
    Partner,
    PartnerCredit,
    PartnerPrice,
)
from alliance.services import audit_log

STATUSES = ("scheduled", "running", "ended", "stopped")
FUNDINGS = ("partner", "hub", "joint")
MAX_SEGMENT_MEMBERS = 100_000
REMAINDER_RULE = "largest remainder, ties to the funder named first"
# What ``budget_used_amount`` (NUMERIC(20, 8)) holds exactly: a money budget stays below 10^12 minor units.
MAX_BUDGET_MINOR = 10**12 - 1
# The terms a change before the start may set; the rest (funders, segment) have their own keys.
_TERMS = ("name", "multiplier", "bonus_points", "min_amount_minor", "starts_at", "ends_at", "budget_points",
          "budget_minor", "budget_currency", "target_tiers", "min_tenure_months")


def status_of(campaign: Any, now: datetime) -> str:
    """scheduled, running, ended or stopped (stopped early by an operator) at ``now``."""
    if campaign.stopped_at is not None:
        return "stopped"
    if now < campaign.starts_at:
        return "scheduled"
    if now >= campaign.ends_at:
        return "ended"
    return "running"


def create_campaign(
    session: Session, *, name: str, funded_by: str, partner_id: int | None, multiplier: Decimal, bonus_points: int,
    min_amount_minor: int, starts_at: datetime, ends_at: datetime, funders: Sequence[tuple[int, int]] = (),
    budget_points: int | None = None, target_tiers: Sequence[str] | None = None,
    min_tenure_months: int | None = None, segment_name: str | None = None,
    segment_member_ids: Sequence[int] = (), budget_minor: int | None = None, budget_currency: str | None = None,
) -> int:
    """Create a campaign after checking its terms with the earning rules; returns its id.

    ``funders`` are a joint campaign's (partner id, share in basis points), in the order named.
    A money budget is ``budget_minor`` minor units of ``budget_currency``, every funder's currency.
    """
    _check_terms(name=name, funded_by=funded_by, partner_id=partner_id, multiplier=multiplier,
                 bonus_points=bonus_points, min_amount_minor=min_amount_minor, starts_at=starts_at, ends_at=ends_at,
                 funders=funders, budget_points=budget_points, target_tiers=target_tiers,
                 min_tenure_months=min_tenure_months, segment_name=segment_name,
                 segment_member_ids=segment_member_ids, budget_minor=budget_minor, budget_currency=budget_currency)
    _check_budget_currency(session, funded_by=funded_by, partner_id=partner_id, funders=funders,
                           budget_currency=budget_currency)
    campaign_id: int = session.execute(insert(Campaign).values(
        partner_id=partner_id, name=name, funded_by=funded_by, multiplier=multiplier, bonus_points=bonus_points,
        min_amount_minor=min_amount_minor, starts_at=starts_at, ends_at=ends_at, budget_points=budget_points,
        budget_used_points=0, budget_minor=budget_minor, budget_currency=budget_currency,
        budget_used_amount=Decimal(0), target_tiers=list(target_tiers) if target_tiers else None,
        min_tenure_months=min_tenure_months, segment_name=segment_name,
    ).returning(Campaign.id)).scalar_one()
    _store_funders(session, campaign_id, funders)
    _store_segment(session, campaign_id, segment_name, segment_member_ids)
    return campaign_id


def _check_terms(*, name: str, funded_by: str, partner_id: int | None, multiplier: Decimal, bonus_points: int,
                 min_amount_minor: int, starts_at: datetime, ends_at: datetime, funders: Sequence[tuple[int, int]],
                 budget_points: int | None, target_tiers: Sequence[str] | None, min_tenure_months: int | None,
                 segment_name: str | None, segment_member_ids: Sequence[int], budget_minor: int | None = None,
                 budget_currency: str | None = None) -> None:
    """Refuse terms the earning rules, the budget or the targeting would not accept."""
    if funded_by not in FUNDINGS:
        raise ValidationFailed("a campaign is funded by the partner, the hub, or jointly by named partners",
                               fields={"funded_by": [" or ".join(FUNDINGS)]})
    if funded_by == "partner" and partner_id is None:
        raise ValidationFailed("a partner-funded campaign must name its partner", fields={"partner": ["required"]})
    if (funded_by == "joint") != bool(funders):
        raise ValidationFailed("a joint campaign, and only a joint campaign, names its funders and their shares",
                               fields={"funders": ["required for a joint campaign, only for one"]})
    if funded_by == "joint" and len(funders) < 2:
        raise ValidationFailed("a joint campaign names at least two funders", fields={"funders": ["at least two"]})
    if ends_at <= starts_at:
        raise ValidationFailed("a campaign must end after it starts", fields={"ends_at": ["before starts_at"]})
    problem = exact_decimal_problem(multiplier, scale=MULTIPLIER_SCALE, precision=MULTIPLIER_PRECISION)
    if problem:
        raise ValidationFailed(f"multiplier {problem}", fields={"multiplier": [problem]})
    if budget_points is not None and (isinstance(budget_points, bool) or budget_points < 1):
        raise ValidationFailed("a budget is at least one point", fields={"budget_points": ["must be >= 1"]})
    _check_money_budget(funded_by=funded_by, budget_points=budget_points, budget_minor=budget_minor,
                        budget_currency=budget_currency)
    unknown = sorted(set(target_tiers or ()) - {tier.value for tier in Tier})
    if unknown:
        raise ValidationFailed(f"unknown tiers {', '.join(unknown)}",
                               fields={"target_tiers": [f"each one of {', '.join(Tier)}"]})
    if min_tenure_months is not None and min_tenure_months < 0:
        raise ValidationFailed("tenure is a whole number of months, at least 0",
                               fields={"min_tenure_months": ["must be >= 0"]})
    if (segment_name is None) != (not segment_member_ids):
        raise ValidationFailed("a segment has a name and at least one member",
                               fields={"segment": ["name and members together"]})
    if len(segment_member_ids) > MAX_SEGMENT_MEMBERS:
        raise ValidationFailed(f"a segment lists at most {MAX_SEGMENT_MEMBERS} members",
                               fields={"segment": [f"at most {MAX_SEGMENT_MEMBERS} members"]})
    # The domain type validates multiplier, bonus, minimum and shares the same way earning will.
    CampaignRule(campaign_id=1, name=name, funded_by=funded_by,  # type: ignore[arg-type]
                 multiplier=multiplier, bonus_points=bonus_points, min_amount_minor=min_amount_minor,
                 funders=tuple(funders))


def _check_money_budget(*, funded_by: str, budget_points: int | None, budget_minor: int | None,
                        budget_currency: str | None) -> None:
    """Refuse a money budget that is not a positive whole number of minor units of a currency, that sits beside a
    points budget, or that is set on a hub-funded campaign (which costs the hub no settlement money)."""
    if budget_minor is None and budget_currency is None:
        return
    if budget_minor is None or budget_currency is None:
        raise ValidationFailed("a budget in money states both its amount and its currency",
                               fields={"budget_minor": ["give budget_currency too"],
                                       "budget_currency": ["give budget_minor too"]})
    if budget_points is not None:
        raise ValidationFailed("a campaign has a budget in points or a budget in money, not both",
                               fields={"budget_points": ["or budget_minor"], "budget_minor": ["or budget_points"]})
    if not isinstance(budget_currency, str) or re.fullmatch(r"[A-Z]{3}", budget_currency) is None:
        raise ValidationFailed("a budget currency is a three-letter ISO 4217 code such as EUR",
                               fields={"budget_currency": ["three capital letters"]})
    if isinstance(budget_minor, bool) or not isinstance(budget_minor, int) or budget_minor < 1:
        raise ValidationFailed("a budget in money is a whole number of minor units, at least one",
                               fields={"budget_minor": ["must be >= 1"]})
    if budget_minor > MAX_BUDGET_MINOR:
        raise ValidationFailed(f"a budget in money is at most {MAX_BUDGET_MINOR} minor units",
                               fields={"budget_minor": [f"must be <= {MAX_BUDGET_MINOR}"]})
    if funded_by == "hub":
        raise ValidationFailed("a hub-funded campaign costs the hub no settlement money, so it cannot have a budget "
                               "in money: give it a budget in points instead",
                               fields={"budget_minor": ["only for a partner-funded or joint campaign"]})


def _check_budget_currency(session: Session, *, funded_by: str, partner_id: int | None,
                           funders: Sequence[tuple[int, int]], budget_currency: str | None) -> None:
    """Refuse a money budget in a currency other than every funder's: it counts what they are charged."""
    if budget_currency is None:
        return
    payers = [partner_id for partner_id, _ in funders] if funded_by == "joint" else [partner_id]
    for payer in payers:
        row = session.execute(select(Partner.code, Partner.currency).where(Partner.id == payer)).one_or_none()
        if row is None:
            raise NotFound(f"no partner {payer}")
        if row.currency != budget_currency:
            raise ValidationFailed(
                f"the budget is in {budget_currency} but funder {row.code} is charged in {row.currency}: "
                "a budget in money is in the currency of every funder",
                fields={"budget_currency": [f"funder {row.code} pays in {row.currency}"]})


def _store_funders(session: Session, campaign_id: int, funders: Sequence[tuple[int, int]]) -> None:
    session.execute(delete(CampaignFunder).where(CampaignFunder.campaign_id == campaign_id))
    if funders:
        session.execute(insert(CampaignFunder), [
            {"campaign_id": campaign_id, "position": position, "partner_id": partner_id, "share_bp": share}
            for position, (partner_id, share) in enumerate(funders)])


def _store_segment(session: Session, campaign_id: int, segment_name: str | None,
                   member_ids: Sequence[int]) -> None:
    session.execute(delete(CampaignSegmentMember).where(CampaignSegmentMember.campaign_id == campaign_id))
    if segment_name is not None and member_ids:
        session.execute(insert(CampaignSegmentMember), [
            {"campaign_id": campaign_id, "member_id": member_id} for member_id in sorted(set(member_ids))])


# ---------------------------------------------------------------- the operator's changes, audited


def _partner_id(session: Session, code: str) -> int:
    partner_id = session.scalar(select(Partner.id).where(Partner.code == code))
    if partner_id is None:
        raise NotFound(f"no partner {code!r}")
    return partner_id


def _funders_by_code(session: Session, funders: Sequence[tuple[str, int]]) -> list[tuple[int, int]]:
    """Joint funders named by partner code, each with its points-issued account (which its share is charged to)."""
    resolved = []
    for code, share in funders:
        partner_id = _partner_id(session, code)
        issued = session.scalar(select(LedgerAccount.id).where(
            LedgerAccount.code == account_code(AccountKind.PARTNER_ISSUED, partner_id=partner_id)))
        if issued is None:
            raise InvalidState(f"partner {code!r} has no points-issued account to charge")
        resolved.append((partner_id, share))
    return resolved


def _member_ids(session: Session, member_numbers: Sequence[str]) -> list[int]:
    """The members with these numbers; refuses naming any that does not exist."""
    wanted = sorted(set(member_numbers))
    found: dict[str, int] = {number: member_id for number, member_id in session.execute(
        select(Member.member_number, Member.id).where(Member.member_number.in_(wanted)))} if wanted else {}
    missing = [number for number in wanted if number not in found]
    if missing:
        shown = ", ".join(missing[:5]) + (" and more" if len(missing) > 5 else "")
        raise ValidationFailed(f"no members {shown}", fields={"segment_members": [f"{len(missing)} unknown"]})
    return [found[number] for number in wanted]


def add_campaign(
    session: Session, *, code: str | None, name: str, funded_by: str, multiplier: Decimal, bonus_points: int,
    min_amount_minor: int, starts_at: datetime, ends_at: datetime, now: datetime, actor: str,
    funders: Sequence[tuple[str, int]] = (), budget_points: int | None = None,
    target_tiers: Sequence[str] | None = None, min_tenure_months: int | None = None,
    segment_name: str | None = None, segment_members: Sequence[str] = (), budget_minor: int | None = None,
    budget_currency: str | None = None,
) -> int:
    """Create a campaign at one partner (or at all of them), its joint funders named by partner code.

    Its budget is in points (``budget_points``), in money (``budget_minor`` of ``budget_currency``), or none.
    """
    partner_id = _partner_id(session, code) if code else None
    campaign_id = create_campaign(
        session, name=name, funded_by=funded_by, partner_id=partner_id, multiplier=multiplier,
        bonus_points=bonus_points, min_amount_minor=min_amount_minor, starts_at=starts_at, ends_at=ends_at,
        funders=_funders_by_code(session, funders), budget_points=budget_points, target_tiers=target_tiers,
        min_tenure_months=min_tenure_months, segment_name=segment_name,
        segment_member_ids=_member_ids(session, segment_members), budget_minor=budget_minor,
        budget_currency=budget_currency)
    audit_log.append(session, actor=actor, action="campaign.create", subject=f"campaign:{campaign_id}", now=now,
                     after=_audited(session, campaign_id))
    return campaign_id


def change_campaign(session: Session, *, campaign_id: int, changes: dict[str, Any], now: datetime, actor: str,
                    funders: Sequence[tuple[str, int]] | None = None, segment_name: str | None = None,
                    segment_members: Sequence[str] | None = None) -> None:
    """Change any term of a campaign that has not started yet (and was not stopped); refused once it runs.

    ``changes`` holds terms by name (``_TERMS``); ``funders`` replaces a joint campaign's
    funders and shares; ``segment_members`` (with ``segment_name``) replaces its segment,
    an empty list removing it.
    """
    unknown = sorted(set(changes) - set(_TERMS))
    if unknown:
        raise ValidationFailed(f"unknown terms {', '.join(unknown)}", fields={key: ["unknown"] for key in unknown})
    campaign = _locked(session, campaign_id)
    status = status_of(campaign, now)
    if status != "scheduled":
        raise InvalidState(f"campaign {campaign_id} is {status}: only a campaign that has not started can change")
    before = _audited(session, campaign_id)
    terms = {key: getattr(campaign, key) for key in _TERMS} | changes
    if terms["starts_at"] <= now:
        raise ValidationFailed("a changed campaign still starts in the future", fields={"starts_at": ["in the past"]})
    funder_ids = (_funders_by_code(session, funders) if funders is not None
                  else [(row.partner_id, row.share_bp) for row in _funder_rows(session, campaign_id)])
    if segment_members is not None:
        member_ids = _member_ids(session, segment_members)
        segment = segment_name if member_ids else None
    else:
        member_ids = list(session.scalars(select(CampaignSegmentMember.member_id)
                                          .where(CampaignSegmentMember.campaign_id == campaign_id)))
        segment = campaign.segment_name
    _check_terms(funded_by=campaign.funded_by, partner_id=campaign.partner_id, funders=funder_ids,
                 segment_name=segment, segment_member_ids=member_ids, **terms)
    _check_budget_currency(session, funded_by=campaign.funded_by, partner_id=campaign.partner_id, funders=funder_ids,
                           budget_currency=terms["budget_currency"])
    values = dict(terms)
    values["target_tiers"] = list(terms["target_tiers"]) if terms["target_tiers"] else None
    session.execute(update(Campaign).where(Campaign.id == campaign_id).values(segment_name=segment, **values))
    if funders is not None:
        _store_funders(session, campaign_id, funder_ids)
    if segment_members is not None:
        _store_segment(session, campaign_id, segment, member_ids)
    audit_log.append(session, actor=actor, action="campaign.change", subject=f"campaign:{campaign_id}", now=now,
                     before=before, after=_audited(session, campaign_id))


def stop_campaign(session: Session, *, campaign_id: int, reason: str, now: datetime, actor: str) -> None:
    """Stop a scheduled or running campaign early, with a stated reason: from now on it awards nothing."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("say why the campaign stops", fields={"reason": ["required"]})
    campaign = _locked(session, campaign_id)
    status = status_of(campaign, now)
    if status in ("stopped", "ended"):
        raise InvalidState(f"campaign {campaign_id} has already {'been stopped' if status == 'stopped' else 'ended'}")
    session.execute(update(Campaign).where(Campaign.id == campaign_id).values(stopped_at=now, stop_reason=reason))
    audit_log.append(session, actor=actor, action="campaign.stop", subject=f"campaign:{campaign_id}", now=now,
                     before={"status": status}, after={"status": "stopped", "reason": reason})


def _locked(session: Session, campaign_id: int) -> Campaign:
    campaign = session.scalar(select(Campaign).where(Campaign.id == campaign_id).with_for_update()
                              .execution_options(populate_existing=True))
    if campaign is None:
        raise NotFound(f"no campaign {campaign_id}")
    return campaign


def _funder_rows(session: Session, campaign_id: int) -> list[Any]:
    return list(session.execute(
        select(CampaignFunder.position, CampaignFunder.partner_id, CampaignFunder.share_bp, Partner.code)
        .join(Partner, Partner.id == CampaignFunder.partner_id)
        .where(CampaignFunder.campaign_id == campaign_id).order_by(CampaignFunder.position)).all())


def _audited(session: Session, campaign_id: int) -> dict[str, object]:
    """A campaign's terms as the audit log keeps them."""
    view = campaign_view(session, campaign_id=campaign_id, now=None)
    return {key: (value.isoformat() if isinstance(value, datetime) else format(value, "f")
                  if isinstance(value, Decimal) else value)
            for key, value in view.items() if key not in ("awarded", "status")}


# ---------------------------------------------------------------- reading


def campaign_view(session: Session, *, campaign_id: int, now: datetime | None) -> dict[str, Any]:
    """One campaign: its terms, funders and shares, targeting, budget, status at ``now`` and what it awarded."""
    campaign = session.get(Campaign, campaign_id, populate_existing=True)
    if campaign is None:
        raise NotFound(f"no campaign {campaign_id}")
    partner = session.get(Partner, campaign.partner_id) if campaign.partner_id is not None else None
    segment_size = session.scalar(select(func.count()).select_from(CampaignSegmentMember)
                                  .where(CampaignSegmentMember.campaign_id == campaign_id)) or 0
    return {
        "id": campaign.id, "name": campaign.name, "partner": partner.code if partner is not None else None,
        "funded_by": campaign.funded_by,
        "funders": [{"partner": row.code, "share_bp": row.share_bp} for row in _funder_rows(session, campaign_id)],
        "remainder_rule": REMAINDER_RULE if campaign.funded_by == "joint" else None,
        "multiplier": campaign.multiplier, "bonus_points": campaign.bonus_points,
        "min_amount_minor": campaign.min_amount_minor, "starts_at": campaign.starts_at, "ends_at": campaign.ends_at,
        "status": status_of(campaign, now) if now is not None else None,
        "stopped_at": campaign.stopped_at, "stop_reason": campaign.stop_reason,
        "budget_points": campaign.budget_points, "budget_used_points": campaign.budget_used_points,
        **_money_budget(campaign),
        "target_tiers": list(campaign.target_tiers or []), "min_tenure_months": campaign.min_tenure_months,
        "segment": {"name": campaign.segment_name, "members": segment_size} if campaign.segment_name else None,
        "awarded": awarded(session, campaign_id=campaign_id),
    }


def _money_budget(campaign: Campaign) -> dict[str, Any]:
    """A money budget as read: the budget, the exact cost counted, and spent and left in whole minor units
    (spent rounded half to even, as a statement line is)."""
    used = campaign.budget_used_amount if campaign.budget_used_amount is not None else Decimal(0)
    if campaign.budget_minor is None:
        return {"budget_minor": None, "budget_currency": None, "budget_used_amount": used,
                "budget_used_minor": None, "budget_left_minor": None}
    spent = int(used.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    return {"budget_minor": campaign.budget_minor, "budget_currency": campaign.budget_currency,
            "budget_used_amount": used, "budget_used_minor": spent,
            "budget_left_minor": campaign.budget_minor - spent}


def awarded(session: Session, *, campaign_id: int) -> dict[str, Any]:
    """What a campaign has awarded so far: points, purchases awarded, and the money value by payer.

    Money is the points at the issue price each paying partner was charged (minor units,
    rounded half to even per payer); the hub's points carry no price.
    """
    rows = session.execute(
        select(CampaignAward.funder_partner_id, Partner.code, JournalTransaction.currency,
               JournalTransaction.price_per_point, func.sum(CampaignAward.points), func.count())
        .outerjoin(Partner, Partner.id == CampaignAward.funder_partner_id)
        .outerjoin(JournalTransaction, JournalTransaction.id == CampaignAward.transaction_id)
        .where(CampaignAward.campaign_id == campaign_id)
        .group_by(CampaignAward.funder_partner_id, Partner.code, JournalTransaction.currency,
                  JournalTransaction.price_per_point)
    ).all()
    purchases = session.scalar(select(func.count()).select_from(
        select(CampaignAward.member_id, CampaignAward.purchase_id).where(CampaignAward.campaign_id == campaign_id)
        .distinct().subquery())) or 0
    by_payer: dict[str | None, dict[str, Any]] = {}
    for _, code, currency, price, points, _count in rows:
        payer = by_payer.setdefault(code, {"payer": code or "hub", "points": 0, "currency": currency,
                                           "value_exact": Decimal(0)})
        payer["points"] += int(points)
        if price is not None and currency is not None:
            payer["value_exact"] += Decimal(int(points)) * price * minor_units_per_unit(currency)
    payers = []
    for payer in sorted(by_payer.values(), key=lambda payer: (payer["payer"] != "hub", payer["payer"])):
        exact = payer.pop("value_exact")
        payer["value_minor"] = (int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
                                if payer["currency"] is not None else None)
        payers.append(payer)
    return {"points": sum(payer["points"] for payer in payers), "awards": purchases, "by_payer": payers}


def list_campaigns(session: Session, *, now: datetime, status: str | None = None,
                   partner_code: str | None = None) -> list[dict[str, Any]]:
    """Campaigns newest first, optionally only those of one status at ``now`` or of one partner.

    A partner's campaigns are those at that partner and those it funds jointly.
    """
    if status is not None and status not in STATUSES:
        raise ValidationFailed(f"status is one of {', '.join(STATUSES)}", fields={"status": list(STATUSES)})
    query = select(Campaign.id).order_by(Campaign.id.desc())
    if status == "stopped":
        query = query.where(Campaign.stopped_at.is_not(None))
    elif status == "scheduled":
        query = query.where(Campaign.stopped_at.is_(None), Campaign.starts_at > now)
    elif status == "ended":
        query = query.where(Campaign.stopped_at.is_(None), Campaign.ends_at <= now)
    elif status == "running":
        query = query.where(Campaign.stopped_at.is_(None), Campaign.starts_at <= now, Campaign.ends_at > now)
    if partner_code is not None:
        partner_id = _partner_id(session, partner_code)
        query = query.where((Campaign.partner_id == partner_id) | Campaign.id.in_(
            select(CampaignFunder.campaign_id).where(CampaignFunder.partner_id == partner_id)))
    return [campaign_view(session, campaign_id=campaign_id, now=now) for campaign_id in session.scalars(query)]


def campaign_awards(session: Session, *, campaign_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """A campaign's latest awards: the member, the purchase, the points and who paid them."""
    if session.get(Campaign, campaign_id) is None:
        raise NotFound(f"no campaign {campaign_id}")
    rows = session.execute(
        select(CampaignAward.awarded_at, Member.member_number, CampaignAward.purchase_id, CampaignAward.points,
               Partner.code)
        .join(Member, Member.id == CampaignAward.member_id)
        .outerjoin(Partner, Partner.id == CampaignAward.funder_partner_id)
        .where(CampaignAward.campaign_id == campaign_id)
        .order_by(CampaignAward.awarded_at.desc(), CampaignAward.purchase_id.desc(), CampaignAward.position)
        .limit(limit)).all()
    return [{"awarded_at": row.awarded_at, "member": row.member_number, "purchase_id": row.purchase_id,
             "points": row.points, "paid_by": row.code or "hub"} for row in rows]


def awards_of_purchase(session: Session, *, member_id: int, purchase_id: int) -> list[dict[str, Any]]:
    """Which campaigns gave points on one purchase, and who paid them: the member's history link."""
    rows = session.execute(
        select(CampaignAward.campaign_id, Campaign.name, CampaignAward.points, Partner.code,
               CampaignAward.transaction_id)
        .join(Campaign, Campaign.id == CampaignAward.campaign_id)
        .outerjoin(Partner, Partner.id == CampaignAward.funder_partner_id)
        .where(CampaignAward.member_id == member_id, CampaignAward.purchase_id == purchase_id)
        .order_by(CampaignAward.campaign_id, CampaignAward.position)).all()
    return [{"campaign_id": row.campaign_id, "campaign": row.name, "points": row.points,
             "paid_by": row.code or "hub", "transaction_id": row.transaction_id} for row in rows]


# ---------------------------------------------------------------- the purchase pipeline's side


@dataclass(frozen=True, slots=True)
class FunderTerms:
    """A joint funder's terms at the posting time: its price, currency and points-issued account."""

    partner_id: int
    price_per_point: Decimal | None
    currency: str
    issued_account_id: int | None
    # Its credit snapshot is ``over``: a joint campaign it funds skips its award.
    credit_over: bool = False


@dataclass(frozen=True, slots=True)
class Award:
    """Points one campaign gave on one purchase, paid by one payer (a partner, or the hub when None)."""

    campaign_id: int
    position: int
    funder_partner_id: int | None
    points: int


@dataclass
class CampaignBook:
    """The running campaigns' targeting, joint funders and budgets, read once per report or batch.

    Budgeted campaigns are locked (after the members, in id order) when the book is read,
    so what is left of each budget is exact for the whole transaction. ``spent`` counts
    each budgeted campaign's awards in its budget's unit: points (an int) for a budget in
    points, the exact cost in minor units (a Decimal) for a budget in money.
    """

    targets: dict[int, Any] = field(default_factory=dict)
    funders: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    segments: set[tuple[int, int]] = field(default_factory=set)
    budget_left: dict[int, int] = field(default_factory=dict)
    money_left: dict[int, Decimal] = field(default_factory=dict)
    money_currency: dict[int, str] = field(default_factory=dict)
    funder_terms: dict[int, FunderTerms] = field(default_factory=dict)
    spent: dict[int, int | Decimal] = field(default_factory=lambda: defaultdict(int))

    def reset(self) -> None:
        """Forget what earlier decisions spent (a batch decides again after a retry)."""
        self.spent = defaultdict(int)

    def rule(self, row: Any) -> CampaignRule:
        """A campaign row's earning terms, with its joint funders."""
        return CampaignRule(campaign_id=row.id, name=row.name, funded_by=row.funded_by, multiplier=row.multiplier,
                            bonus_points=row.bonus_points, min_amount_minor=row.min_amount_minor,
                            funders=self.funders.get(row.id, ()))

    def for_member(self, campaigns: Sequence[CampaignRule], *, member_id: int, tier: str,
                   enrolled_at: datetime | None, moment: datetime) -> list[CampaignRule]:
        """The campaigns whose targeting (tiers, tenure, segment) this member meets at ``moment``."""
        chosen = []
        for campaign in campaigns:
            target = self.targets.get(campaign.campaign_id)
            if target is not None:
                if target.target_tiers and tier not in target.target_tiers:
                    continue
                if target.min_tenure_months and (
                        enrolled_at is None or add_months(enrolled_at, target.min_tenure_months) > moment):
                    continue
                if target.segment_name is not None and (campaign.campaign_id, member_id) not in self.segments:
                    continue
            chosen.append(campaign)
        return chosen

    def over_budget(self, breakdown: EarnBreakdown, partner_id: int) -> set[int]:
        """The budgeted campaigns whose award here would pass what is left of their budget (to be skipped)."""
        given = _given(breakdown, partner_id)
        over = {campaign_id for campaign_id, points in given.items() if campaign_id in self.budget_left
                and points > self.budget_left[campaign_id] - self.spent[campaign_id]}
        costs = self._costs(breakdown, partner_id)
        return over | {campaign_id for campaign_id, cost in costs.items()
                       if cost > self.money_left[campaign_id] - self.spent[campaign_id]}

    def spend(self, breakdown: EarnBreakdown, partner_id: int) -> None:
        """Count an applied purchase's awards against the budgets: points, or their exact cost in money."""
        for campaign_id, points in _given(breakdown, partner_id).items():
            if campaign_id in self.budget_left:
                self.spent[campaign_id] += points
        for campaign_id, cost in self._costs(breakdown, partner_id).items():
            self.spent[campaign_id] += cost

    def _costs(self, breakdown: EarnBreakdown, partner_id: int) -> dict[int, Decimal]:
        """What the funders are charged for each money-budgeted campaign's awards here, exactly, in minor units:
        each payer's points at its issue price in force (the reporting partner for a partner-funded campaign)."""
        if not self.money_left:
            return {}
        costs: dict[int, Decimal] = defaultdict(Decimal)
        for award in awards_of(breakdown, partner_id):
            if award.campaign_id not in self.money_left:
                continue
            terms = self.funder_terms.get(award.funder_partner_id) if award.funder_partner_id is not None else None
            if terms is None or terms.price_per_point is None:
                raise InvalidState(f"a funder of campaign {award.campaign_id} has no price in force, "
                                   "so its budget in money cannot be counted")
            currency = self.money_currency[award.campaign_id]
            costs[award.campaign_id] += award.points * terms.price_per_point * minor_units_per_unit(currency)
        return costs

    def load(self, session: Session, rows: Sequence[Any], *, member_ids: Sequence[int], now: datetime) -> None:
        """Read what these running campaign rows need: segments of these members, joint funders and their
        terms, and budgets, the budgeted campaigns locked in id order (call after locking the members)."""
        if not rows:
            return
        self.targets = {row.id: row for row in rows
                        if row.target_tiers or row.min_tenure_months or row.segment_name is not None}
        segmented = sorted(row.id for row in rows if row.segment_name is not None)
        if segmented and member_ids:
            listed = session.execute(
                select(CampaignSegmentMember.campaign_id, CampaignSegmentMember.member_id)
                .where(CampaignSegmentMember.campaign_id.in_(segmented),
                       CampaignSegmentMember.member_id.in_(sorted(set(member_ids)))))
            self.segments = {(campaign_id, member_id) for campaign_id, member_id in listed}
        payers: set[int] = set()
        joint = sorted(row.id for row in rows if row.funded_by == "joint")
        if joint:
            funders: dict[int, list[tuple[int, int]]] = defaultdict(list)
            for campaign_id, partner_id, share in session.execute(
                    select(CampaignFunder.campaign_id, CampaignFunder.partner_id, CampaignFunder.share_bp)
                    .where(CampaignFunder.campaign_id.in_(joint))
                    .order_by(CampaignFunder.campaign_id, CampaignFunder.position)):
                funders[campaign_id].append((partner_id, share))
            self.funders = {campaign_id: tuple(shares) for campaign_id, shares in funders.items()}
            payers = {partner_id for shares in funders.values() for partner_id, _ in shares}
        budgeted = sorted(row.id for row in rows if row.budget_points is not None or row.budget_minor is not None)
        if budgeted:
            for budget in session.execute(
                    select(Campaign.id, Campaign.budget_points, Campaign.budget_used_points, Campaign.budget_minor,
                           Campaign.budget_used_amount, Campaign.budget_currency, Campaign.funded_by,
                           Campaign.partner_id)
                    .where(Campaign.id.in_(budgeted)).order_by(Campaign.id).with_for_update()):
                if budget.budget_points is not None:
                    self.budget_left[budget.id] = budget.budget_points - budget.budget_used_points
                elif budget.budget_minor is not None:
                    self.money_left[budget.id] = budget.budget_minor - budget.budget_used_amount
                    self.money_currency[budget.id] = budget.budget_currency
                    if budget.funded_by == "partner" and budget.partner_id is not None:
                        payers.add(budget.partner_id)
        if payers:
            self.funder_terms = _funder_terms(session, payers, now)

    def funders_over_credit_limit(self, breakdown: EarnBreakdown) -> set[int]:
        """The joint campaigns of this purchase with a funder past its credit limit (their award is skipped)."""
        return {line.campaign_id for line in breakdown.campaigns for partner_id, _ in line.paid_by
                if (terms := self.funder_terms.get(partner_id)) is not None and terms.credit_over}

    def check_funders(self, breakdown: EarnBreakdown) -> None:
        """Refuse before writing when a joint funder has no price in force or no points-issued account."""
        for line in breakdown.campaigns:
            for partner_id, _ in line.paid_by:
                terms = self.funder_terms.get(partner_id)
                if terms is None or terms.price_per_point is None or terms.issued_account_id is None:
                    raise InvalidState(f"a funder of campaign {line.campaign_id} has no price in force "
                                       "or no points-issued account")


def _given(breakdown: EarnBreakdown, partner_id: int) -> dict[int, int]:
    given: dict[int, int] = defaultdict(int)
    for award in awards_of(breakdown, partner_id):
        given[award.campaign_id] += award.points
    return given


def awards_of(breakdown: EarnBreakdown, partner_id: int) -> list[Award]:
    """What each campaign line gave and who pays it.

    A partner-funded line is paid by the reporting partner, after its caps: the rule's
    points take the room under the caps first, then the partner's campaigns in id order.
    A hub line is paid by the hub; a joint line by its funders in their shares.
    """
    awards = []
    room = max(0, breakdown.partner_points - breakdown.rule_points)
    for line in breakdown.campaigns:
        if line.funded_by is Funder.PARTNER:
            points = min(room, line.points)
            room -= points
            if points:
                awards.append(Award(line.campaign_id, 0, partner_id, points))
        elif line.funded_by is Funder.HUB:
            awards.append(Award(line.campaign_id, 0, None, line.points))
        else:
            awards.extend(_joint_awards(line))
    return awards


def _joint_awards(line: CampaignPoints) -> list[Award]:
    assert line.funded_by is JointFunding.JOINT
    return [Award(line.campaign_id, position, partner_id, points)
            for position, (partner_id, points) in enumerate(line.paid_by)]


def _funder_terms(session: Session, partner_ids: set[int], now: datetime) -> dict[int, FunderTerms]:
    terms = {}
    for partner_id, currency, credit_state in session.execute(
            select(Partner.id, Partner.currency, PartnerCredit.state)
            .outerjoin(PartnerCredit, PartnerCredit.partner_id == Partner.id)
            .where(Partner.id.in_(sorted(partner_ids)))):
        price = session.scalar(select(PartnerPrice.issue_price_per_point)
                               .where(PartnerPrice.partner_id == partner_id, PartnerPrice.effective_from <= now)
                               .order_by(PartnerPrice.effective_from.desc()).limit(1))
        issued = session.scalar(select(LedgerAccount.id).where(
            LedgerAccount.code == account_code(AccountKind.PARTNER_ISSUED, partner_id=partner_id)))
        terms[partner_id] = FunderTerms(partner_id, price, currency, issued, credit_state == OVER_LIMIT)
    return terms


def joint_shares_of_purchase(session: Session, *, member_id: int, purchase_id: int) -> list[tuple[int, int]]:
    """A purchase's joint campaign shares as (points, earn transaction id), for a refund to claw back."""
    rows = session.execute(
        select(CampaignAward.points, CampaignAward.transaction_id)
        .join(Campaign, Campaign.id == CampaignAward.campaign_id)
        .where(CampaignAward.member_id == member_id, CampaignAward.purchase_id == purchase_id,
               Campaign.funded_by == "joint", CampaignAward.transaction_id.is_not(None))
        .order_by(CampaignAward.campaign_id, CampaignAward.position)).all()
    return [(points, transaction_id) for points, transaction_id in rows if transaction_id is not None]


def record_awards(session: Session, rows: Sequence[dict[str, Any]], spent: dict[int, int | Decimal]) -> None:
    """Store award rows and count what they spent against the budgets; passing one is refused.

    ``spent`` is in each budget's unit (``CampaignBook.spent``): points (an int) for a budget
    in points, the exact cost in minor units (a Decimal) for a budget in money.
    """
    if rows:
        session.execute(insert(CampaignAward), list(rows))
    for campaign_id, amount in sorted(spent.items()):
        if not amount:
            continue
        if isinstance(amount, Decimal):
            _count_money(session, campaign_id, amount)
            continue
        counted = session.execute(
            update(Campaign).where(Campaign.id == campaign_id,
                                   Campaign.budget_used_points + amount <= Campaign.budget_points)
            .values(budget_used_points=Campaign.budget_used_points + amount))
        if counted.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"campaign {campaign_id}'s budget is spent")


def _count_money(session: Session, campaign_id: int, cost: Decimal) -> None:
    """Add an exact cost to a money budget under the campaign's row lock (the book took it already).

    The sum is made here, in Decimal, and written only while the count is still the one read:
    SQLite keeps the exact amount as text, where SQL arithmetic would go through binary floating point.
    """
    row = session.execute(select(Campaign.budget_minor, Campaign.budget_used_amount)
                          .where(Campaign.id == campaign_id).with_for_update()).one_or_none()
    if row is None or row.budget_minor is None or row.budget_used_amount + cost > row.budget_minor:
        raise Conflict(f"campaign {campaign_id}'s budget is spent")
    counted = session.execute(
        update(Campaign).where(Campaign.id == campaign_id, Campaign.budget_used_amount == row.budget_used_amount)
        .values(budget_used_amount=row.budget_used_amount + cost))
    if counted.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"campaign {campaign_id}'s budget changed while it was counted")
