"""Administration pages: staff logins and their roles, staff people, and the audit trail with its verification.

Every change goes through ``staff_users`` and ``staff_people``, the services the CLI
uses, with the signed-in admin as the actor; each writes its audit entry (with the
reason, for the dangerous ones) in the same transaction. A generated password is shown
once, on the page the POST answers with: never in a URL, a flash message or a log.

The audit trail is read through ``audit_log``. Walking the whole chain grows with the
log, so the page does not verify on every view: "Verify now" (a POST) walks it and keeps
the outcome as an ``audit.verify`` entry, and the page shows the newest such outcome
with when it ran and who ran it, beside the newest signed checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Callable, Mapping, TypeVar

from flask import flash, redirect, render_template, request, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import display, security
from alliance.console.blueprint import console, navigation_item
from alliance.console.helpers import (
    Refused,
    attempt,
    change,
    csv_reply,
    form_confirmed,
    form_text,
    now,
    pager_args,
    pager_url,
    query_page,
    query_sort,
    query_text,
    sorted_rows,
)
from alliance.domain.audit_chain import AuditEntry, anchor_problem
from alliance.domain.errors import AllianceError
from alliance.extensions import hub_state
from alliance.services import audit_checkpoints, audit_documents, audit_log, console_reports, staff_people, staff_users
from alliance.services.oauth import ROLES

ADMIN_ROLES = ("admin",)
Result = TypeVar("Result")

navigation_item("Administration", "Staff", "console.admin_staff", roles=ADMIN_ROLES, order=50,
                summary="staff logins and their roles: add, change roles, disable, re-enable, new password; people")
navigation_item("Administration", "Audit trail", "console.admin_audit", roles=ADMIN_ROLES, order=51,
                summary="every change with who made it; the chain's verification; filters and CSV")

# What each role lets a login do, in one line each (the add form and the roles form explain them).
ROLE_WORDS = {
    "admin": ("administrator", "staff logins and roles, back-office clients, the audit trail; every page"),
    "finance": ("finance", "settlement cycles, statements, invoices and payments, reconciliation, approvals"),
    "partner_manager": ("partner manager", "partners, their keys and terminals, grades and alerts, complaints"),
    "customer_service": ("customer service", "members, cards and PINs, one-time codes, complaints"),
    "risk": ("risk", "the risk review queue: release or reverse held points, dismiss or confirm flags and "
                     "refusals, block cards, revoke till keys; the risk policy"),
}
# Audit actions in words, where the mapping is plain; any other action is shown as it is stored.
ACTION_WORDS = {
    "staff.add": "login added",
    "staff.set_roles": "login's roles changed",
    "staff.disable": "login disabled",
    "staff.enable": "login enabled again",
    "staff.set_password": "new password set",
    "staff.set_time_zone": "time zone chosen",
    "staff.login": "signed in",
    "staff.logout": "signed out",
    "staff.lockout": "login backing off after wrong passwords",
    "staff.person.add": "staff person added",
    audit_log.VERIFY_ACTION: "audit trail verified",
    "client.create": "back-office client created",
    "client.revoke": "back-office client revoked",
    "settlement.close": "settlement cycles closed",
    "statement.invoiced": "statement marked invoiced",
    "statement.paid": "payment recorded",
    "statement.reconcile": "statement reconciled",
    "dispute.open": "dispute opened",
    "adjustment.request": "adjustment requested",
    "complaint.open": "complaint filed",
    "complaint.transition": "complaint moved on",
    "grades.compute": "grades computed",
    "grade.override": "grade overridden",
    "grade_alert.acknowledge": "grade alert acknowledged",
    "partner.onboard": "partner onboarded",
    "partner.status": "partner status changed",
    "partner.key.register": "partner key registered",
    "partner.key.revoke": "partner key revoked",
    "partner.terminal.add": "terminal added",
    "member.enrol": "member enrolled",
    "card.replace": "card replaced",
    "card.pin.reset": "PIN reset",
    "demo.seed": "demo data seeded",
}
STAFF_SORT_KEYS: Mapping[str, Callable[[staff_users.StaffLogin], Any]] = {
    "username": lambda login: login.username,
    "name": lambda login: login.display_name.lower(),
    "person": lambda login: login.person,
    "status": lambda login: (login.status, login.username),
    # Never signed in sorts as the oldest.
    "last_login": lambda login: login.last_login_at.timestamp() if login.last_login_at else float("-inf"),
    "password_age": lambda login: -login.password_changed_at.timestamp(),
}
AUDIT_SORT_KEYS = ("sequence",)
# Not a handle (a handle starts with a letter or digit): the person select's choice for "a new person".
NEW_PERSON = "+new"


@dataclass(frozen=True, slots=True)
class CheckpointStatus:
    """The newest signed checkpoint of the log's head, and whether the log still holds what it signed."""

    checkpoint_id: int
    taken_at: datetime | None
    entries: int
    signature_problem: str | None
    log_problem: str | None


def roles_in_words(roles: tuple[str, ...] | frozenset[str]) -> str:
    """``administrator, finance``: the roles as a person says them, in the fixed order."""
    return ", ".join(ROLE_WORDS[role][0] for role in ROLES if role in roles) or "no role"


def password_age(changed_at: datetime) -> str:
    """How long ago a password was set, in whole days (``today``, ``1 day``, ``40 days``)."""
    days = (now() - changed_at).days
    return "set today" if days < 1 else f"{days:,} day{'' if days == 1 else 's'}"


def readable_value(value: object) -> str:
    """One before/after value as a person reads it: no JSON, no None, no brackets."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(readable_value(item) for item in value) or "none"
    if isinstance(value, dict):
        return "; ".join(f"{key.replace('_', ' ')}: {readable_value(item)}" for key, item in value.items()) or "none"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value)


def readable(snapshot: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """A before/after snapshot as (label, value) pairs for a definition list."""
    return [(key.replace("_", " "),
             roles_in_words(tuple(value)) if key == "roles" and isinstance(value, list) else readable_value(value))
            for key, value in (snapshot or {}).items()]


def action_words(action: str) -> str:
    """An audit action in words where there are some, else as stored."""
    return ACTION_WORDS.get(action, action)


# Staff and roles.


def _form_roles() -> list[str]:
    roles = request.form.getlist("roles")
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise BadRequest(f"There is no role {', '.join(unknown)}: choose among the boxes offered.")
    if not roles:
        raise BadRequest("Tick at least one role: a login without a role can open no page.")
    return roles


@console.route("/admin/staff")
@security.requires(*ADMIN_ROLES)
def admin_staff() -> str:
    """Staff logins (sortable), the form to add one, and the people behind them."""
    sort = query_sort(tuple(STAFF_SORT_KEYS), "username")
    with hub_state().read_only_unit_of_work() as uow:
        logins = staff_users.list_logins(uow.session)
        people = staff_people.people_with_credentials(uow.session)
    return render_template("console/admin/staff.html", logins=sorted_rows(logins, sort, STAFF_SORT_KEYS),
                           people=people, sort=sort, roles=ROLES, role_words=ROLE_WORDS,
                           roles_in_words=roles_in_words, password_age=password_age, new_person=NEW_PERSON)


@console.route("/admin/staff", methods=["POST"])
@security.requires(*ADMIN_ROLES)
def admin_add_staff() -> str | BaseResponse:
    """Add a login of an existing or a new person; its generated password is shown once, on the page answered."""
    username = (form_text("username", max_length=staff_users.MAX_USERNAME_CHARACTERS) or "").lower()
    display_name = form_text("display_name", max_length=200) or ""
    roles = _form_roles()
    person = form_text("person", max_length=64) or ""
    new_person = None
    if person == NEW_PERSON:
        new_person = (form_text("new_handle", max_length=64) or "",
                      form_text("new_name", max_length=staff_people.MAX_NAME_CHARACTERS) or "")
        person = new_person[0]
    password = staff_users.generate_password()

    def add(session: Any, *, now: datetime, actor: str) -> staff_users.StaffLogin:
        if new_person is not None:
            staff_people.add_person(session, handle=new_person[0], name=new_person[1], actor=actor, now=now)
        staff_users.add_user(session, username=username, display_name=display_name, roles=roles, person=person,
                             password=password, actor=actor, now=now)
        return staff_users.login_of(session, username=username)

    login = attempt(add)
    if isinstance(login, Refused):
        return redirect(url_for("console.admin_staff"), code=303)
    return render_template("console/admin/password.html", login=login, password=password, added=True,
                           roles_in_words=roles_in_words)


@console.route("/admin/staff/<username>")
@security.requires(*ADMIN_ROLES)
def admin_login(username: str) -> str:
    """One login: its roles (to change), disabling or enabling it again, and a new password."""
    with hub_state().read_only_unit_of_work() as uow:
        login = staff_users.login_of(uow.session, username=username)
        history, _ = audit_log.entries_page(uow.session, filters=audit_log.AuditFilter(subject=f"staff:{username}"),
                                            page=1, page_size=10)
    return render_template("console/admin/login.html", login=login, roles=ROLES, role_words=ROLE_WORDS,
                           roles_in_words=roles_in_words, password_age=password_age, history=history,
                           action_words=action_words, readable=readable,
                           own=username == security.current_staff().username)


def _back_to_login(username: str) -> str:
    return url_for("console.admin_login", username=username)


@console.route("/admin/staff/<username>/roles", methods=["POST"])
@security.requires(*ADMIN_ROLES)
def admin_set_roles(username: str) -> BaseResponse:
    """Give a login exactly the ticked roles, with a reason for the audit trail."""
    return change(staff_users.set_roles, username=username, roles=_form_roles(),
                  reason=form_text("reason", max_length=1000),
                  success=lambda roles: f"{username} now has the roles: {roles_in_words(roles)}.",
                  back=_back_to_login(username))


@console.route("/admin/staff/<username>/disable", methods=["POST"])
@security.requires(*ADMIN_ROLES)
def admin_disable(username: str) -> BaseResponse:
    """Disable a login (confirmed, with a reason); its sessions end at once."""
    return change(staff_users.disable_user, username=username, reason=form_confirmed(),
                  success=f"{username} is disabled and signed out everywhere.", back=_back_to_login(username))


@console.route("/admin/staff/<username>/enable", methods=["POST"])
@security.requires(*ADMIN_ROLES)
def admin_enable(username: str) -> BaseResponse:
    """Let a disabled login sign in again."""
    return change(staff_users.enable_user, username=username,
                  reason=form_text("reason", required=False, max_length=1000),
                  success=f"{username} can sign in again.", back=_back_to_login(username))


@console.route("/admin/staff/<username>/password", methods=["POST"])
@security.requires(*ADMIN_ROLES)
def admin_new_password(username: str) -> str | BaseResponse:
    """Set a generated password (confirmed, with a reason), shown once; the login's sessions end."""
    reason = form_confirmed()
    password = staff_users.generate_password()

    def reset(session: Any, *, now: datetime, actor: str) -> staff_users.StaffLogin:
        staff_users.set_password(session, username=username, password=password, reason=reason, actor=actor, now=now)
        return staff_users.login_of(session, username=username)

    login = attempt(reset)
    if isinstance(login, Refused):
        return redirect(_back_to_login(username), code=303)
    return render_template("console/admin/password.html", login=login, password=password, added=False,
                           roles_in_words=roles_in_words)


# The audit trail.


def _query_day(name: str) -> date | None:
    text = query_text(name)
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name} must be a day such as 2026-12-06, got {text!r}.") from None


def _audit_filter() -> audit_log.AuditFilter:
    """The trail's filters from the query string; days are whole days in the viewer's zone."""
    since_day, until_day = _query_day("from"), _query_day("to")
    if since_day and until_day and until_day < since_day:
        raise BadRequest("The day 'to' comes before the day 'from': no entry can lie between them.")
    zone = display.viewer_zone()
    return audit_log.AuditFilter(
        actor=query_text("actor"), action=query_text("action"), subject=query_text("subject"),
        since=datetime.combine(since_day, time(), zone) if since_day else None,
        until=datetime.combine(until_day + timedelta(days=1), time(), zone) if until_day else None)


def _checkpoint_status(session: Any) -> CheckpointStatus | None:
    stored = audit_checkpoints.stored_checkpoints(session)
    if not stored:
        return None
    newest = stored[-1]
    signer = hub_state().statement_signer
    signature_problem = audit_documents.verification_problem(
        newest.document, newest.signature, {signer.key_id: signer.signing_key.public_key()})
    try:
        taken_at, head = audit_checkpoints.parse_checkpoint_document(newest.document)
    except AllianceError as error:
        return CheckpointStatus(newest.checkpoint_id, None, 0, signature_problem,
                                f"the stored document is not a checkpoint ({error.detail})")
    log_problem = anchor_problem(head, audit_log.entry_hashes(session, [head.entries]).get(head.entries),
                                 audit_log.head(session).entries)
    return CheckpointStatus(newest.checkpoint_id, taken_at, head.entries, signature_problem, log_problem)


@console.route("/admin/audit")
@security.requires(*ADMIN_ROLES)
def admin_audit() -> str:
    """The audit trail, newest first, filtered and paged, under the chain's last verification."""
    filters = _audit_filter()
    page, page_size = query_page()
    sort = query_sort(AUDIT_SORT_KEYS, "sequence", descending=True)
    with hub_state().read_only_unit_of_work() as uow:
        entries, total = audit_log.entries_page(uow.session, filters=filters, page=page, page_size=page_size,
                                                newest_first=sort.descending)
        people = staff_people.people_behind(uow.session, {entry.actor for entry in entries})
        last_check = audit_log.latest_entry(uow.session, action=audit_log.VERIFY_ACTION)
        checker = staff_people.people_behind(uow.session, [last_check.actor]) if last_check else {}
        newest = audit_log.head(uow.session).entries
        checkpoint = _checkpoint_status(uow.session)
        known_actors = audit_log.actors(uow.session)
    filtered = any((filters.actor, filters.action, filters.subject, filters.since, filters.until))
    return render_template("console/admin/audit.html", trail=console_reports.Page(entries, total, page, page_size),
                           people=people, last_check=last_check, checker=checker, newest=newest,
                           checkpoint=checkpoint, known_actors=known_actors, filtered=filtered, sort=sort,
                           pager=pager_args(), action_words=action_words, readable=readable,
                           action_prefixes=sorted({action.split(".")[0] + "." for action in ACTION_WORDS}))


@console.route("/admin/audit.csv")
@security.requires(*ADMIN_ROLES)
def admin_audit_csv() -> BaseResponse:
    """Every entry the filters let through, newest first, as CSV (before and after as key: value text)."""
    filters = _audit_filter()
    with hub_state().read_only_unit_of_work() as uow:
        entries: list[AuditEntry] = list(audit_log.matching_entries(uow.session, filters=filters))
        people = staff_people.people_behind(uow.session, {entry.actor for entry in entries})
    return csv_reply("audit-trail.csv",
                     ["sequence", "occurred_at", "actor", "person", "action", "action_in_words", "subject", "before",
                      "after", "entry_hash"],
                     [[entry.sequence, entry.occurred_at.isoformat(), entry.actor,
                       people[entry.actor].name if entry.actor in people else "", entry.action,
                       action_words(entry.action), entry.subject,
                       "; ".join(f"{key}: {value}" for key, value in readable(entry.before)),
                       "; ".join(f"{key}: {value}" for key, value in readable(entry.after)), entry.entry_hash]
                      for entry in entries])


@console.route("/admin/audit/verification", methods=["POST"])
@security.requires(*ADMIN_ROLES)
def admin_verify_audit() -> BaseResponse:
    """Walk the whole chain now; the outcome is kept as an audit entry and shown at the top of the trail."""
    report = attempt(audit_log.record_verification)
    if not isinstance(report, Refused):
        broken = report.first_break
        if broken is None:
            flash(f"The audit trail verifies through sequence {report.last_sequence:,}.", "success")
        else:
            flash(f"The audit trail is broken at sequence {broken.sequence:,}: {broken.detail}.", "error")
    return redirect(pager_url("console.admin_audit"), code=303)
