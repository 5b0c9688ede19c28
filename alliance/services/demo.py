"""The demo alliance: four partners (one the operator) and five months of their life, so every console page has
something real."""

from __future__ import annotations

import os
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from alliance.domain import webhooks as webhook_rules
from alliance.domain.errors import ConfigurationError
from alliance.domain.grading import GradingConfig
from alliance.domain.pii import KeyRing
from alliance.models import Partner
from alliance.services import audit_log, webhooks
from alliance.services.demo_history import ADMIN, DEMO_PIN, HISTORY_DAYS, OPERATOR, DemoHistory, DemoParty
from alliance.services.goodwill import GoodwillPolicy
from alliance.services.partners import PartnerTerms, add_terminal, create_partner, register_key
from settlement.api import StatementSigner

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
    # The operator partner: it supplies bill credit and issues no points of its own.
    (OPERATOR, "Nova Mobile", "Europe/Rome", "monthly", Decimal("0.0100"), Decimal("0.0080"), 0),
)
# How long ago the demo alliance opened: its members, purchases, redemptions, statements,
# payments, complaints and grades are spread over these days, ending at the seeding moment.
DEMO_HISTORY = timedelta(days=HISTORY_DAYS)
# How many members the printed summary names with their card (the first is the guides' card).
DEMO_MEMBERS_SHOWN = 5
SEED_ACTOR = "cli:seed-demo"


def seed_demo_alliance(session: Session, *, instance_path: str, now: datetime, expiry_months: int,
                       key_ring: KeyRing | None = None, signer: StatementSigner | None = None,
                       grading_config: GradingConfig | None = None, time_zone: str = "UTC",
                       goodwill_policy: GoodwillPolicy | None = None, webhook_url: str | None = None) -> str:
    """Create the demo partners, keys and terminals and play five months of their life up to ``now``.

    Returns a summary to print. With ``key_ring`` the members have a name, phone and
    e-mail; with ``signer`` the cycles close into statements that are invoiced, paid,
    reconciled and disputed; with ``grading_config`` every ended month is graded; with
    ``webhook_url`` every partner has a webhook endpoint there from the first day, and the
    operator a member-messaging endpoint beside it (``demo_webhook_endpoints``), so the
    history's events wait in the outbox for ``alliance webhooks deliver``. All of it
    happens in ``session``, so a failure leaves nothing behind; a second call finds the
    demo present and changes nothing.
    """
    if webhook_url is not None:
        webhook_rules.check_endpoint_url(webhook_url)
    if session.scalar(select(Partner.id).where(Partner.code == DEMO_PARTNERS[0][0])) is not None:
        return "demo alliance already present; nothing changed"
    started_at = datetime.combine((now - DEMO_HISTORY).date(), time(6), tzinfo=timezone.utc)
    keys_folder = Path(instance_path) / DEMO_KEYS_FOLDER
    keys_folder.mkdir(parents=True, exist_ok=True)
    lines = ["demo alliance created:"]
    parties = []
    for code, name, zone, cycle, issue_price, redemption_price, return_days in DEMO_PARTNERS:
        terms = PartnerTerms(
            currency="EUR", time_zone=zone, settlement_cycle=cycle, issue_price_per_point=issue_price,
            redemption_price_per_point=redemption_price, base_points_per_unit=Decimal("1"),
            amount_ladder=DEMO_LADDER, per_purchase_cap_points=5_000, per_member_day_cap_points=20_000,
            return_window_days=return_days,
        )
        partner_id = create_partner(session, code=code, name=name, terms=terms, now=started_at)
        terminal_id = add_terminal(session, partner_id=partner_id, code="till-1", now=started_at)
        for key_id, bound_terminal in ((f"{code}-key-1", None), (f"{code}-till-1", terminal_id)):
            public_key = _new_key_pair(keys_folder / f"{key_id}.pem")
            register_key(session, partner_id=partner_id, key_id=key_id, public_key=public_key,
                         terminal_id=bound_terminal, now=started_at)
        parties.append(DemoParty(partner_id=partner_id, code=code, terminal_id=terminal_id, time_zone=zone))
        lines.append(f"  partner {code} ({name}, settles {cycle}"
                     + (", the operator: supplies bill credit" if code == OPERATOR else "")
                     + f"), keys {code}-key-1 and {code}-till-1 (bound to till-1)")
    if webhook_url is not None:
        lines += demo_webhook_endpoints(session, webhook_url, now=started_at)
    history = DemoHistory(session, parties=parties, start=started_at, end=now, expiry_months=expiry_months,
                          key_ring=key_ring, signer=signer, grading_config=grading_config, time_zone=time_zone,
                          goodwill_policy=goodwill_policy)
    seeded = history.play()
    lines += [f"  member {member.member_number}, card {member.card_number}, PIN {DEMO_PIN}"
              for member in seeded.members[:DEMO_MEMBERS_SHOWN]]
    hidden = len(seeded.members) - DEMO_MEMBERS_SHOWN
    if hidden > 0:
        lines.append(f"  ... and {hidden} more members, each with PIN {DEMO_PIN}"
                     + (" and a made-up name, phone and e-mail" if key_ring is not None else ""))
    lines.append(f"  {DEMO_HISTORY.days} days of history, from {started_at.date().isoformat()} to "
                 f"{now.date().isoformat()}:")
    lines += [f"    {seeded.counts[kind]:>5} {kind}" for kind in SUMMARY_KINDS if kind in seeded.counts]
    if signer is not None:
        lines.append(f"  settlement: {seeded.counts['statements']} cycles closed into signed statements")
    lines.append(f"  private keys for trying the partner API: {keys_folder}")
    audit_log.append(session, actor=SEED_ACTOR, action="demo.seed", subject="alliance", now=now,
                     after={"partners": [code for code, *_ in DEMO_PARTNERS], "members": len(seeded.members),
                            "history_days": DEMO_HISTORY.days, "counts": dict(sorted(seeded.counts.items()))})
    return "\n".join(lines)


def demo_webhook_endpoints(session: Session, url: str, *, now: datetime) -> list[str]:
    """Register, as the demo's admin, an endpoint at ``url`` for every demo partner, subscribed to every partner
    event type, and the operator's member-messaging endpoint (every member event type) at ``url`` with ``/members``
    added to its path (a partner's endpoints have distinct URLs); returns the summary's lines."""
    for code, *_ in DEMO_PARTNERS:
        webhooks.register_endpoint(session, partner=code, url=url, event_types=webhook_rules.PARTNER_EVENT_TYPES,
                                   actor=ADMIN, now=now, description="Demo: every partner event")
    member_url = member_messages_url(url)
    webhooks.register_endpoint(session, partner=OPERATOR, url=member_url, audience=webhook_rules.Audience.MEMBER.value,
                               event_types=webhook_rules.MEMBER_EVENT_TYPES, actor=ADMIN, now=now,
                               description="Demo: every member message")
    return [f"  webhooks: every partner's events to {url}, member messages ({OPERATOR}) to {member_url}; "
            "'alliance webhooks deliver' sends them"]


def member_messages_url(url: str) -> str:
    """Where the demo's member messages go: ``url`` with ``/members`` added to its path."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/members"))


# The order the summary lists what the history made.
SUMMARY_KINDS = (
    "members", "purchases", "purchase refunds", "redemptions", "redemptions voided", "redemptions left to expire",
    "redemption refunds", "redemptions still held", "complaints", "statements", "statements invoiced", "payments",
    "adjustments", "disputes", "reconciliations", "graded periods", "grade alerts", "alerts acknowledged",
    "goodwill credits", "goodwill credits awaiting approval", "behaviour events", "behaviour points",
    "campaigns run", "campaign awards", "campaign points", "campaign budgets spent", "campaigns stopped",
    "campaigns scheduled", "tier changes", "tier policy versions proposed", "tier policy versions scheduled",
    "rewards listed", "voucher codes uploaded", "reward orders", "voucher orders", "voucher codes given",
    "bill credit orders", "reward orders fulfilled", "reward orders failed", "reward orders returned",
    "reward orders expired", "reward orders awaiting fulfilment", "coupon series", "coupons issued",
    "coupons used at tills", "coupon points",
)


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
    ("demo-risk", "Rita Risk-Reviewer", "risk"),
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
