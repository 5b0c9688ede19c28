"""Administration pages: staff logins and roles, staff people, the audit trail with its verification, CSV,
refusals that change nothing, and generated passwords that appear once and never in a URL."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from alliance.domain.errors import InvalidState
from alliance.extensions import hub_state
from alliance.models import AuditLogEntry, StaffUser
from alliance.models.staff import StaffPerson
from alliance.services import audit_checkpoints, staff_users
from tests.audit_support import tamper
from tests.console_support import PASSWORD, ConsoleClient, add_staff, audit_actions, signed_in, text_of

STAFF = "/console/admin/staff"
AUDIT = "/console/admin/audit"
PASSWORD_SHOWN = re.compile(r'data-testid="generated-password">([^<]+)<')


@pytest.fixture
def admin(app):  # type: ignore[no-untyped-def]
    """Ada, an administrator, signed in; Fiona, a finance login, exists beside her."""
    add_staff(hub_state(app), "fiona", "finance", display_name="Fiona Martin")
    return signed_in(app, "ada", "admin")


def snapshot(hub) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Everything an admin change could touch: logins as they are, people, and the audit log's size."""
    with hub.unit_of_work() as uow:
        return {
            "users": sorted((user.username, user.roles, user.status, user.password_hash)
                            for user in uow.session.scalars(select(StaffUser))),
            "people": sorted(uow.session.scalars(select(StaffPerson.handle))),
            "audit": uow.session.scalar(select(func.count()).select_from(AuditLogEntry)),
        }


def audit_entry(hub, action: str) -> AuditLogEntry:  # type: ignore[no-untyped-def]
    """The newest audit entry with ``action``."""
    with hub.unit_of_work() as uow:
        entry = uow.session.scalars(select(AuditLogEntry).where(AuditLogEntry.action == action)
                                    .order_by(AuditLogEntry.sequence.desc())).first()
        assert entry is not None, f"no {action} entry"
        uow.session.expunge(entry)
        return entry


def user_row(hub, username: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        user = uow.session.scalars(select(StaffUser).where(StaffUser.username == username)).one()
        return user.roles, user.status


def add_form(**fields: object) -> dict[str, object]:
    form: dict[str, object] = {"username": "cass", "display_name": "Cass Service", "person": "+new",
                               "new_handle": "cass", "new_name": "Cass Sørensen", "roles": ["customer_service"]}
    form.update(fields)
    return form


# Staff and roles.


def test_staff_page_lists_logins_with_their_people_roles_status_and_password_age(app, admin):
    page = admin.get(STAFF)
    assert page.status_code == 200
    shown = text_of(page)
    assert "Console logins (2;" in shown
    assert "fiona Fiona Martin Fiona Martin (fiona) finance active never set today" in shown
    # Ada signed in a moment ago: her last login is a moment in the viewer's zone, named.
    assert re.search(r"ada Ada Ada \(ada\) administrator active \d{4}-\d\d-\d\d \d\d:\d\d \w+ set today", shown)
    html = page.get_data(as_text=True)
    assert "<caption>Console logins" in html and "<caption>Staff people" in html
    assert 'data-label="Last login"' in html and '<th scope="row"><a href="/console/admin/staff/fiona">' in html
    # Each role is offered with what it lets a login do.
    assert "Customer service: members, cards and PINs" in shown
    # The people behind the logins, so that four eyes can be seen to be two people.
    assert "fiona Fiona Martin fiona none" in shown and "ada Ada ada none" in shown


def test_staff_list_sorts_by_each_column_both_ways(app, admin):
    def order(**query: str) -> list[str]:
        html = admin.get(STAFF, **query).get_data(as_text=True)
        return re.findall(r'<th scope="row"><a href="/console/admin/staff/([a-z]+)">', html)

    assert order() == ["ada", "fiona"]
    assert order(sort="username", order="desc") == ["fiona", "ada"]
    assert order(sort="last_login", order="asc") == ["fiona", "ada"]  # never signed in comes first
    assert order(sort="last_login", order="desc") == ["ada", "fiona"]
    page = admin.get(STAFF, sort="username", order="desc").get_data(as_text=True)
    assert 'aria-sort="descending"' in page
    assert admin.get(STAFF, sort="password_hash").status_code == 400


def test_admin_pages_need_the_admin_role(app, admin):
    finance = ConsoleClient(app)
    assert finance.login("fiona").status_code == 303
    before = snapshot(hub_state(app))
    for path in (STAFF, f"{STAFF}/ada", AUDIT, f"{AUDIT}.csv"):
        assert finance.get(path).status_code == 403, path
        assert ConsoleClient(app).get(path).headers["Location"].startswith("/console/login"), path
    assert "This page needs the role admin" in text_of(finance.get(STAFF))
    for path, form in ((STAFF, add_form()), (f"{STAFF}/ada/roles", {"roles": ["finance"], "reason": "x"}),
                       (f"{STAFF}/ada/disable", {"confirm": "yes", "reason": "x"}), (f"{STAFF}/ada/enable", {}),
                       (f"{STAFF}/ada/password", {"confirm": "yes", "reason": "x"}), (f"{AUDIT}/verification", {})):
        assert finance.post(path, form).status_code == 403, path
    assert snapshot(hub_state(app)) == before
    # The navigation offers the pages to the admin only.
    assert "Audit trail" in text_of(admin.get("/console/")) and "Audit trail" not in text_of(finance.get("/console/"))


def test_adding_a_login_of_a_new_person_shows_its_password_once_and_never_in_a_url(app, admin):
    hub = hub_state(app)
    response = admin.post(STAFF, add_form())
    assert response.status_code == 200 and "Location" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    password = PASSWORD_SHOWN.search(response.get_data(as_text=True)).group(1)
    assert len(password) >= 20
    links = re.findall(r'(?:href|action)="([^"]*)"', response.get_data(as_text=True))
    assert links and not any(password in link for link in links)
    shown = text_of(response)
    assert "Login added" in shown and "shown once" in shown and "Cass Sørensen (cass)" in shown
    assert "customer service" in shown
    # Nowhere but on that page: not in the audit log, not in the next page's flash, not in the cookie.
    with hub.unit_of_work() as uow:
        assert all(password not in f"{entry.before} {entry.after}"
                   for entry in uow.session.scalars(select(AuditLogEntry)))
    assert password not in admin.get(STAFF).get_data(as_text=True)
    assert password not in (admin.cookie() or "")
    assert ("console:ada", "staff.person.add", "person:cass") in audit_actions(hub)
    assert ("console:ada", "staff.add", "staff:cass") in audit_actions(hub)
    assert audit_entry(hub, "staff.add").after == {"display_name": "Cass Service", "roles": ["customer_service"],
                                                   "status": "active", "person": "cass"}
    assert ConsoleClient(app).login("cass", password).status_code == 303
    assert "cass Cass Service Cass Sørensen (cass) customer service active" in text_of(admin.get(STAFF))


def test_adding_a_login_of_an_existing_person(app, admin):
    hub = hub_state(app)
    response = admin.post(STAFF, add_form(username="fiona-admin", display_name="Fiona (admin)", person="fiona",
                                          roles=["admin", "finance"]))
    assert response.status_code == 200
    assert "Fiona Martin (fiona)" in text_of(response)
    assert user_row(hub, "fiona-admin") == ("admin finance", "active")
    # Two logins, one person.
    assert "fiona Fiona Martin fiona , fiona-admin none" in text_of(admin.get(STAFF))


@pytest.mark.parametrize(("fields", "status", "message"), [
    ({"username": "Bad Name!"}, 303, "a username is 2-64 lowercase letters"),
    ({"username": "fiona", "person": "fiona"}, 303, "staff user 'fiona' already exists"),
    ({"new_handle": "fiona"}, 303, "staff person 'fiona' already exists"),
    ({"person": "nobody"}, 303, "no staff person 'nobody'"),
    ({"roles": []}, 400, "Tick at least one role"),
    ({"roles": ["root"]}, 400, "There is no role root"),
    ({"new_handle": ""}, 400, "The form needs new handle"),
    ({"display_name": ""}, 400, "The form needs display name"),
])
def test_adding_a_login_refuses_bad_input_and_changes_nothing(app, admin, fields, status, message):
    hub = hub_state(app)
    before = snapshot(hub)
    response = admin.post(STAFF, add_form(**fields))
    assert response.status_code == status
    shown = text_of(admin.get(STAFF)) if status == 303 else text_of(response)
    assert message in shown
    assert snapshot(hub) == before


def test_forms_without_the_csrf_token_change_nothing(app, admin):
    hub = hub_state(app)
    before = snapshot(hub)
    for path, form in ((STAFF, add_form()), (f"{STAFF}/fiona/roles", {"roles": ["admin"], "reason": "x"}),
                       (f"{STAFF}/fiona/disable", {"confirm": "yes", "reason": "x"}),
                       (f"{STAFF}/fiona/password", {"confirm": "yes", "reason": "x"}), (f"{AUDIT}/verification", {})):
        assert admin.post(path, form, csrf=None).status_code == 400, path
        assert admin.post(path, form, csrf="forged").status_code == 400, path
    assert snapshot(hub) == before


def test_a_login_page_shows_it_and_an_unknown_login_is_a_404(app, admin):
    page = admin.get(f"{STAFF}/fiona")
    shown = text_of(page)
    assert page.status_code == 200
    assert "Login fiona" in shown and "Fiona Martin (fiona)" in shown and "Last login never" in shown
    assert "Recent changes to this login" in shown and "login added" in shown and "cli:test" in shown
    assert "Disable login" in shown and "Set a new password" in shown
    assert admin.get(f"{STAFF}/nobody").status_code == 404
    # Her own page does not offer Ada to disable herself.
    own = text_of(admin.get(f"{STAFF}/ada"))
    assert "You cannot disable your own login" in own and "Disable login…" not in own


def test_changing_roles_is_audited_with_before_after_and_reason(app, admin):
    hub = hub_state(app)
    fiona = ConsoleClient(app)
    fiona.login("fiona")
    assert fiona.get(AUDIT).status_code == 403
    response = admin.post(f"{STAFF}/fiona/roles", {"roles": ["admin", "finance"],
                                                   "reason": "covers for Ada in December"})
    assert response.status_code == 303 and response.headers["Location"].endswith(f"{STAFF}/fiona")
    assert "fiona now has the roles: administrator, finance." in text_of(admin.get(f"{STAFF}/fiona"))
    assert user_row(hub, "fiona") == ("admin finance", "active")
    entry = audit_entry(hub, "staff.set_roles")
    assert (entry.actor, entry.subject) == ("console:ada", "staff:fiona")
    assert entry.before == {"roles": ["finance"]}
    assert entry.after == {"roles": ["admin", "finance"], "reason": "covers for Ada in December"}
    # Her open session has the new role on its next page.
    assert fiona.get(AUDIT).status_code == 200


def test_role_changes_that_are_refused_change_nothing(app, admin):
    hub = hub_state(app)
    before = snapshot(hub)
    own = admin.post(f"{STAFF}/ada/roles", {"roles": ["finance"], "reason": "tidying up"})
    assert own.status_code == 303
    assert "you cannot remove your own admin role" in text_of(admin.get(f"{STAFF}/ada"))
    same = admin.post(f"{STAFF}/fiona/roles", {"roles": ["finance"], "reason": "no change"})
    assert same.status_code == 303
    assert "already has exactly the roles finance" in text_of(admin.get(f"{STAFF}/fiona"))
    assert admin.post(f"{STAFF}/fiona/roles", {"roles": ["finance", "admin"]}).status_code == 400  # no reason
    assert admin.post(f"{STAFF}/fiona/roles", {"roles": ["superuser"], "reason": "x"}).status_code == 400
    assert admin.post(f"{STAFF}/nobody/roles", {"roles": ["finance"], "reason": "x"}).status_code == 303
    assert snapshot(hub) == before


def test_the_last_active_admin_keeps_the_role_and_stays_enabled(app):
    hub = hub_state(app)
    add_staff(hub, "ada", "admin")
    add_staff(hub, "bo", "admin", "finance")
    now = datetime.now(timezone.utc)
    with hub.unit_of_work() as uow:
        staff_users.disable_user(uow.session, username="bo", actor="cli:test", now=now, reason="left the team")
        uow.commit()
    before = snapshot(hub)
    for change in (lambda session: staff_users.set_roles(session, username="ada", roles=["finance"],
                                                         actor="cli:test", now=now),
                   lambda session: staff_users.disable_user(session, username="ada", actor="cli:test", now=now)):
        with hub.unit_of_work() as uow, pytest.raises(InvalidState, match="would leave no active admin"):
            change(uow.session)
    assert snapshot(hub) == before
    # A disabled admin is no admin to keep: changing its roles is allowed.
    with hub.unit_of_work() as uow:
        staff_users.set_roles(uow.session, username="bo", roles=["finance"], actor="cli:test", now=now)
        uow.commit()
    assert user_row(hub, "bo") == ("finance", "disabled")


def test_removing_another_admins_role_is_allowed_while_one_remains(app, admin):
    hub = hub_state(app)
    add_staff(hub, "bo", "admin")
    assert admin.post(f"{STAFF}/bo/roles", {"roles": ["finance"], "reason": "moved to finance"}).status_code == 303
    assert user_row(hub, "bo") == ("finance", "active")


def test_disabling_needs_confirmation_and_a_reason_then_ends_the_sessions(app, admin):
    hub = hub_state(app)
    fiona = ConsoleClient(app)
    fiona.login("fiona")
    before = snapshot(hub)
    assert admin.post(f"{STAFF}/fiona/disable", {"reason": "left"}).status_code == 400
    assert admin.post(f"{STAFF}/fiona/disable", {"confirm": "yes", "reason": " "}).status_code == 400
    assert "Tick the box" in text_of(admin.post(f"{STAFF}/fiona/disable", {"reason": "left"}))
    assert snapshot(hub) == before
    response = admin.post(f"{STAFF}/fiona/disable", {"confirm": "yes", "reason": "left the company"})
    assert response.status_code == 303
    assert "fiona is disabled and signed out everywhere." in text_of(admin.get(f"{STAFF}/fiona"))
    assert user_row(hub, "fiona")[1] == "disabled"
    entry = audit_entry(hub, "staff.disable")
    assert entry.actor == "console:ada"
    assert entry.after == {"status": "disabled", "sessions_ended": 1, "reason": "left the company"}
    assert fiona.get("/console/finance/cycles").headers["Location"].startswith("/console/login")
    assert ConsoleClient(app).login("fiona").status_code == 401
    # Disabled twice: refused, nothing written.
    before = snapshot(hub)
    admin.post(f"{STAFF}/fiona/disable", {"confirm": "yes", "reason": "again"})
    assert "already disabled" in text_of(admin.get(f"{STAFF}/fiona"))
    assert snapshot(hub) == before


def test_an_admin_cannot_disable_their_own_login(app, admin):
    hub = hub_state(app)
    add_staff(hub, "bo", "admin")
    before = snapshot(hub)
    admin.post(f"{STAFF}/ada/disable", {"confirm": "yes", "reason": "testing"})
    assert "you cannot disable your own login" in text_of(admin.get(f"{STAFF}/ada"))
    assert snapshot(hub) == before


def test_enabling_again_lets_the_login_sign_in(app, admin):
    hub = hub_state(app)
    admin.post(f"{STAFF}/fiona/disable", {"confirm": "yes", "reason": "on leave"})
    page = text_of(admin.get(f"{STAFF}/fiona"))
    assert "This login is disabled" in page and "Enable again" in page
    assert admin.post(f"{STAFF}/fiona/enable", {"reason": "back from leave"}).status_code == 303
    assert "fiona can sign in again." in text_of(admin.get(f"{STAFF}/fiona"))
    assert user_row(hub, "fiona")[1] == "active"
    entry = audit_entry(hub, "staff.enable")
    assert (entry.actor, entry.before, entry.after) == ("console:ada", {"status": "disabled"},
                                                         {"status": "active", "reason": "back from leave"})
    assert ConsoleClient(app).login("fiona").status_code == 303
    before = snapshot(hub)
    admin.post(f"{STAFF}/fiona/enable", {})
    assert "already active" in text_of(admin.get(f"{STAFF}/fiona"))
    assert snapshot(hub) == before


def test_a_new_password_is_shown_once_ends_the_sessions_and_is_audited(app, admin):
    hub = hub_state(app)
    fiona = ConsoleClient(app)
    fiona.login("fiona")
    before = snapshot(hub)
    assert admin.post(f"{STAFF}/fiona/password", {"reason": "forgot it"}).status_code == 400
    assert snapshot(hub) == before
    response = admin.post(f"{STAFF}/fiona/password", {"confirm": "yes", "reason": "forgot it"})
    assert response.status_code == 200 and "Location" not in response.headers
    password = PASSWORD_SHOWN.search(response.get_data(as_text=True)).group(1)
    assert "New password set" in text_of(response) and "every session of this login has ended" in text_of(response)
    assert fiona.get("/console/finance/cycles").headers["Location"].startswith("/console/login")
    assert ConsoleClient(app).login("fiona", PASSWORD).status_code == 401
    assert ConsoleClient(app).login("fiona", password).status_code == 303
    entry = audit_entry(hub, "staff.set_password")
    assert entry.actor == "console:ada" and entry.after["reason"] == "forgot it"
    assert password not in str(entry.after)
    assert password not in admin.get(f"{STAFF}/fiona").get_data(as_text=True)
    # An unknown login: refused, nothing written.
    before = snapshot(hub)
    assert admin.post(f"{STAFF}/nobody/password", {"confirm": "yes", "reason": "x"}).status_code == 303
    assert snapshot(hub) == before


# The audit trail.


def test_audit_trail_shows_entries_newest_first_with_people_words_and_readable_snapshots(app, admin):
    admin.post(f"{STAFF}/fiona/roles", {"roles": ["finance", "customer_service"], "reason": "cover the desk"})
    page = admin.get(AUDIT)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    shown = text_of(page)
    sequences = [int(value) for value in re.findall(r'<tr id="entry-(\d+)">', html)]
    assert sequences == sorted(sequences, reverse=True) and len(sequences) >= 5
    # The role change: Ada as a person, the action in words, before and after as key: value.
    assert "Ada (console:ada) login's roles changed (staff.set_roles) staff:fiona roles finance roles finance, " \
           "customer service reason cover the desk" in shown
    assert "signed in (staff.login)" in shown and "cli:test login added (staff.add)" in shown
    assert "{" not in re.sub(r"<[^>]+>", "", html.split("<table", 1)[1]) and "None" not in shown
    assert "<caption>Audit entries" in html and 'data-label="After"' in html
    assert "Not verified from the console yet." in shown and "No signed checkpoint yet" in shown
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+", shown)


def test_audit_trail_filters_by_actor_action_subject_and_days(app, admin):
    hub = hub_state(app)
    admin.post(f"{STAFF}/fiona/roles", {"roles": ["finance", "customer_service"], "reason": "cover the desk"})

    def subjects(**query: str) -> list[str]:
        html = admin.get(AUDIT, **query).get_data(as_text=True)
        return re.findall(r'<td data-label="Subject">([^<]*)</td>', html)

    assert set(subjects(actor="console:")) == {"staff:ada", "staff:fiona"}
    assert set(subjects(actor="cli:")) == {"person:fiona", "staff:fiona", "person:ada", "staff:ada"}
    assert subjects(action="staff.set_") == ["staff:fiona"]
    assert set(subjects(subject="staff:fiona")) == {"staff:fiona"} and len(subjects(subject="staff:fiona")) == 2
    # A prefix is a prefix: the LIKE wildcards are taken literally.
    assert subjects(subject="staff:%") == []
    today = datetime.now(ZoneInfo(hub.settings.alliance_time_zone)).date()
    assert len(subjects(**{"from": today.isoformat(), "to": today.isoformat()})) == len(subjects())
    tomorrow = (today + timedelta(days=1)).isoformat()
    empty = admin.get(AUDIT, **{"from": tomorrow})
    assert "No audit entry matches these filters." in text_of(empty)
    assert subjects(to=(today - timedelta(days=1)).isoformat()) == []
    assert admin.get(AUDIT, **{"from": "yesterday"}).status_code == 400
    assert admin.get(AUDIT, **{"from": today.isoformat(), "to": (today - timedelta(days=2)).isoformat()}) \
        .status_code == 400


def test_audit_trail_sorts_and_pages(app, admin):
    def sequences(**query: object) -> list[int]:
        html = admin.get(AUDIT, **query).get_data(as_text=True)
        return [int(value) for value in re.findall(r'<tr id="entry-(\d+)">', html)]

    for _ in range(8):
        admin.post(f"{STAFF}/fiona/disable", {"confirm": "yes", "reason": "again"})
        admin.post(f"{STAFF}/fiona/enable", {})
    everything = sequences(page_size=50)
    assert sequences(sort="sequence", order="asc", page_size=50) == sorted(everything)
    assert sequences(page_size=10) == everything[:10]
    second = admin.get(AUDIT, page_size=10, page=2)
    assert sequences(page_size=10, page=2) == everything[10:20]
    assert f"11–20 of {len(everything)}" in text_of(second)
    assert admin.get(AUDIT, sort="actor").status_code == 400


def test_audit_trail_csv_has_the_filtered_entries(app, admin):
    admin.post(f"{STAFF}/fiona/roles", {"roles": ["finance", "customer_service"], "reason": "cover the desk"})
    response = admin.get(f"{AUDIT}.csv", subject="staff:fiona")
    assert response.status_code == 200 and response.content_type.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [row["action"] for row in rows] == ["staff.set_roles", "staff.add"]
    assert rows[0]["person"] == "Ada" and rows[0]["action_in_words"] == "login's roles changed"
    assert rows[0]["before"] == "roles: finance"
    assert rows[0]["after"] == "roles: finance, customer service; reason: cover the desk"


def test_verify_now_keeps_its_outcome_and_a_tampered_entry_shows_where_the_chain_breaks(app, admin):
    hub = hub_state(app)
    response = admin.post(f"{AUDIT}/verification")
    assert response.status_code == 303 and response.headers["Location"].endswith(AUDIT)
    shown = text_of(admin.get(AUDIT))
    checked = audit_entry(hub, "audit.verify")
    assert f"The audit trail verifies through sequence {checked.sequence - 1}." in shown
    assert f"✓ Verified through sequence {checked.sequence - 1}" in shown
    assert re.search(r"Checked \d+ entries \d{4}-\d\d-\d\d \d\d:\d\d \w+ by Ada \(console:ada\)", shown)
    assert checked.actor == "console:ada" and checked.after["verified"] is True
    tamper(hub, "audit_log", "UPDATE audit_log SET actor = 'someone-else' WHERE sequence = 3")
    admin.post(f"{AUDIT}/verification")
    shown = text_of(admin.get(AUDIT))
    assert "The audit trail is broken at sequence 3" in shown
    assert "✗ Broken at sequence 3" in shown
    assert "What broke: the content does not hash to the recorded entry hash (entry hash mismatch)" in shown
    assert "through sequence 2, link and hash correctly" in shown
    outcome = audit_entry(hub, "audit.verify").after
    assert (outcome["verified"], outcome["broken_at_sequence"], outcome["reason"]) == (
        False, 3, "entry_hash_mismatch")


def test_the_newest_signed_checkpoint_is_shown_with_whether_the_log_still_holds_it(app, admin):
    hub = hub_state(app)
    with hub.unit_of_work() as uow:
        audit_checkpoints.take_checkpoint(uow.session, now=datetime.now(timezone.utc), signer=hub.statement_signer)
        uow.commit()
    shown = text_of(admin.get(AUDIT))
    assert re.search(r"Checkpoint #1, taken .+, covering \d+ entries", shown)
    assert "✓ verifies with the hub's statement key" in shown
    assert "✓ still holds the entry it signed, with the same hash" in shown
    tamper(hub, "audit_log", "DELETE FROM audit_log")
    shown = text_of(admin.get(AUDIT))
    assert "(its newest is 0): truncated" in shown
    assert "The audit trail is empty" in shown
