"""A small demo alliance, so a fresh hub has something real to show and audit."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from alliance.domain.clock import add_months
from alliance.domain.errors import ConfigurationError
from alliance.models import Partner
from alliance.services import audit_log, ledger
from alliance.services.member_verification import set_pin
from alliance.services.members import enrol_member
from alliance.services.partners import PartnerTerms, add_terminal, create_partner, register_key

DEMO_KEYS_FOLDER = "demo-keys"
DEMO_LADDER = [
    {"from_minor": 0, "multiplier": "1"},
    {"from_minor": 10_000, "multiplier": "1.5"},
    {"from_minor": 30_000, "multiplier": "2"},
]
DEMO_PARTNERS = (
    ("cafe-aurora", "Café Aurora", "Europe/Paris", "weekly", Decimal("0.0100"), Decimal("0.0080"), 0),
    ("book-nook", "The Book Nook", "Europe/Berlin", "monthly", Decimal("0.0120"), Decimal("0.0090"), 14),
    ("fuel-stop", "FuelStop Stations", "Europe/Madrid", "daily", Decimal("0.0080"), Decimal("0.0070"), 0),
)
DEMO_MEMBER_COUNT = 5
# How long ago the demo alliance's activity happened, so that its settlement cycles
# (daily, weekly and monthly) have ended and can be closed.
DEMO_HISTORY = timedelta(days=40)
# Demo PINs are public by design: the demo alliance exists to be tried from a shell.
DEMO_PIN = "1234"


def seed_demo_alliance(session: Session, *, instance_path: str, now: datetime, expiry_months: int) -> str:
    """Create the demo partners, keys, terminals, members and a little activity; returns a summary."""
    if session.scalar(select(Partner.id).where(Partner.code == DEMO_PARTNERS[0][0])) is not None:
        return "demo alliance already present; nothing changed"
    keys_folder = Path(instance_path) / DEMO_KEYS_FOLDER
    keys_folder.mkdir(parents=True, exist_ok=True)
    lines = ["demo alliance created:"]
    partner_ids = []
    for code, name, zone, cycle, issue_price, redemption_price, return_days in DEMO_PARTNERS:
        terms = PartnerTerms(
            currency="EUR", time_zone=zone, settlement_cycle=cycle, issue_price_per_point=issue_price,
            redemption_price_per_point=redemption_price, base_points_per_unit=Decimal("1"),
            amount_ladder=DEMO_LADDER, per_purchase_cap_points=5_000, per_member_day_cap_points=20_000,
            return_window_days=return_days,
        )
        partner_id = create_partner(session, code=code, name=name, terms=terms, now=now)
        terminal_id = add_terminal(session, partner_id=partner_id, code="till-1", now=now)
        for key_id, bound_terminal in ((f"{code}-key-1", None), (f"{code}-till-1", terminal_id)):
            public_key = _new_key_pair(keys_folder / f"{key_id}.pem")
            register_key(session, partner_id=partner_id, key_id=key_id, public_key=public_key,
                         terminal_id=bound_terminal, now=now)
        partner_ids.append(partner_id)
        lines.append(f"  partner {code} ({name}), keys {code}-key-1 and {code}-till-1 (bound to till-1)")
    members = [enrol_member(session, now=now) for _ in range(DEMO_MEMBER_COUNT)]
    for member in members:
        set_pin(session, card_number=member.card_number, pin=DEMO_PIN)
    _demo_activity(session, partner_ids, [member.member_id for member in members], now, expiry_months)
    lines += [f"  member {member.member_number}, card {member.card_number}, PIN {DEMO_PIN}" for member in members]
    lines.append(f"  private keys for trying the partner API: {keys_folder}")
    audit_log.append(session, actor="cli:seed-demo", action="demo.seed", subject="alliance", now=now,
                     after={"partners": [code for code, *_ in DEMO_PARTNERS], "members": len(members)})
    return "\n".join(lines)


def _demo_activity(session: Session, partner_ids: list[int], member_ids: list[int], now: datetime,
                   expiry_months: int) -> None:
    """Earn at every partner, redeem across partners, refund one purchase, leave one hold open.

    The Book Nook has a 14-day return window, so its points start out pending.
    """
    expires_at = add_months(now, expiry_months)
    return_windows = [timedelta(days=days) for *_, days in DEMO_PARTNERS]
    earns = []
    for index, member_id in enumerate(member_ids):
        for partner_offset, partner_id in enumerate(partner_ids):
            points = 100 * (index + 1) + 25 * partner_offset
            window = return_windows[partner_offset]
            earns.append(ledger.earn(session, member_id=member_id, partner_id=partner_id, points=points, now=now,
                                     expires_at=expires_at, pending_until=now + window if window else None))
    ledger.earn(session, member_id=member_ids[0], partner_id=None, points=500, now=now, expires_at=expires_at,
                memo="welcome bonus")
    captured = ledger.authorize_hold(session, member_id=member_ids[1], partner_id=partner_ids[2], points=250, now=now,
                                     ttl_s=900)
    ledger.capture_hold(session, hold_id=captured.hold_id, points=200, now=now)
    ledger.authorize_hold(session, member_id=member_ids[2], partner_id=partner_ids[0], points=120, now=now, ttl_s=900)
    ledger.clawback_earn(session, earn_transaction_id=earns[0].transaction_id, points=40,
                         now=now + timedelta(seconds=1))


def _new_key_pair(private_key_path: Path) -> bytes:
    """Write a new Ed25519 private key as PEM (mode 0600) and return the raw public key."""
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(private_key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# One console login per back-office role. Like the demo PINs, the password is public by
# design, which is why seeding refuses to run on a production hub.
DEMO_STAFF = (
    ("demo-admin", "Ada Admin", "admin"),
    ("demo-finance", "Fiona Finance", "finance"),
    ("demo-manager", "Paco Partner-Manager", "partner_manager"),
    ("demo-service", "Cass Customer-Service", "customer_service"),
)
DEMO_STAFF_PASSWORD = "alliance-demo-2026"


def refuse_in_production(environment: str) -> None:
    """The demo's public PINs and passwords never go onto a production hub."""
    if environment == "production":
        raise ConfigurationError("seed-demo creates public demo logins and PINs; it refuses to run when "
                                 "ALLIANCE_ENVIRONMENT=production")


def seed_demo_staff(session: Session, *, now: datetime, environment: str) -> list[str]:
    """Create the demo console logins that are missing; returns one line per login, for printing."""
    from alliance.services import staff_people, staff_users

    refuse_in_production(environment)
    existing = {user.username for user in staff_users.list_users(session)}
    lines = []
    for username, display_name, role in DEMO_STAFF:
        if username not in existing:
            # Each demo login is its own person, so two of them make the four eyes an approval needs.
            staff_people.add_person(session, handle=username, name=display_name, actor="cli:seed-demo", now=now)
            staff_users.add_user(session, username=username, display_name=display_name, roles=[role],
                                 person=username, password=DEMO_STAFF_PASSWORD, actor="cli:seed-demo", now=now)
        lines.append(f"  {role:<17} username {username:<13} password {DEMO_STAFF_PASSWORD}")
    return lines
