"""Helpers for web console tests: staff logins, a browser-like test client, a small settled alliance.

The console reads the wall clock (``alliance.console.security.utc_now``), so the
alliance built here is dated relative to now: two monthly-settling partners created a
hundred days ago, purchases and redemptions spread over the last three months, and
complaints, so that closing due cycles, the charts and the queues all have real rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from flask import Flask
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from alliance.extensions import HubState, hub_state
from alliance.models import AuditLogEntry, SettlementRun, SettlementStatement, StatementEvent
from alliance.services import complaints, ledger, staff_people, staff_users
from alliance.services.member_verification import set_pin
from alliance.services.members import enrol_member
from alliance.services.partners import add_terminal, create_partner, register_key
from alliance.services.purchases import PurchaseReport, report_purchase
from tests.factories import default_terms

PASSWORD = "a long test password"
CSRF_PATTERN = re.compile(r'name="csrf_token" value="([^"]+)"')
COOKIE_NAME = "alliance_console"


def add_staff(hub: HubState, username: str, *roles: str, password: str = PASSWORD,
              display_name: str | None = None, person: str | None = None) -> None:
    """Create a console login, as ``alliance staff add`` would.

    It belongs to ``person`` (who must exist), or else to a new person whose handle is
    the username, so that two logins count as two people unless a test says otherwise.
    """
    now = datetime.now(timezone.utc)
    with hub.unit_of_work() as uow:
        if person is None:
            person = username
            staff_people.add_person(uow.session, handle=person, name=display_name or username.title(),
                                    actor="cli:test", now=now)
        staff_users.add_user(uow.session, username=username, display_name=display_name or username.title(),
                             roles=list(roles), person=person, password=password, actor="cli:test", now=now)
        uow.commit()


class ConsoleClient:
    """One browser: a cookie jar, the login form and CSRF tokens read from the pages, as a person's browser would."""

    def __init__(self, app: Flask, *, remote_address: str = "127.0.0.1") -> None:
        self.app = app
        self.client = app.test_client()
        # The address the hub sees this browser's requests come from.
        self.client.environ_base["REMOTE_ADDR"] = remote_address

    def login(self, username: str, password: str = PASSWORD) -> TestResponse:
        """Fill in and send the login form."""
        form = self.client.get("/console/login")
        return self.client.post("/console/login", data={"csrf_token": self.token_in(form), "username": username,
                                                        "password": password})

    @staticmethod
    def token_in(response: TestResponse) -> str:
        found = CSRF_PATTERN.search(response.get_data(as_text=True))
        assert found, "the page has no form with a CSRF token"
        return found.group(1)

    def csrf(self) -> str:
        """The session's CSRF token, from a page's hidden field."""
        return self.token_in(self.client.get("/console/logout"))

    def get(self, path: str, **query: object) -> TestResponse:
        return self.client.get(path, query_string=query)

    def post(self, path: str, data: dict[str, object] | None = None, *, csrf: str | None = "session") -> TestResponse:
        """POST a form; ``csrf="session"`` sends the right token, None sends none, anything else sends that."""
        form = dict(data or {})
        if csrf == "session":
            form["csrf_token"] = self.csrf()
        elif csrf is not None:
            form["csrf_token"] = csrf
        return self.client.post(path, data=form)

    def cookie(self) -> str | None:
        found = self.client.get_cookie(COOKIE_NAME, path="/console")
        return found.value if found else None


def text_of(response: TestResponse) -> str:
    """The page's text with tags removed and whitespace collapsed, for reading like a person."""
    without_tags = re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))
    return re.sub(r"\s+", " ", without_tags.replace("&amp;", "&").replace("&#39;", "'").replace("&quot;", '"'))


def audit_actions(hub: HubState, *, actor_prefix: str = "console:") -> list[tuple[str, str, str]]:
    """(actor, action, subject) of the audit entries made by console users, in order."""
    with hub.unit_of_work() as uow:
        return [(row.actor, row.action, row.subject) for row in uow.session.scalars(
            select(AuditLogEntry).where(AuditLogEntry.actor.startswith(actor_prefix))
            .order_by(AuditLogEntry.sequence))]


def settlement_counts(hub: HubState) -> dict[str, int]:
    """Rows a finance action could add: runs, statements, statement events, audit entries."""
    with hub.unit_of_work() as uow:
        return {model.__tablename__: uow.session.scalar(select(func.count()).select_from(model)) or 0
                for model in (SettlementRun, SettlementStatement, StatementEvent, AuditLogEntry)}


def month_of(moment: datetime) -> str:
    return f"{moment:%Y-%m}"


@dataclass
class Alliance:
    """What ``build_alliance`` made, with the moments of each event for the tests' expectations."""

    now: datetime
    purchases: list[tuple[str, datetime, int, int]] = field(default_factory=list)  # partner, at, amount, points
    redemptions: list[tuple[str, datetime, int]] = field(default_factory=list)  # partner, at, points
    complaints: list[tuple[str, datetime, int]] = field(default_factory=list)  # partner, at, id


def build_alliance(hub: HubState) -> Alliance:
    """Two monthly partners in UTC with three months of purchases, redemptions and complaints."""
    now = datetime.now(timezone.utc)
    made = Alliance(now=now)
    created_at = now - timedelta(days=100)
    with hub.unit_of_work() as uow:
        session = uow.session
        partner_ids = {}
        for code in ("aurora", "fuel"):
            partner_ids[code] = create_partner(session, code=code, name=code.title() + " Ltd",
                                               terms=default_terms(time_zone="UTC", settlement_cycle="monthly"),
                                               now=created_at, status="active")
            add_terminal(session, partner_id=partner_ids[code], code="till-1", now=created_at)
            register_key(session, partner_id=partner_ids[code], key_id=f"{code}-key-1", public_key=bytes(range(32)),
                         now=created_at)
        members = [enrol_member(session, now=created_at) for _ in range(2)]
        for member in members:
            set_pin(session, card_number=member.card_number, pin="2468")
        for days_ago, amount_minor in ((70, 12_000), (70, 5_000), (40, 20_000), (10, 7_500), (2, 3_000)):
            at = now - timedelta(days=days_ago)
            purchase = report_purchase(session, partner_id=partner_ids["aurora"], now=at, expiry_months=24, report=(
                PurchaseReport(receipt_id=f"R-{days_ago}-{amount_minor}", card_number=members[0].card_number,
                               amount_minor=amount_minor, currency="EUR", purchased_at=at)))
            made.purchases.append(("aurora", at, amount_minor, purchase.points_partner + purchase.points_hub))
        for days_ago, points in ((40, 50), (10, 30)):
            at = now - timedelta(days=days_ago)
            hold = ledger.authorize_hold(session, member_id=members[0].member_id, partner_id=partner_ids["fuel"],
                                         points=points, now=at, ttl_s=900)
            ledger.capture_hold(session, hold_id=hold.hold_id, points=points, now=at)
            made.redemptions.append(("fuel", at, points))
        for days_ago, category in ((40, "points_missing"), (10, "staff_conduct"), (9, "other")):
            at = now - timedelta(days=days_ago)
            complaint = complaints.file_complaint(
                session, partner_code="aurora", category=category, description=f"complaint {days_ago} days ago",
                member_number=None, receipt_id=None, redemption_reference=None, now=at, actor="client:service-desk")
            made.complaints.append(("aurora", at, complaint.id))
        uow.commit()
    return made


def signed_in(app: Flask, username: str, *roles: str) -> ConsoleClient:
    """A console client signed in as a new user with ``roles``."""
    add_staff(hub_state(app), username, *roles)
    browser = ConsoleClient(app)
    response = browser.login(username)
    assert response.status_code == 303, response.get_data(as_text=True)
    return browser


def production_app(database_url: str, instance_path: Path) -> Flask:
    """A hub that believes it runs in production, with every secret production requires."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from alliance import create_app
    from alliance.config import Settings
    from alliance.domain.pii import generate_key_ring_config
    from alliance.domain.pin_hashing import generate_pin_key_ring_config
    from settlement.keys import private_key_pem

    settings = Settings(database_url=database_url, instance_path=str(instance_path), environment="production",
                        secret_key="production-secret-key", pii_keys=generate_key_ring_config(),
                        pin_keys=generate_pin_key_ring_config(),
                        statement_key=private_key_pem(Ed25519PrivateKey.generate()))
    return create_app(settings)
