"""Builders for test data: partners and members with sensible defaults."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from alliance.extensions import HubState
from alliance.services.member_verification import set_pin
from alliance.services.members import Enrolment, enrol_member
from alliance.services.partners import PartnerTerms, add_terminal, create_partner, register_key


def default_terms(**overrides: object) -> PartnerTerms:
    """Terms of an ordinary partner; override any field."""
    values: dict[str, object] = {
        "currency": "EUR", "time_zone": "Europe/Paris", "settlement_cycle": "monthly",
        "issue_price_per_point": Decimal("0.0100"), "redemption_price_per_point": Decimal("0.0080"),
        "base_points_per_unit": Decimal("1"),
    }
    values.update(overrides)
    return PartnerTerms(**values)  # type: ignore[arg-type]


def make_partner(hub: HubState, *, now: datetime, code: str = "shop", status: str = "active", **terms: object) -> int:
    """Create and commit a partner; returns its id."""
    with hub.unit_of_work() as uow:
        partner_id = create_partner(uow.session, code=code, name=code.title(), terms=default_terms(**terms),
                                    now=now, status=status)
        uow.commit()
    return partner_id


def make_member(hub: HubState, *, now: datetime) -> Enrolment:
    """Enrol and commit a member."""
    with hub.unit_of_work() as uow:
        enrolment = enrol_member(uow.session, now=now)
        uow.commit()
    return enrolment


@dataclass(frozen=True)
class SigningPartner:
    """A partner with a registered key, ready to sign requests."""

    partner_id: int
    code: str
    key_id: str
    private_key: Ed25519PrivateKey
    terminal_id: int


def make_signing_partner(hub: HubState, *, now: datetime, code: str = "shop", bind_key_to_terminal: bool = False,
                         **terms: object) -> SigningPartner:
    """A partner with one terminal ``till-1`` and one Ed25519 key (optionally bound to it)."""
    private_key = Ed25519PrivateKey.generate()
    public_key = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = f"{code}-key"
    with hub.unit_of_work() as uow:
        partner_id = create_partner(uow.session, code=code, name=code.title(), terms=default_terms(**terms), now=now)
        terminal_id = add_terminal(uow.session, partner_id=partner_id, code="till-1", now=now)
        register_key(uow.session, partner_id=partner_id, key_id=key_id, public_key=public_key, now=now,
                     terminal_id=terminal_id if bind_key_to_terminal else None)
        uow.commit()
    return SigningPartner(partner_id, code, key_id, private_key, terminal_id)


def make_member_with_pin(hub: HubState, *, now: datetime, pin: str = "2468") -> Enrolment:
    """Enrol a member and set the PIN of their card."""
    enrolment = make_member(hub, now=now)
    with hub.unit_of_work() as uow:
        set_pin(uow.session, card_number=enrolment.card_number, pin=pin)
        uow.commit()
    return enrolment


# The start of a risk policy a test sets for all its history: before any test's clock.
RISK_POLICY_SINCE = datetime(2000, 1, 1, tzinfo=timezone.utc)


def set_risk_policy(hub: HubState, document: dict[str, object] | None = None) -> None:
    """Put a risk policy in force for every moment a test uses (no limits at all by default): for tests
    that drive more activity through one member or till than the built-in default policy lets through."""
    from sqlalchemy import func, select

    from alliance.models import RiskPolicyVersion
    from alliance.services import risk

    with hub.unit_of_work() as uow:
        latest = uow.session.scalar(select(func.max(RiskPolicyVersion.effective_from)))
        # Each later version a minute after the one before, all long before any test's clock.
        start = RISK_POLICY_SINCE if latest is None else latest + timedelta(minutes=1)
        risk.set_policy(uow.session, document=document or {"limits": []}, effective_from=start,
                        reason="a test's own policy", now=start - timedelta(hours=1), actor="test")
        uow.commit()
