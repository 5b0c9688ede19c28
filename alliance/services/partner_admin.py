"""Partner management for partner managers: onboarding, status, prices, earn rules,
campaigns, terminals and keys. Every change goes to the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alliance.domain.earning import EarnRule
from alliance.domain.errors import Conflict, InvalidState, NotFound, ValidationFailed
from alliance.domain.identifiers import KEY_ID, PARTNER_CODE, TERMINAL_CODE, IdentifierRule, identifier_problem
from alliance.domain.money import PRICE_PRECISION, PRICE_SCALE, RATE_PRECISION, RATE_SCALE, exact_decimal_problem
from alliance.models import Partner, PartnerEarnRule, PartnerKey, PartnerPrice, Terminal
from alliance.services import audit_log, partner_keys
from alliance.services.campaigns import create_campaign
from alliance.services.partners import PartnerTerms, add_terminal, create_partner, register_key

# Which status may follow which: terminated is final, and a pending partner is either
# activated or never was.
STATUS_TRANSITIONS = {
    "pending": {"active", "terminated"},
    "active": {"suspended", "terminated"},
    "suspended": {"active", "terminated"},
    "terminated": set(),
}
MAX_REASON_CHARACTERS = 1000


@dataclass(frozen=True, slots=True)
class PriceView:
    """Prices as scheduled."""

    id: int
    effective_from: datetime
    issue_price_per_point: Decimal
    redemption_price_per_point: Decimal


@dataclass(frozen=True, slots=True)
class EarnRuleView:
    """An earn rule as scheduled."""

    id: int
    effective_from: datetime
    base_points_per_unit: Decimal
    amount_ladder: list[dict[str, Any]]
    per_purchase_cap_points: int | None
    per_member_day_cap_points: int | None


@dataclass(frozen=True, slots=True)
class KeyView:
    """A partner's signing key as staff see it (never the key material)."""

    id: int
    key_id: str
    status: str
    terminal: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


def key_view(session: Session, key_id: str) -> KeyView:
    """One key by its key id, with the code of the terminal it is bound to."""
    row = session.execute(
        select(PartnerKey, Terminal.code).outerjoin(Terminal, Terminal.id == PartnerKey.terminal_id)
        .where(PartnerKey.key_id == key_id).execution_options(populate_existing=True)
    ).first()
    if row is None:
        raise NotFound(f"no key {key_id!r}")
    key, terminal = row
    return KeyView(key.id, key.key_id, key.status, terminal, key.created_at, key.expires_at, key.revoked_at)


def checked_identifier(rule: IdentifierRule, value: str, *, field: str) -> str:
    """``value`` if it is in the rule's character set, else a ``ValidationFailed`` naming ``field``."""
    problem = identifier_problem(rule, value)
    if problem:
        raise ValidationFailed(problem, fields={field: [problem]})
    return value


def partner_by_code(session: Session, code: str) -> Partner:
    """The partner with this code."""
    partner = session.scalar(select(Partner).where(Partner.code == code))
    if partner is None:
        raise NotFound(f"no partner {code!r}")
    return partner


def partners_page(session: Session, *, page: int, page_size: int) -> tuple[list[Partner], int]:
    """One page of partners by code (pages count from 1), and how many there are in all."""
    total = session.scalar(select(func.count()).select_from(Partner)) or 0
    rows = session.scalars(select(Partner).order_by(Partner.code).offset((page - 1) * page_size).limit(page_size))
    return list(rows), total


@dataclass(frozen=True, slots=True)
class PartnerKeys:
    """A partner's code, status, currency and cycle, and its keys as (key id, status)."""

    code: str
    status: str
    currency: str
    settlement_cycle: str
    keys: list[tuple[str, str]]


def partners_with_keys(session: Session) -> list[PartnerKeys]:
    """Every partner by code, with its keys by key id."""
    found = []
    for partner in session.scalars(select(Partner).order_by(Partner.code)):
        keys = session.execute(select(PartnerKey.key_id, PartnerKey.status)
                               .where(PartnerKey.partner_id == partner.id).order_by(PartnerKey.key_id)).all()
        found.append(PartnerKeys(partner.code, partner.status, partner.currency, partner.settlement_cycle,
                                 [(key_id, status) for key_id, status in keys]))
    return found


def key_owner(session: Session, key_id: str) -> str:
    """The code of the partner that holds key ``key_id``."""
    owner = session.scalar(select(Partner.code).join(PartnerKey, PartnerKey.partner_id == Partner.id)
                           .where(PartnerKey.key_id == key_id))
    if owner is None:
        raise NotFound(f"no key {key_id!r}")
    return owner


def onboard(session: Session, *, code: str, name: str, terms: PartnerTerms, now: datetime, actor: str) -> Partner:
    """Create a partner in status pending, with its accounts, first price and earn rule."""
    checked_identifier(PARTNER_CODE, code, field="code")
    partner_id = create_partner(session, code=code, name=name, terms=terms, now=now, status="pending")
    audit_log.append(session, actor=actor, action="partner.onboard", subject=f"partner:{code}", now=now,
                     after={"name": name, "currency": terms.currency, "time_zone": terms.time_zone,
                            "settlement_cycle": terms.settlement_cycle,
                            "issue_price_per_point": str(terms.issue_price_per_point),
                            "redemption_price_per_point": str(terms.redemption_price_per_point)})
    return session.get_one(Partner, partner_id)


def change_status(session: Session, *, code: str, status: str, now: datetime, actor: str) -> Partner:
    """Move a partner along its lifecycle; suspended partners can neither earn nor redeem."""
    partner = partner_by_code(session, code)
    if status not in STATUS_TRANSITIONS.get(partner.status, set()):
        raise InvalidState(f"a {partner.status} partner cannot become {status}")
    before = partner.status
    session.execute(update(Partner).where(Partner.id == partner.id).values(
        status=status, **({"terminated_at": now} if status == "terminated" else {})))
    audit_log.append(session, actor=actor, action="partner.status", subject=f"partner:{code}", now=now,
                     before={"status": before}, after={"status": status})
    session.refresh(partner)
    return partner


def add_price(session: Session, *, code: str, effective_from: datetime, issue_price_per_point: Decimal,
              redemption_price_per_point: Decimal, now: datetime, actor: str) -> PriceView:
    """Schedule new prices; they apply to postings from ``effective_from`` on, never to the past."""
    partner = partner_by_code(session, code)
    if effective_from < now:
        raise ValidationFailed("prices cannot take effect in the past", fields={"effective_from": ["in the past"]})
    for name, value in (("issue_price_per_point", issue_price_per_point),
                        ("redemption_price_per_point", redemption_price_per_point)):
        problem = exact_decimal_problem(value, scale=PRICE_SCALE, precision=PRICE_PRECISION)
        if problem:
            raise ValidationFailed(f"{name} {problem}", fields={name: [problem]})
    try:
        with session.begin_nested():
            price_id = session.execute(insert(PartnerPrice).values(
                partner_id=partner.id, effective_from=effective_from, issue_price_per_point=issue_price_per_point,
                redemption_price_per_point=redemption_price_per_point).returning(PartnerPrice.id)).scalar_one()
    except IntegrityError as error:
        raise Conflict("a price already takes effect at that moment") from error
    audit_log.append(session, actor=actor, action="partner.price.add", subject=f"partner:{code}", now=now,
                     after={"effective_from": effective_from.isoformat(),
                            "issue_price_per_point": str(issue_price_per_point),
                            "redemption_price_per_point": str(redemption_price_per_point)})
    return PriceView(price_id, effective_from, issue_price_per_point, redemption_price_per_point)


def add_earn_rule(session: Session, *, code: str, effective_from: datetime, base_points_per_unit: Decimal,
                  amount_ladder: list[dict[str, Any]], per_purchase_cap_points: int | None,
                  per_member_day_cap_points: int | None, now: datetime, actor: str) -> EarnRuleView:
    """Schedule a new earn rule, checked by the same rules earning applies."""
    partner = partner_by_code(session, code)
    if effective_from < now:
        raise ValidationFailed("rules cannot take effect in the past", fields={"effective_from": ["in the past"]})
    problem = exact_decimal_problem(base_points_per_unit, scale=RATE_SCALE, precision=RATE_PRECISION)
    if problem:
        raise ValidationFailed(f"base_points_per_unit {problem}", fields={"base_points_per_unit": [problem]})
    EarnRule.from_stored(base_points_per_unit, amount_ladder, per_purchase_cap_points, per_member_day_cap_points)
    try:
        with session.begin_nested():
            rule_id = session.execute(insert(PartnerEarnRule).values(
                partner_id=partner.id, effective_from=effective_from, base_points_per_unit=base_points_per_unit,
                amount_ladder=amount_ladder, per_purchase_cap_points=per_purchase_cap_points,
                per_member_day_cap_points=per_member_day_cap_points).returning(PartnerEarnRule.id)).scalar_one()
    except IntegrityError as error:
        raise Conflict("a rule already takes effect at that moment") from error
    audit_log.append(session, actor=actor, action="partner.earn_rule.add", subject=f"partner:{code}", now=now,
                     after={"effective_from": effective_from.isoformat(),
                            "base_points_per_unit": str(base_points_per_unit),
                            "amount_ladder": amount_ladder, "per_purchase_cap_points": per_purchase_cap_points,
                            "per_member_day_cap_points": per_member_day_cap_points})
    return EarnRuleView(rule_id, effective_from, base_points_per_unit, amount_ladder, per_purchase_cap_points,
                        per_member_day_cap_points)


def add_campaign(session: Session, *, code: str | None, name: str, funded_by: str, multiplier: Decimal,
                 bonus_points: int, min_amount_minor: int, starts_at: datetime, ends_at: datetime, now: datetime,
                 actor: str) -> int:
    """Create a campaign at one partner (or, hub-funded, at all of them)."""
    partner_id = partner_by_code(session, code).id if code else None
    campaign_id = create_campaign(session, name=name, funded_by=funded_by, partner_id=partner_id,
                                  multiplier=multiplier, bonus_points=bonus_points, min_amount_minor=min_amount_minor,
                                  starts_at=starts_at, ends_at=ends_at)
    audit_log.append(session, actor=actor, action="campaign.create", subject=f"campaign:{campaign_id}", now=now,
                     after={"partner": code, "name": name, "funded_by": funded_by, "multiplier": str(multiplier),
                            "bonus_points": bonus_points, "starts_at": starts_at.isoformat(),
                            "ends_at": ends_at.isoformat()})
    return campaign_id


def new_terminal(session: Session, *, code: str, terminal_code: str, now: datetime, actor: str) -> int:
    """Register a terminal for a partner."""
    checked_identifier(TERMINAL_CODE, terminal_code, field="code")
    partner = partner_by_code(session, code)
    terminal_id = add_terminal(session, partner_id=partner.id, code=terminal_code, now=now)
    audit_log.append(session, actor=actor, action="partner.terminal.add", subject=f"partner:{code}", now=now,
                     after={"terminal": terminal_code})
    return terminal_id


def retire_terminal(session: Session, *, code: str, terminal_code: str, reason: str, now: datetime,
                    actor: str) -> list[str]:
    """Retire a terminal for good: requests naming it are refused from now on and every key bound to it is
    revoked at once; the reason is kept in the audit log. Answers the key ids revoked."""
    if not reason or not reason.strip() or len(reason) > MAX_REASON_CHARACTERS:
        raise ValidationFailed(f"a reason has 1-{MAX_REASON_CHARACTERS} characters", fields={"reason": ["length"]})
    partner = partner_by_code(session, code)
    terminal = session.scalar(select(Terminal).where(Terminal.partner_id == partner.id, Terminal.code == terminal_code)
                              .with_for_update())
    if terminal is None:
        raise NotFound(f"partner {code} has no terminal {terminal_code!r}")
    if terminal.status == "retired":
        raise InvalidState(f"terminal {terminal_code!r} of partner {code} is already retired")
    session.execute(update(Terminal).where(Terminal.id == terminal.id).values(status="retired"))
    bound = list(session.scalars(select(PartnerKey.key_id).where(PartnerKey.terminal_id == terminal.id,
                                                                 PartnerKey.status == "active")
                                 .order_by(PartnerKey.key_id)))
    for key_id in bound:
        partner_keys.revoke_key(session, key_id=key_id, now=now)
    audit_log.append(session, actor=actor, action="partner.terminal.retire", subject=f"partner:{code}", now=now,
                     before={"terminal": terminal_code, "status": "active"},
                     after={"terminal": terminal_code, "status": "retired", "keys_revoked": bound,
                            "reason": reason.strip()})
    return bound


def new_key(session: Session, *, code: str, key_id: str, public_key: bytes, terminal_code: str | None,
            expires_at: datetime | None, now: datetime, actor: str) -> KeyView:
    """Register a signing key (rotation: several may be active at once)."""
    checked_identifier(KEY_ID, key_id, field="key_id")
    if terminal_code is not None:
        checked_identifier(TERMINAL_CODE, terminal_code, field="terminal")
    partner = partner_by_code(session, code)
    terminal_id = None
    if terminal_code is not None:
        terminal_id = session.scalar(select(Terminal.id).where(Terminal.partner_id == partner.id,
                                                               Terminal.code == terminal_code))
        if terminal_id is None:
            raise NotFound(f"partner {code} has no terminal {terminal_code!r}")
    register_key(session, partner_id=partner.id, key_id=key_id, public_key=public_key, now=now,
                 terminal_id=terminal_id, expires_at=expires_at)
    audit_log.append(session, actor=actor, action="partner.key.register", subject=f"partner:{code}", now=now,
                     after={"key_id": key_id, "terminal": terminal_code,
                            "expires_at": expires_at.isoformat() if expires_at else None})
    return key_view(session, key_id)


def revoke(session: Session, *, code: str, key_id: str, now: datetime, actor: str,
           reason: str | None = None) -> KeyView:
    """Revoke one of this partner's keys; the reason, when given, is kept in the audit log."""
    if reason is not None and (not reason.strip() or len(reason) > MAX_REASON_CHARACTERS):
        raise ValidationFailed(f"a reason has 1-{MAX_REASON_CHARACTERS} characters", fields={"reason": ["length"]})
    partner = partner_by_code(session, code)
    owner = session.scalar(select(PartnerKey.partner_id).where(PartnerKey.key_id == key_id))
    if owner != partner.id:
        raise NotFound(f"partner {code} has no key {key_id!r}")
    partner_keys.revoke_key(session, key_id=key_id, now=now)
    after: dict[str, object] = {"key_id": key_id, "status": "revoked"}
    if reason is not None:
        after["reason"] = reason.strip()
    audit_log.append(session, actor=actor, action="partner.key.revoke", subject=f"partner:{code}", now=now,
                     before={"key_id": key_id, "status": "active"}, after=after)
    return key_view(session, key_id)
