"""Partner coupons: series the operator creates and issues to members, used at a till in the same signed call.

A **series** is one offer (``alliance.domain.coupons``): a bonus, a multiplier on the
purchase's base points, or an amount off a redemption paid for with stated points; its
funder (a partner, or the hub's marketing budget), its validity, its uses per coupon and
the partners where it may be used (by default the funder's own tills, or every partner
for a hub series). **Issuing** gives one coupon, with its own random code, to each member
of a target (tiers, a tenure in whole months, a list of member numbers: the targeting of
campaigns) who has none of the series yet. Every operator change is audited.

At the till (``alliance.services.purchases`` and ``alliance.services.redemptions``) the
coupon is judged in the domain's order and used in the call's transaction: a
``coupon_uses`` row names the purchase or redemption, and the coupon's use count is
raised by a conditional update (the database's check keeps it within the uses allowed;
on PostgreSQL the coupon's row is locked from the moment it is read). Bonus and
multiplier points are posted as ``coupon_bonus`` by the funder at its issue price in
force, in their own lot, or from the hub's marketing account at no price; a refund claws
them back with the purchase's other points. An amount_off coupon is the redemption
itself: the member's held points pay for it, as any redemption, and the funder pays
nothing beyond that; its use is given back when the redemption is voided or expires.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import exists, func, insert, select, update
from sqlalchemy.orm import Session

from alliance.domain.clock import add_months
from alliance.domain.coupons import (
    HUB,
    SERIES_CODE,
    Call,
    CouponInvalid,
    CouponKind,
    Presented,
    SeriesTerms,
    extra_points,
    judge,
    new_code,
    normalized_code,
)
from alliance.domain.earning import Tier
from alliance.domain.errors import Conflict, InvalidState, NotFound, ValidationFailed
from alliance.domain.ledger import AccountKind, account_code
from alliance.models import (
    Coupon,
    CouponSeries,
    CouponSeriesPartner,
    CouponUse,
    JournalTransaction,
    LedgerAccount,
    Member,
    Partner,
    PartnerPrice,
    RedemptionHold,
)
from alliance.services import audit_log

MAX_ISSUE = 100_000
MAX_PAGE = 1000
_LAPSED_HOLDS = ("voided", "expired")


class SeriesCodeTaken(Conflict):
    """A series code already in use."""

    code = "coupon_series_exists"


# ---------------------------------------------------------------- the operator's side


def create_series(
    session: Session, *, code: str, title: str, funder: str, kind: str, valid_from: datetime, valid_until: datetime,
    uses_per_coupon: int = 1, bonus_points: int | None = None, multiplier: Decimal | None = None,
    amount_off_minor: int | None = None, currency: str | None = None, points_cost: int | None = None,
    valid_at: Sequence[str] | None = None, now: datetime, actor: str,
) -> int:
    """Create a series; ``funder`` is a partner code or ``hub``; ``valid_at`` partner codes (default: see module)."""
    if not SERIES_CODE.match(code or ""):
        raise ValidationFailed("a series code is 1-64 lower-case letters, digits and hyphens",
                               fields={"code": ["lower-case slug"]})
    title = (title or "").strip()
    if not title or len(title) > 200:
        raise ValidationFailed("a series has a title of 1-200 characters", fields={"title": ["1-200 characters"]})
    try:
        terms = SeriesTerms(CouponKind(kind), bonus_points=bonus_points, multiplier=multiplier,
                            amount_off_minor=amount_off_minor, points_cost=points_cost)
    except ValueError:
        raise ValidationFailed(f"kind is one of {', '.join(CouponKind)}", fields={"kind": list(CouponKind)}) from None
    terms.check()
    if valid_until <= valid_from:
        raise ValidationFailed("a series ends after it starts", fields={"valid_until": ["after valid_from"]})
    if isinstance(uses_per_coupon, bool) or not isinstance(uses_per_coupon, int) or uses_per_coupon < 1:
        raise ValidationFailed("uses per coupon is a whole number, at least 1", fields={"uses_per_coupon": [">= 1"]})
    funder_id = None if funder == HUB else _partner(session, funder).id
    if terms.kind is CouponKind.AMOUNT_OFF:
        if currency is None:
            raise ValidationFailed("an amount_off coupon states its currency", fields={"currency": ["required"]})
    elif currency is not None:
        raise ValidationFailed(f"a {kind} coupon has no currency", fields={"currency": ["only for amount_off"]})
    if valid_at is None:
        partners = [] if funder_id is None else [_partner(session, funder)]
    else:
        if not valid_at:
            raise ValidationFailed("name at least one partner, or leave valid_at out",
                                   fields={"valid_at": ["at least one partner"]})
        partners = [_partner(session, partner_code) for partner_code in sorted(set(valid_at))]
    if currency is not None:
        other = [partner.code for partner in partners if partner.currency != currency]
        if other:
            raise ValidationFailed(f"partners {', '.join(other)} do not sell in {currency}",
                                   fields={"valid_at": [f"partners selling in {currency}"]})
    if funder_id is not None and terms.kind is not CouponKind.AMOUNT_OFF:
        _issued_account(session, funder_id, funder)
    if session.scalar(select(CouponSeries.id).where(CouponSeries.code == code)) is not None:
        raise SeriesCodeTaken(f"a coupon series {code!r} exists already")
    series_id = session.execute(insert(CouponSeries).values(
        code=code, title=title, funder_partner_id=funder_id, kind=terms.kind.value, bonus_points=bonus_points,
        multiplier=multiplier, amount_off_minor=amount_off_minor, currency=currency, points_cost=points_cost,
        valid_from=valid_from, valid_until=valid_until, uses_per_coupon=uses_per_coupon, status="active",
        created_by=actor, created_at=now).returning(CouponSeries.id)).scalar_one()
    if partners:
        session.execute(insert(CouponSeriesPartner), [{"series_id": series_id, "partner_id": partner.id}
                                                      for partner in partners])
    audit_log.append(session, actor=actor, action="coupon_series.create", subject=f"coupon_series:{code}", now=now,
                     after=_audited(series_view(session, code=code, now=now)))
    return series_id


def stop_series(session: Session, *, code: str, reason: str, now: datetime, actor: str) -> None:
    """Stop a series with a stated reason: from now on none of its coupons is accepted."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("say why the series stops", fields={"reason": ["required"]})
    series = session.scalar(select(CouponSeries).where(CouponSeries.code == code).with_for_update()
                            .execution_options(populate_existing=True))
    if series is None:
        raise NotFound(f"no coupon series {code!r}")
    if series.status == "stopped":
        raise InvalidState(f"coupon series {code!r} has already been stopped")
    session.execute(update(CouponSeries).where(CouponSeries.id == series.id).values(
        status="stopped", stopped_reason=reason, stopped_by=actor, stopped_at=now))
    audit_log.append(session, actor=actor, action="coupon_series.stop", subject=f"coupon_series:{code}", now=now,
                     before={"status": "active"}, after={"status": "stopped", "reason": reason})


@dataclass(frozen=True, slots=True)
class Issued:
    """What one issue gave: coupons new to members, and members of the target who had one already."""

    issued: int
    already_held: int


def issue(session: Session, *, code: str, tiers: Sequence[str] | None = None, min_tenure_months: int | None = None,
          member_numbers: Sequence[str] | None = None, now: datetime, actor: str) -> Issued:
    """Give a coupon of the series to every active member of the target who has none of it yet.

    The target is the members meeting every criterion given: one of ``tiers``, a member
    for at least ``min_tenure_months`` whole months, listed in ``member_numbers`` (an
    uploaded segment or an explicit list). At least one criterion is required.
    """
    series = _series(session, code)
    if series.status != "active":
        raise InvalidState(f"coupon series {code!r} was stopped; it issues no more coupons")
    if now >= series.valid_until:
        raise InvalidState(f"coupon series {code!r} ended at {series.valid_until.isoformat()}")
    if not tiers and min_tenure_months is None and not member_numbers:
        raise ValidationFailed("name a target: tiers, a tenure or member numbers",
                               fields={"target": ["tiers, min_tenure_months or member_numbers"]})
    for tier in tiers or ():
        if tier not in set(Tier):
            raise ValidationFailed(f"unknown tier {tier!r}", fields={"tiers": [f"one of {', '.join(Tier)}"]})
    if min_tenure_months is not None and (isinstance(min_tenure_months, bool) or min_tenure_months < 0):
        raise ValidationFailed("tenure is a whole number of months, at least 0",
                               fields={"min_tenure_months": ["must be >= 0"]})
    query = select(Member.id, Member.enrolled_at).where(
        Member.status == "active",
        ~exists().where(Coupon.series_id == series.id, Coupon.member_id == Member.id)).order_by(Member.id)
    if tiers:
        query = query.where(Member.tier.in_(sorted(set(tiers))))
    if member_numbers:
        wanted = sorted(set(member_numbers))
        if len(wanted) > MAX_ISSUE:
            raise ValidationFailed(f"a list names at most {MAX_ISSUE} members",
                                   fields={"member_numbers": [f"at most {MAX_ISSUE}"]})
        known = set(session.scalars(select(Member.member_number).where(Member.member_number.in_(wanted))))
        missing = [number for number in wanted if number not in known]
        if missing:
            shown = ", ".join(missing[:5]) + (" and more" if len(missing) > 5 else "")
            raise ValidationFailed(f"no members {shown}", fields={"member_numbers": [f"{len(missing)} unknown"]})
        query = query.where(Member.member_number.in_(wanted))
    # Tenure as campaigns count it: whole months since enrolment, by the calendar.
    member_ids = [member_id for member_id, enrolled_at in session.execute(query)
                  if not min_tenure_months or add_months(enrolled_at, min_tenure_months) <= now]
    if len(member_ids) > MAX_ISSUE:
        raise ValidationFailed(f"the target holds {len(member_ids)} members; one issue gives at most {MAX_ISSUE}",
                               fields={"target": [f"at most {MAX_ISSUE} members"]})
    targeted = _targeted(session, series.id, tiers, min_tenure_months, member_numbers, now)
    if member_ids:
        codes = _fresh_codes(session, len(member_ids))
        rows = [{"series_id": series.id, "member_id": member_id, "code": coupon_code,
                 "uses_allowed": series.uses_per_coupon, "uses": 0, "issued_by": actor, "issued_at": now}
                for member_id, coupon_code in zip(member_ids, codes, strict=True)]
        for start in range(0, len(rows), 1000):
            session.execute(insert(Coupon), rows[start:start + 1000])
    outcome = Issued(issued=len(member_ids), already_held=targeted)
    audit_log.append(session, actor=actor, action="coupon_series.issue", subject=f"coupon_series:{code}", now=now,
                     after={"tiers": sorted(set(tiers or ())), "min_tenure_months": min_tenure_months,
                            "member_numbers": len(set(member_numbers or ())), "issued": outcome.issued,
                            "already_held": outcome.already_held})
    return outcome


def _targeted(session: Session, series_id: int, tiers: Sequence[str] | None, min_tenure_months: int | None,
              member_numbers: Sequence[str] | None, now: datetime) -> int:
    """How many active members of the target hold a coupon of the series already (read before this issue)."""
    query = (select(Member.enrolled_at).join(Coupon, Coupon.member_id == Member.id)
             .where(Coupon.series_id == series_id, Member.status == "active"))
    if tiers:
        query = query.where(Member.tier.in_(sorted(set(tiers))))
    if member_numbers:
        query = query.where(Member.member_number.in_(sorted(set(member_numbers))))
    return sum(1 for enrolled_at in session.scalars(query)
               if not min_tenure_months or add_months(enrolled_at, min_tenure_months) <= now)


def _fresh_codes(session: Session, count: int) -> list[str]:
    """``count`` new codes, none equal to another or to a stored one (a clash of 50 random bits is only drawn
    again; the unique constraint still guards a concurrent issue)."""
    codes: set[str] = set()
    while len(codes) < count:
        drawn = {new_code() for _ in range(count - len(codes))} - codes
        for start in range(0, len(drawn), 1000):
            chunk = sorted(drawn)[start:start + 1000]
            drawn -= set(session.scalars(select(Coupon.code).where(Coupon.code.in_(chunk))))
        codes |= drawn
    return sorted(codes)


# ---------------------------------------------------------------- reading


def series_view(session: Session, *, code: str, now: datetime | None = None) -> dict[str, Any]:
    """A series' terms, where it is valid, and what it did so far: coupons issued, uses, points posted."""
    series = _series(session, code)
    funder = session.get(Partner, series.funder_partner_id) if series.funder_partner_id is not None else None
    valid_at = sorted(session.scalars(select(Partner.code).join(
        CouponSeriesPartner, CouponSeriesPartner.partner_id == Partner.id)
        .where(CouponSeriesPartner.series_id == series.id)))
    issued = session.scalar(select(func.count()).select_from(Coupon).where(Coupon.series_id == series.id)) or 0
    uses = session.execute(
        select(func.count(), func.coalesce(func.sum(CouponUse.points), 0))
        .where(CouponUse.series_id == series.id, CouponUse.returned_at.is_(None))).one()
    returned = session.scalar(select(func.count()).select_from(CouponUse).where(
        CouponUse.series_id == series.id, CouponUse.returned_at.is_not(None))) or 0
    value = session.execute(
        select(JournalTransaction.currency, JournalTransaction.price_per_point, func.sum(CouponUse.points))
        .join(JournalTransaction, JournalTransaction.id == CouponUse.transaction_id)
        .where(CouponUse.series_id == series.id, JournalTransaction.price_per_point.is_not(None))
        .group_by(JournalTransaction.currency, JournalTransaction.price_per_point)).all()
    return {
        "code": series.code, "title": series.title, "funder": funder.code if funder is not None else HUB,
        "kind": series.kind, "bonus_points": series.bonus_points, "multiplier": _plain(series.multiplier),
        "amount_off_minor": series.amount_off_minor, "currency": series.currency, "points_cost": series.points_cost,
        "valid_from": series.valid_from, "valid_until": series.valid_until,
        "uses_per_coupon": series.uses_per_coupon,
        "valid_at": valid_at or ["*"], "status": series.status, "stopped_reason": series.stopped_reason,
        "stopped_by": series.stopped_by, "stopped_at": series.stopped_at,
        "created_by": series.created_by, "created_at": series.created_at,
        "coupons_issued": issued, "uses": int(uses[0]), "uses_given_back": returned,
        # Points the coupons posted (bonus, multiplier) or paid for (amount_off), by uses not given back.
        "points": int(uses[1]),
        "charged": [{"currency": currency, "price_per_point": price, "points": int(points)}
                    for currency, price, points in value],
    }


def list_series(session: Session, *, status: str | None = None, funder: str | None = None) -> list[dict[str, Any]]:
    """Series newest first, optionally of one status or one funder (a partner code or ``hub``)."""
    query = select(CouponSeries.code).order_by(CouponSeries.id.desc())
    if status is not None:
        if status not in ("active", "stopped"):
            raise ValidationFailed("status is active or stopped", fields={"status": ["active", "stopped"]})
        query = query.where(CouponSeries.status == status)
    if funder is not None:
        query = query.where(CouponSeries.funder_partner_id.is_(None) if funder == HUB
                            else CouponSeries.funder_partner_id == _partner(session, funder).id)
    return [series_view(session, code=code) for code in session.scalars(query)]


def coupon_codes(session: Session, *, code: str, page: int = 1, per_page: int = 100) -> dict[str, Any]:
    """A page of the series' coupons (member number, code, uses), in issue order, for the operator's messaging."""
    if page < 1 or not 1 <= per_page <= MAX_PAGE:
        raise ValidationFailed(f"page from 1, per_page 1-{MAX_PAGE}", fields={"per_page": [f"1-{MAX_PAGE}"]})
    series = _series(session, code)
    total = session.scalar(select(func.count()).select_from(Coupon).where(Coupon.series_id == series.id)) or 0
    rows = session.execute(
        select(Member.member_number, Coupon.code, Coupon.uses, Coupon.uses_allowed, Coupon.issued_at)
        .join(Member, Member.id == Coupon.member_id).where(Coupon.series_id == series.id)
        .order_by(Coupon.id).offset((page - 1) * per_page).limit(per_page)).all()
    return {"series": code, "page": page, "per_page": per_page, "total": total,
            "coupons": [{"member_number": row.member_number, "code": row.code, "uses": row.uses,
                         "uses_allowed": row.uses_allowed, "issued_at": row.issued_at} for row in rows]}


def codes_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Coupons of ``coupon_codes`` as CSV (member_number, code, uses, uses_allowed, issued_at), for messaging."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("member_number", "code", "uses", "uses_allowed", "issued_at"))
    for row in rows:
        writer.writerow((row["member_number"], row["code"], row["uses"], row["uses_allowed"],
                         row["issued_at"].isoformat()))
    return out.getvalue()


# ---------------------------------------------------------------- at the till


@dataclass(frozen=True, slots=True)
class Grant:
    """A coupon judged usable with a till's call, and (bonus, multiplier) the points it adds and who pays them."""

    coupon_id: int
    series_id: int
    series_code: str
    title: str
    code: str
    kind: CouponKind
    points: int
    funder_partner_id: int | None
    funder_code: str
    price_per_point: Decimal | None
    currency: str | None
    funding_account_id: int | None
    amount_off_minor: int | None = None

    def breakdown(self) -> dict[str, object]:
        """The coupon's line of a purchase's breakdown (or a redemption's reply)."""
        line: dict[str, object] = {"series": self.series_code, "title": self.title, "code": self.code,
                                   "kind": self.kind.value, "funded_by": self.funder_code}
        if self.kind is CouponKind.AMOUNT_OFF:
            return line | {"amount_off_minor": self.amount_off_minor, "currency": self.currency,
                           "points_cost": self.points}
        return line | {"points": self.points}


def _presented(session: Session, code: str, partner_id: int) -> tuple[Any, Presented] | None:
    """The coupon with this code, its series and whether it is valid at the partner; its row locked."""
    here = exists().where(CouponSeriesPartner.series_id == CouponSeries.id,
                          CouponSeriesPartner.partner_id == partner_id)
    limited = exists().where(CouponSeriesPartner.series_id == CouponSeries.id)
    row = session.execute(
        select(Coupon.id, Coupon.member_id, Coupon.uses, Coupon.uses_allowed, CouponSeries.id.label("series_id"),
               CouponSeries.code.label("series_code"), CouponSeries.title, CouponSeries.kind, CouponSeries.status,
               CouponSeries.valid_from, CouponSeries.valid_until, CouponSeries.funder_partner_id,
               CouponSeries.bonus_points, CouponSeries.multiplier, CouponSeries.amount_off_minor,
               CouponSeries.currency, CouponSeries.points_cost, here.label("valid_here"),
               limited.label("limited"))
        .join(CouponSeries, CouponSeries.id == Coupon.series_id).where(Coupon.code == code)
        .with_for_update(of=Coupon)).first()
    if row is None:
        return None
    return row, Presented(code=code, member_id=row.member_id, uses=row.uses, uses_allowed=row.uses_allowed,
                          kind=CouponKind(row.kind), status=row.status, valid_from=row.valid_from,
                          valid_until=row.valid_until, valid_here=bool(row.valid_here),
                          limited_to_partners=bool(row.limited), points_cost=row.points_cost, currency=row.currency)


def present(session: Session, *, code: str, member_id: int, partner_id: int, partner_currency: str,
            moment: datetime, call: Call, now: datetime, base_points: int = 0, hold_points: int | None = None,
            marketing_account_id: int | None = None) -> Grant:
    """Judge a coupon a till presents with a purchase (``base_points``: its rule points) or a redemption
    (``hold_points``); the grant to use once the call's own writing is done, or ``CouponInvalid``."""
    code = normalized_code(code)
    found = _presented(session, code, partner_id)
    row, coupon = found if found is not None else (None, None)
    if (found is not None and found[1].member_id == member_id and found[1].uses >= found[1].uses_allowed
            and found[1].kind is CouponKind.AMOUNT_OFF):
        # Uses of redemptions voided or expired since are given back before the coupon counts as used up.
        freed = _give_back_lapsed(session, coupon_id=found[0].id, now=now)
        coupon = replace(found[1], uses=found[1].uses - freed)
    judge(coupon, code=code, member_id=member_id, moment=moment, call=call, partner_currency=partner_currency,
          hold_points=hold_points)
    assert row is not None, "judge refuses an unknown code"
    kind = CouponKind(row.kind)
    funder_code = HUB
    price = currency = funding = None
    if kind is CouponKind.AMOUNT_OFF:
        points = row.points_cost
        currency = row.currency
    else:
        points = extra_points(kind, base_points=base_points, bonus_points=row.bonus_points,
                              multiplier=row.multiplier)
        if row.funder_partner_id is None:
            if marketing_account_id is None:
                raise NotFound("no hub marketing account to fund the coupon")
            funding = marketing_account_id
        else:
            funder_code, currency, price, funding = _funder_terms(session, row.funder_partner_id, now)
    return Grant(coupon_id=row.id, series_id=row.series_id, series_code=row.series_code, title=row.title, code=code,
                 kind=kind, points=points, funder_partner_id=row.funder_partner_id, funder_code=funder_code,
                 price_per_point=price, currency=currency, funding_account_id=funding,
                 amount_off_minor=row.amount_off_minor)


def _funder_terms(session: Session, partner_id: int, now: datetime) -> tuple[str, str, Decimal, int]:
    """A funding partner's code, currency, issue price in force and points-issued account, in one read."""
    price = (select(PartnerPrice.issue_price_per_point)
             .where(PartnerPrice.partner_id == Partner.id, PartnerPrice.effective_from <= now)
             .order_by(PartnerPrice.effective_from.desc()).limit(1).correlate(Partner).scalar_subquery())
    issued = select(LedgerAccount.id).where(
        LedgerAccount.code == account_code(AccountKind.PARTNER_ISSUED, partner_id=partner_id)).scalar_subquery()
    row = session.execute(select(Partner.code, Partner.currency, price, issued)
                          .where(Partner.id == partner_id)).one()
    if row[2] is None or row[3] is None:
        raise InvalidState(f"the coupon's funder {row.code!r} has no price in force or no points-issued account")
    return row.code, row.currency, row[2], row[3]


def use(session: Session, grant: Grant, *, member_id: int, partner_id: int, now: datetime,
        purchase_id: int | None = None, hold_id: int | None = None, transaction_id: int | None = None) -> None:
    """Count one use of a granted coupon and record it beside its purchase or redemption.

    The count rises only while a use is left (a conditional update on the row locked when
    judged); a concurrent use that took the last one refuses this call whole.
    """
    counted = session.execute(update(Coupon).where(Coupon.id == grant.coupon_id, Coupon.uses < Coupon.uses_allowed)
                              .values(uses=Coupon.uses + 1))
    if counted.rowcount != 1:  # type: ignore[attr-defined]
        raise CouponInvalid(f"coupon {grant.code!r} has been used up")
    session.execute(insert(CouponUse).values(
        coupon_id=grant.coupon_id, series_id=grant.series_id, member_id=member_id, partner_id=partner_id,
        purchase_id=purchase_id, hold_id=hold_id, points=grant.points,
        amount_off_minor=grant.amount_off_minor if grant.kind is CouponKind.AMOUNT_OFF else None,
        transaction_id=transaction_id, used_at=now))


def give_back(session: Session, *, hold_id: int, member_id: int, now: datetime) -> bool:
    """Give back the use of an amount_off coupon whose redemption was voided; whether there was one."""
    used = session.execute(select(CouponUse.id, CouponUse.coupon_id).where(
        CouponUse.member_id == member_id, CouponUse.hold_id == hold_id, CouponUse.returned_at.is_(None))).first()
    if used is None:
        return False
    _return(session, [used.id], used.coupon_id, now)
    return True


def _give_back_lapsed(session: Session, *, coupon_id: int, now: datetime) -> int:
    """Give back the coupon's uses whose redemption holds were voided or expired; how many."""
    lapsed = list(session.scalars(
        select(CouponUse.id).join(RedemptionHold, RedemptionHold.id == CouponUse.hold_id)
        .where(CouponUse.coupon_id == coupon_id, CouponUse.returned_at.is_(None),
               RedemptionHold.status.in_(_LAPSED_HOLDS)
               | ((RedemptionHold.status == "open") & (RedemptionHold.expires_at <= now)))))
    if lapsed:
        _return(session, lapsed, coupon_id, now)
    return len(lapsed)


def _return(session: Session, use_ids: list[int], coupon_id: int, now: datetime) -> None:
    session.execute(update(CouponUse).where(CouponUse.id.in_(use_ids)).values(returned_at=now))
    session.execute(update(Coupon).where(Coupon.id == coupon_id).values(uses=Coupon.uses - len(use_ids)))


def used_with_hold(session: Session, *, member_id: int, hold_id: int) -> dict[str, object] | None:
    """The amount_off coupon used with a redemption hold, as the redemption's reply names it, or None."""
    row = session.execute(
        select(CouponSeries.code.label("series"), CouponSeries.title, Coupon.code, CouponUse.amount_off_minor,
               CouponSeries.currency, CouponUse.points, CouponUse.returned_at)
        .join(Coupon, Coupon.id == CouponUse.coupon_id).join(CouponSeries, CouponSeries.id == CouponUse.series_id)
        .where(CouponUse.member_id == member_id, CouponUse.hold_id == hold_id)).first()
    if row is None:
        return None
    return {"series": row.series, "title": row.title, "code": row.code, "kind": CouponKind.AMOUNT_OFF.value,
            "amount_off_minor": row.amount_off_minor, "currency": row.currency, "points_cost": row.points,
            "given_back": row.returned_at is not None}


def points_of_purchase(session: Session, *, member_id: int, purchase_id: int) -> list[tuple[int, int]]:
    """A purchase's coupon points as (points, posting transaction id), for a refund to claw back."""
    rows = session.execute(select(CouponUse.points, CouponUse.transaction_id).where(
        CouponUse.member_id == member_id, CouponUse.purchase_id == purchase_id,
        CouponUse.transaction_id.is_not(None))).all()
    return [(points, transaction_id) for points, transaction_id in rows if transaction_id is not None]


# ---------------------------------------------------------------- helpers


def _series(session: Session, code: str) -> CouponSeries:
    series = session.scalar(select(CouponSeries).where(CouponSeries.code == code)
                            .execution_options(populate_existing=True))
    if series is None:
        raise NotFound(f"no coupon series {code!r}")
    return series


def _partner(session: Session, code: str) -> Partner:
    partner = session.scalar(select(Partner).where(Partner.code == code))
    if partner is None:
        raise NotFound(f"no partner {code!r}")
    return partner


def _issued_account(session: Session, partner_id: int, code: str) -> int:
    issued = session.scalar(select(LedgerAccount.id).where(
        LedgerAccount.code == account_code(AccountKind.PARTNER_ISSUED, partner_id=partner_id)))
    if issued is None:
        raise InvalidState(f"partner {code!r} has no points-issued account to charge")
    return issued


def _plain(value: Decimal | None) -> Decimal | None:
    """A stored decimal without the column's trailing zeros (2.00000000 reads 2, 1.50000000 reads 1.5)."""
    if value is None:
        return None
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


def _audited(view: dict[str, Any]) -> dict[str, object]:
    """A series' terms as the audit log keeps them."""
    kept = ("code", "title", "funder", "kind", "bonus_points", "multiplier", "amount_off_minor", "currency",
            "points_cost", "valid_from", "valid_until", "uses_per_coupon", "valid_at")
    return {key: (view[key].isoformat() if isinstance(view[key], datetime) else format(view[key], "f")
                  if isinstance(view[key], Decimal) else view[key]) for key in kept}
