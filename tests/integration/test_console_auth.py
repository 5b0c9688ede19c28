"""Console login, sessions and CSRF: who gets in, for how long, and what a forged form gets."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from alliance.console import security
from alliance.extensions import hub_state
from alliance.models import StaffSession, StaffUser
from alliance.services import staff_users
from tests.console_support import (
    COOKIE_NAME, PASSWORD, ConsoleClient, add_staff, audit_actions, production_app, signed_in, text_of,
)


class Clock:
    """The console's clock, moved forward by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = timedelta(0)
        monkeypatch.setattr(security, "utc_now", self.now)

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset


def test_login_opens_the_console_with_a_hardened_cookie_and_is_audited(app):
    hub = hub_state(app)
    add_staff(hub, "fiona", "finance", display_name="Fiona Finance")
    browser = ConsoleClient(app)
    assert browser.get("/console/finance/cycles").headers["Location"].startswith("/console/login?next=")
    response = browser.login("fiona")
    assert response.status_code == 303 and response.headers["Location"] == "/console/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # a test hub is not production
    home = browser.get("/console/")
    assert home.status_code == 200
    assert "Fiona Finance (fiona)" in text_of(home) and "finance" in text_of(home)
    assert home.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in home.headers["Content-Security-Policy"]
    assert audit_actions(hub) == [("console:fiona", "staff.login", "staff:fiona")]


def test_login_returns_to_the_page_asked_for_but_never_to_another_site(app):
    add_staff(hub_state(app), "fiona", "finance")
    browser = ConsoleClient(app)
    form = browser.client.get("/console/login?next=/console/finance/position")
    response = browser.client.post("/console/login", data={"csrf_token": browser.token_in(form), "username": "fiona",
                                                           "password": PASSWORD, "next": "/console/finance/position"})
    assert response.headers["Location"] == "/console/finance/position"
    other = ConsoleClient(app)
    form = other.client.get("/console/login")
    response = other.client.post("/console/login", data={"csrf_token": other.token_in(form), "username": "fiona",
                                                         "password": PASSWORD, "next": "//evil.example/console"})
    assert response.headers["Location"] == "/console/"


def test_a_wrong_password_or_unknown_user_is_refused_with_the_same_words(app):
    add_staff(hub_state(app), "fiona", "finance")
    browser = ConsoleClient(app)
    wrong = browser.login("fiona", "not the password")
    unknown = browser.login("nobody", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert "unknown username or wrong password" in text_of(wrong)
    assert "unknown username or wrong password" in text_of(unknown)
    assert browser.get("/console/").status_code == 302


def test_five_wrong_passwords_lock_the_account_for_fifteen_minutes(app, monkeypatch):
    hub = hub_state(app)
    clock = Clock(monkeypatch)
    add_staff(hub, "fiona", "finance")
    browser = ConsoleClient(app)
    for _ in range(staff_users.MAX_FAILED_LOGINS):
        assert browser.login("fiona", "guess").status_code == 401
    locked = browser.login("fiona", PASSWORD)
    assert locked.status_code == 401 and "locked until" in text_of(locked)
    assert ("console:login", "staff.lockout", "staff:fiona") in audit_actions(hub)
    clock.offset = staff_users.LOCKOUT + timedelta(seconds=1)
    assert browser.login("fiona", PASSWORD).status_code == 303
    with hub.unit_of_work() as uow:
        user = uow.session.scalar(select(StaffUser).where(StaffUser.username == "fiona"))
        assert user.failed_logins == 0 and user.locked_until is None


def test_a_disabled_user_cannot_log_in_and_is_logged_out_at_once(app):
    hub = hub_state(app)
    browser = signed_in(app, "fiona", "finance")
    assert browser.get("/console/finance/cycles").status_code == 200
    with hub.unit_of_work() as uow:
        staff_users.disable_user(uow.session, username="fiona", actor="cli:test", now=datetime.now(timezone.utc))
        uow.commit()
    assert browser.get("/console/finance/cycles").headers["Location"].startswith("/console/login")
    refused = ConsoleClient(app).login("fiona")
    assert refused.status_code == 401 and "disabled" in text_of(refused)


def test_roles_are_read_afresh_on_every_request(app):
    hub = hub_state(app)
    browser = signed_in(app, "fiona", "finance")
    assert browser.get("/console/finance/cycles").status_code == 200
    with hub.unit_of_work() as uow:
        uow.session.execute(StaffUser.__table__.update().where(StaffUser.username == "fiona")
                            .values(roles="customer_service"))
        uow.commit()
    assert browser.get("/console/finance/cycles").status_code == 403


def test_logout_ends_the_session_on_the_server_so_a_copied_cookie_is_dead(app):
    hub = hub_state(app)
    browser = signed_in(app, "fiona", "finance")
    stolen = browser.cookie()
    response = browser.post("/console/logout")
    assert response.status_code == 303 and response.headers["Location"].startswith("/console/login")
    assert browser.get("/console/").status_code == 302
    browser.client.set_cookie(COOKIE_NAME, stolen, path="/console")
    assert browser.get("/console/").headers["Location"].startswith("/console/login")
    with hub.unit_of_work() as uow:
        assert uow.session.scalars(select(StaffSession.ended_at)).all()[0] is not None
    assert [action for _, action, _ in audit_actions(hub)] == ["staff.login", "staff.logout"]


def test_logout_without_the_csrf_token_is_refused_and_keeps_the_session(app):
    browser = signed_in(app, "fiona", "finance")
    refused = browser.post("/console/logout", csrf=None)
    assert refused.status_code == 400 and "did not come from the console" in text_of(refused)
    assert browser.get("/console/").status_code == 200


def test_login_form_needs_its_csrf_token(app):
    add_staff(hub_state(app), "fiona", "finance")
    browser = ConsoleClient(app)
    browser.get("/console/login")
    forged = browser.client.post("/console/login", data={"username": "fiona", "password": PASSWORD})
    assert forged.status_code == 400
    assert browser.get("/console/").status_code == 302


def test_an_idle_session_times_out(app, monkeypatch):
    clock = Clock(monkeypatch)
    browser = signed_in(app, "fiona", "finance")
    clock.offset = staff_users.IDLE_TIMEOUT - timedelta(minutes=1)
    assert browser.get("/console/").status_code == 200
    clock.offset += staff_users.IDLE_TIMEOUT + timedelta(seconds=1)
    assert browser.get("/console/").headers["Location"].startswith("/console/login")


def test_a_busy_session_still_ends_at_its_absolute_lifetime(app, monkeypatch):
    clock = Clock(monkeypatch)
    browser = signed_in(app, "fiona", "finance")
    step = staff_users.IDLE_TIMEOUT - timedelta(minutes=5)
    while clock.offset + step < staff_users.SESSION_LIFETIME:
        clock.offset += step
        assert browser.get("/console/").status_code == 200
    clock.offset = staff_users.SESSION_LIFETIME + timedelta(seconds=1)
    assert browser.get("/console/").headers["Location"].startswith("/console/login")


def test_the_session_cookie_is_secure_in_production(sqlite_url, tmp_path):
    app = production_app(sqlite_url, tmp_path / "production")
    try:
        add_staff(hub_state(app), "fiona", "finance")
        response = ConsoleClient(app).login("fiona")
        assert response.status_code == 303
        assert "Secure" in response.headers["Set-Cookie"]
    finally:
        hub_state(app).engine.dispose()


def test_passwords_are_stored_only_as_salted_scrypt_hashes(app):
    hub = hub_state(app)
    add_staff(hub, "fiona", "finance")
    add_staff(hub, "felix", "finance")
    with hub.unit_of_work() as uow:
        hashes = uow.session.scalars(select(StaffUser.password_hash).order_by(StaffUser.username)).all()
    assert all(stored.startswith("scrypt:") and PASSWORD not in stored for stored in hashes)
    assert hashes[0] != hashes[1]  # same password, different salts


def test_short_passwords_and_unknown_roles_are_refused(app):
    hub = hub_state(app)
    with hub.unit_of_work() as uow:
        with pytest.raises(staff_users.ValidationFailed):
            staff_users.add_user(uow.session, username="fiona", display_name="F", roles=["finance"], password="short",
                                 actor="t", now=datetime.now(timezone.utc))
        with pytest.raises(staff_users.ValidationFailed):
            staff_users.add_user(uow.session, username="fiona", display_name="F", roles=["root"], password=PASSWORD,
                                 actor="t", now=datetime.now(timezone.utc))
