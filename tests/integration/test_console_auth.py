"""Console login, sessions and CSRF: who gets in, for how long, and what a forged form gets."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from alliance.console import security
from alliance.extensions import hub_state
from alliance.models import StaffSession, StaffUser
from alliance.models.staff import StaffLoginThrottle
from alliance.services import login_throttle, staff_users
from tests.back_office_support import other_hub
from tests.console_support import (
    COOKIE_NAME,
    PASSWORD,
    ConsoleClient,
    add_staff,
    audit_actions,
    production_app,
    signed_in,
    text_of,
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


def test_the_session_is_opened_only_on_the_console_s_own_paths(app, monkeypatch):
    opened: list[str] = []
    opening = security.SecureCookieSessionInterface.open_session

    def counting(self, app_, request):  # type: ignore[no-untyped-def]
        opened.append(request.path)
        return opening(self, app_, request)

    monkeypatch.setattr(security.SecureCookieSessionInterface, "open_session", counting)
    add_staff(hub_state(app), "fiona", "finance")
    browser = ConsoleClient(app)
    browser.login("fiona")
    assert browser.get("/console/").status_code == 200
    # The cookie's path is /console: a browser sends it to /console and below, nowhere else.
    for path in ("/healthz", "/partner/v1/purchases", "/consoles", "/back-office/v1/partners"):
        browser.get(path)
    assert opened and all(path == "/console" or path.startswith("/console/") for path in opened)
    assert "/healthz" not in opened and "/consoles" not in opened


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


ATTACKER, OWNER = "198.51.100.66", "203.0.113.7"
ERROR_PATTERN = re.compile(r'<p class="flash error" role="alert">(.*?)</p>', re.S)


def refusal_of(response) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """The status and the words of a refused login, as the page shows them."""
    found = ERROR_PATTERN.search(response.get_data(as_text=True))
    return response.status_code, found.group(1) if found else ""


def lock_out_pair(app, username: str, address: str) -> None:  # type: ignore[no-untyped-def]
    """Enough wrong passwords for ``username`` from ``address`` for that pair to back off."""
    browser = ConsoleClient(app, remote_address=address)
    for _ in range(login_throttle.PAIR_FREE_FAILURES):
        assert browser.login(username, "a wrong guess").status_code == 401


def test_every_refusal_has_the_same_words_and_status_whatever_its_reason(app):
    hub = hub_state(app)
    add_staff(hub, "fiona", "finance")
    add_staff(hub, "felix", "finance")
    add_staff(hub, "dora", "finance")
    with hub.unit_of_work() as uow:
        staff_users.disable_user(uow.session, username="dora", actor="cli:test", now=datetime.now(timezone.utc))
        uow.commit()
    lock_out_pair(app, "felix", ATTACKER)
    browser = ConsoleClient(app, remote_address=ATTACKER)
    refusals = {
        "unknown username": refusal_of(browser.login("nobody", PASSWORD)),
        "wrong password": refusal_of(browser.login("fiona", "not the password")),
        "disabled, right password": refusal_of(browser.login("dora", PASSWORD)),
        "backing off, right password": refusal_of(browser.login("felix", PASSWORD)),
    }
    assert set(refusals.values()) == {(401, staff_users.REFUSAL)}, refusals
    assert browser.get("/console/").status_code == 302


def test_every_refusal_costs_one_password_hash_verification(app, monkeypatch):
    hub = hub_state(app)
    add_staff(hub, "fiona", "finance")
    add_staff(hub, "dora", "finance")
    with hub.unit_of_work() as uow:
        staff_users.disable_user(uow.session, username="dora", actor="cli:test", now=datetime.now(timezone.utc))
        uow.commit()
    lock_out_pair(app, "fiona", ATTACKER)
    verifications: list[str] = []
    real_check = staff_users.check_password_hash

    def counted(stored_hash: str, password: str) -> bool:
        verifications.append(stored_hash)
        return real_check(stored_hash, password)

    monkeypatch.setattr(staff_users, "check_password_hash", counted)
    attacker, owner = ConsoleClient(app, remote_address=ATTACKER), ConsoleClient(app, remote_address=OWNER)
    cases = {"unknown username": (owner, "nobody", PASSWORD), "wrong password": (owner, "fiona", "wrong guess"),
             "disabled": (owner, "dora", PASSWORD), "backing off": (attacker, "fiona", PASSWORD),
             "signed in": (owner, "fiona", PASSWORD)}
    counts = {}
    for case, (browser, username, password) in cases.items():
        before = len(verifications)
        browser.login(username, password)
        counts[case] = len(verifications) - before
    assert counts == dict.fromkeys(cases, 1)
    # The unknown username is checked against a scrypt hash like every real one, so it costs as much.
    assert all(stored.startswith("scrypt:") for stored in verifications)


def test_an_attackers_wrong_passwords_from_one_address_never_lock_the_owner_out_from_another(app, monkeypatch):
    hub = hub_state(app)
    clock = Clock(monkeypatch)
    add_staff(hub, "fiona", "finance")
    attacker = ConsoleClient(app, remote_address=ATTACKER)
    for _ in range(login_throttle.PAIR_FREE_FAILURES + 3):
        assert attacker.login("fiona", "guess").status_code == 401
    assert ("console:login", "staff.lockout", "staff:fiona") in audit_actions(hub)
    owner = ConsoleClient(app, remote_address=OWNER)
    assert owner.login("fiona").status_code == 303
    # The guessing address backs off, even with the right password ...
    assert refusal_of(attacker.login("fiona", PASSWORD)) == (401, staff_users.REFUSAL)
    # ... for at most the longest backoff, after which it is heard again.
    clock.offset = login_throttle.MAX_BACKOFF + timedelta(seconds=1)
    assert attacker.login("fiona", PASSWORD).status_code == 303


def test_setting_a_password_lifts_every_backoff_of_that_username(app):
    hub = hub_state(app)
    add_staff(hub, "fiona", "finance")
    lock_out_pair(app, "fiona", ATTACKER)
    with hub.unit_of_work() as uow:
        staff_users.set_password(uow.session, username="fiona", password=PASSWORD + "!", actor="cli:test",
                                 now=datetime.now(timezone.utc))
        uow.commit()
    assert ConsoleClient(app, remote_address=ATTACKER).login("fiona", PASSWORD + "!").status_code == 303


@pytest.mark.parametrize("addresses", [
    [ATTACKER] * 20,
    [f"2001:db8:7:1::{number + 1:x}" for number in range(20)],  # one subscriber's IPv6 /64
], ids=["one IPv4 address", "one IPv6 /64"])
def test_password_spraying_from_one_source_is_throttled(app, addresses):
    hub = hub_state(app)
    add_staff(hub, "fiona", "finance")
    for number, address in enumerate(addresses):
        sprayed = ConsoleClient(app, remote_address=address).login(f"user-{number:02d}", "Summer2026!")
        assert refusal_of(sprayed) == (401, staff_users.REFUSAL)
    # The sprayed source now backs off for every username, even with the right password ...
    assert ConsoleClient(app, remote_address=addresses[-1]).login("fiona").status_code == 401
    # ... and the owner, elsewhere, is not held up by it.
    assert ConsoleClient(app, remote_address=OWNER).login("fiona").status_code == 303


def test_the_throttle_lives_in_the_database_so_every_worker_process_shares_it(app, tmp_path):
    hub = hub_state(app)
    add_staff(hub, "fiona", "finance")
    lock_out_pair(app, "fiona", ATTACKER)
    with other_hub(hub, tmp_path / "second-worker") as second_worker:
        assert ConsoleClient(second_worker, remote_address=ATTACKER).login("fiona").status_code == 401
        assert ConsoleClient(second_worker, remote_address=OWNER).login("fiona").status_code == 303


def test_the_throttle_table_forgets_quiet_sources_so_it_cannot_grow_without_bound(app, monkeypatch):
    hub = hub_state(app)
    clock = Clock(monkeypatch)
    for number in range(30):
        ConsoleClient(app, remote_address=f"192.0.2.{number + 1}").login(f"user-{number}", "guess")
    assert throttle_rows(hub) == 60  # a (username, address) row and an address row each
    clock.offset = login_throttle.THROTTLE_MEMORY + timedelta(minutes=1)
    ConsoleClient(app, remote_address=OWNER).login("someone", "guess")
    assert throttle_rows(hub) == 2


def throttle_rows(hub) -> int:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(StaffLoginThrottle)) or 0


def test_a_disabled_user_cannot_log_in_and_is_logged_out_at_once(app):
    hub = hub_state(app)
    browser = signed_in(app, "fiona", "finance")
    assert browser.get("/console/finance/cycles").status_code == 200
    with hub.unit_of_work() as uow:
        staff_users.disable_user(uow.session, username="fiona", actor="cli:test", now=datetime.now(timezone.utc))
        uow.commit()
    assert browser.get("/console/finance/cycles").headers["Location"].startswith("/console/login")
    assert refusal_of(ConsoleClient(app).login("fiona")) == (401, staff_users.REFUSAL)


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
            staff_users.add_user(uow.session, username="fiona", display_name="F", roles=["finance"], person="fiona",
                                 password="short", actor="t", now=datetime.now(timezone.utc))
        with pytest.raises(staff_users.ValidationFailed):
            staff_users.add_user(uow.session, username="fiona", display_name="F", roles=["root"], person="fiona",
                                 password=PASSWORD, actor="t", now=datetime.now(timezone.utc))


@pytest.mark.parametrize("proxy_hops", [0, 1])
def test_behind_a_trusted_proxy_the_throttle_sees_each_clients_own_address(app, tmp_path, proxy_hops):
    hub = hub_state(app)
    add_staff(hub, "fiona", "finance")
    with other_hub(hub, tmp_path / "proxied", proxy_hops=proxy_hops) as proxied:
        # Every browser reaches the hub through one load balancer at 10.0.0.2.
        attacker = ConsoleClient(proxied, remote_address="10.0.0.2")
        attacker.client.environ_base["HTTP_X_FORWARDED_FOR"] = "198.51.100.7"
        for _ in range(login_throttle.PAIR_FREE_FAILURES + 1):
            assert attacker.login("fiona", "guess").status_code == 401
        owner = ConsoleClient(proxied, remote_address="10.0.0.2")
        owner.client.environ_base["HTTP_X_FORWARDED_FOR"] = "203.0.113.5"
        # Without ALLIANCE_PROXY_HOPS both share the proxy's address, so the owner waits
        # out the attacker's backoff; with it, each is judged by its own address.
        assert owner.login("fiona").status_code == (303 if proxy_hops else 401)
