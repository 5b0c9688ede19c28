"""Onboarding partners: the partner row, its accounts, first price and earn rule, terminals, keys."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alliance.domain.errors import Conflict, NotFound, ValidationFailed
from alliance.domain.money import PRICE_PRECISION, PRICE_SCALE, RATE_PRECISION, RATE_SCALE, exact_decimal_problem
from alliance.models import Partner, PartnerEarnRule, PartnerKey, PartnerPrice, Terminal
from alliance.services.accounts import open_partner_accounts

CODE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}\Z")
SETTLEMENT_CYCLES = ("daily", "weekly", "monthly")
PARTNER_STATUSES = ("pending", "active", "suspended", "terminated")
ED25519_PUBLIC_KEY_BYTES = 32


@dataclass(frozen=True)
class PartnerTerms:
    """What a partner signs up to: currency, zone, cycle, prices and its earn rule."""

    currency: str
    time_zone: str
    settlement_cycle: str
    issue_price_per_point: Decimal
    redemption_price_per_point: Decimal
    base_points_per_unit: Decimal
    amount_ladder: list[dict[str, object]] = field(default_factory=list)
    per_purchase_cap_points: int | None = None
    per_member_day_cap_points: int | None = None
    return_window_days: int = 0
    settlement_cutoff_local: time = time(0, 0)
    cycle_fee_minor: int = 0


def create_partner(
    session: Session, *, code: str, name: str, terms: PartnerTerms, now: datetime, status: str = "active"
) -> int:
    """Create a partner with its accounts, first price and earn rule; returns its id."""
    _validate(code, name, terms, status)
    try:
        partner_id = session.execute(
            insert(Partner)
            .values(
                code=code, name=name, status=status, currency=terms.currency, time_zone=terms.time_zone,
                settlement_cycle=terms.settlement_cycle, settlement_cutoff_local=terms.settlement_cutoff_local,
                return_window_days=terms.return_window_days, cycle_fee_minor=terms.cycle_fee_minor, created_at=now,
                terminated_at=now if status == "terminated" else None,
            )
            .returning(Partner.id)
        ).scalar_one()
    except IntegrityError as error:
        raise Conflict(f"a partner with code {code!r} already exists") from error
    open_partner_accounts(session, partner_id=partner_id, now=now)
    session.execute(
        insert(PartnerPrice).values(
            partner_id=partner_id, effective_from=now, issue_price_per_point=terms.issue_price_per_point,
            redemption_price_per_point=terms.redemption_price_per_point,
        )
    )
    session.execute(
        insert(PartnerEarnRule).values(
            partner_id=partner_id, effective_from=now, base_points_per_unit=terms.base_points_per_unit,
            amount_ladder=terms.amount_ladder, per_purchase_cap_points=terms.per_purchase_cap_points,
            per_member_day_cap_points=terms.per_member_day_cap_points,
        )
    )
    return partner_id


def partner_id_by_code(session: Session, code: str) -> int:
    """The id of the partner with ``code``."""
    partner_id = session.scalar(select(Partner.id).where(Partner.code == code))
    if partner_id is None:
        raise NotFound(f"no partner {code!r}")
    return partner_id


def partner_code(session: Session, partner_id: int) -> str | None:
    """The code of the partner with ``partner_id``, or None."""
    return session.scalar(select(Partner.code).where(Partner.id == partner_id))


def currency_of(session: Session, code: str) -> str:
    """The settlement currency of the partner with ``code``."""
    currency = session.scalar(select(Partner.currency).where(Partner.code == code))
    if currency is None:
        raise NotFound(f"no partner {code!r}")
    return currency


def codes_by_id(session: Session) -> dict[int, str]:
    """Every partner's code by its id."""
    return {partner_id: code for partner_id, code in session.execute(select(Partner.id, Partner.code))}


def add_terminal(session: Session, *, partner_id: int, code: str, now: datetime) -> int:
    """Register a point-of-sale terminal for a partner; returns its id."""
    if not CODE_PATTERN.match(code):
        raise ValidationFailed("terminal code must be 2-40 lowercase letters, digits or dashes",
                               fields={"code": ["bad format"]})
    try:
        return session.execute(
            insert(Terminal).values(partner_id=partner_id, code=code, status="active", created_at=now)
            .returning(Terminal.id)
        ).scalar_one()
    except IntegrityError as error:
        raise Conflict(f"partner {partner_id} already has a terminal {code!r}") from error


def register_key(
    session: Session,
    *,
    partner_id: int,
    key_id: str,
    public_key: bytes,
    now: datetime,
    terminal_id: int | None = None,
    expires_at: datetime | None = None,
) -> int:
    """Register an Ed25519 public key (raw 32 bytes) for a partner; returns its row id."""
    if len(public_key) != ED25519_PUBLIC_KEY_BYTES:
        raise ValidationFailed("an Ed25519 public key is 32 bytes", fields={"public_key": ["wrong length"]})
    if not 1 <= len(key_id) <= 100 or not key_id.isprintable() or " " in key_id:
        raise ValidationFailed("key id must be 1-100 printable characters without spaces",
                               fields={"key_id": ["bad format"]})
    if terminal_id is not None:
        owner = session.scalar(select(Terminal.partner_id).where(Terminal.id == terminal_id))
        if owner != partner_id:
            raise NotFound(f"partner {partner_id} has no terminal {terminal_id}")
    try:
        return session.execute(
            insert(PartnerKey)
            .values(
                partner_id=partner_id, key_id=key_id, public_key=public_key, status="active",
                terminal_id=terminal_id, created_at=now, expires_at=expires_at,
            )
            .returning(PartnerKey.id)
        ).scalar_one()
    except IntegrityError as error:
        raise Conflict(f"key id {key_id!r} is already registered") from error


def _validate(code: str, name: str, terms: PartnerTerms, status: str) -> None:
    problems: dict[str, list[str]] = {}
    if not CODE_PATTERN.match(code):
        problems["code"] = ["2-40 lowercase letters, digits or dashes"]
    if not name.strip() or len(name) > 200:
        problems["name"] = ["1-200 characters"]
    if status not in PARTNER_STATUSES:
        problems["status"] = [f"one of {', '.join(PARTNER_STATUSES)}"]
    if len(terms.currency) != 3 or not terms.currency.isalpha() or not terms.currency.isupper():
        problems["currency"] = ["a three-letter ISO 4217 code"]
    try:
        ZoneInfo(terms.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        problems["time_zone"] = ["an IANA time zone such as Europe/Paris"]
    if terms.settlement_cycle not in SETTLEMENT_CYCLES:
        problems["settlement_cycle"] = [f"one of {', '.join(SETTLEMENT_CYCLES)}"]
    for name_of_price, scale, precision in (("issue_price_per_point", PRICE_SCALE, PRICE_PRECISION),
                                            ("redemption_price_per_point", PRICE_SCALE, PRICE_PRECISION),
                                            ("base_points_per_unit", RATE_SCALE, RATE_PRECISION)):
        problem = exact_decimal_problem(getattr(terms, name_of_price), scale=scale, precision=precision)
        if problem:
            problems[name_of_price] = [problem]
    if not 0 <= terms.return_window_days <= 365:
        problems["return_window_days"] = ["between 0 and 365"]
    if isinstance(terms.cycle_fee_minor, bool) or not isinstance(terms.cycle_fee_minor, int) \
            or not 0 <= terms.cycle_fee_minor <= 10**12:
        problems["cycle_fee_minor"] = ["a whole number of minor units, 0 or more"]
    ladder_problem = _ladder_problem(terms.amount_ladder)
    if ladder_problem:
        problems["amount_ladder"] = [ladder_problem]
    if problems:
        raise ValidationFailed("the partner's terms are invalid", fields=problems)


def _ladder_problem(ladder: list[dict[str, object]]) -> str | None:
    previous_from = -1
    for step in ladder:
        if set(step) != {"from_minor", "multiplier"}:
            return "each step has exactly from_minor and multiplier"
        from_minor = step["from_minor"]
        if not isinstance(from_minor, int) or isinstance(from_minor, bool) or from_minor <= previous_from:
            return "from_minor must be whole minor units in ascending order"
        try:
            multiplier = Decimal(str(step["multiplier"])) if isinstance(step["multiplier"], str) else None
        except InvalidOperation:
            multiplier = None
        if multiplier is None or not multiplier.is_finite() or multiplier <= 0:
            return "multiplier must be a positive decimal string such as \"1.5\""
        previous_from = from_minor
    return None
