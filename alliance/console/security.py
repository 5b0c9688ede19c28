"""Who is signed in, what they may see, and proof that a form came from the console itself.

The session is Flask's signed cookie (HttpOnly, SameSite=Lax, Secure in production, path
``/console``). It carries only the username, a per-session nonce and the CSRF token; the
nonce names a server-side session row, which is checked on every request together with
the user's current status and roles, so logout, a disabled account, the idle timeout and
the absolute lifetime take effect at once. Every POST must carry the session's CSRF
token in a hidden field (a synchronizer token, compared in constant time).
"""

from __future__ import annotations

import functools
import hmac
import secrets
from datetime import datetime, timezone
from typing import Callable, ParamSpec, Protocol, TypeVar, cast

from flask import Flask, Request, abort, g, redirect, request, session, url_for
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from alliance.extensions import hub_state
from alliance.services import staff_users
from alliance.services.staff_users import StaffIdentity

CSRF_FIELD = "csrf_token"
CSRF_SESSION_KEY = "csrf_token"
FINANCE_ROLES = ("finance", "admin")
PARTNER_MANAGER_ROLES = ("partner_manager", "admin")
COMPLAINT_ROLES = ("partner_manager", "customer_service", "admin")

ViewArguments = ParamSpec("ViewArguments")
ViewResult = TypeVar("ViewResult")
GuardedResult = TypeVar("GuardedResult", covariant=True)


class GuardedView(Protocol[ViewArguments, GuardedResult]):
    """A view behind ``requires``: called as the view is, and naming the roles it needs."""

    required_roles: tuple[str, ...]

    def __call__(self, *args: ViewArguments.args, **kwargs: ViewArguments.kwargs) -> GuardedResult: ...


class CsrfRefused(BadRequest):
    """A state-changing form without the session's CSRF token."""

    description = "This form has expired or did not come from the console. Go back, reload the page and try again."


def utc_now() -> datetime:
    """The console's clock (tests move it to try timeouts)."""
    return datetime.now(timezone.utc)


SESSION_PATH = "/console"


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed cookie sessions, opened only where the browser sends the cookie.

    The cookie's path is the console's, so no other request can carry it; opening a
    session anyway built its signer on every API request (16 µs, about 0.5% of a signed
    earn's worker time). Elsewhere the session is Flask's null session, which refuses
    writes.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        path = request.path
        if path == SESSION_PATH or path.startswith(SESSION_PATH + "/"):
            return super().open_session(app, request)
        return self.make_null_session(app)


def configure_session_cookie(app: Flask) -> None:
    """Harden the session cookie the console signs in with."""
    settings = hub_state(app).settings
    app.config.update(
        SESSION_COOKIE_NAME="alliance_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.environment == "production",
        SESSION_COOKIE_PATH=SESSION_PATH,
        PERMANENT_SESSION_LIFETIME=staff_users.SESSION_LIFETIME,
    )
    app.session_interface = ConsoleSessions()


def csrf_token() -> str:
    """The session's CSRF token, made the first time a form needs one."""
    token = session.get(CSRF_SESSION_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return token


def check_csrf() -> None:
    """Refuse (400) a POST whose hidden token is missing or is not the session's."""
    if request.method != "POST":
        return
    expected = session.get(CSRF_SESSION_KEY) or ""
    presented = request.form.get(CSRF_FIELD, "")
    if not expected or not presented or not hmac.compare_digest(expected.encode(), presented.encode()):
        raise CsrfRefused()


def start_session(started: staff_users.StartedSession) -> None:
    """A fresh cookie session for a user who just signed in (a new CSRF token too, against fixation)."""
    session.clear()
    session.permanent = True
    session["username"] = started.identity.username
    session["nonce"] = started.nonce
    session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)


def load_identity() -> None:
    """Before each console request: who is signed in, re-read from the database."""
    g.staff = None
    nonce = session.get("nonce")
    if not nonce:
        return
    state = hub_state()
    with state.unit_of_work() as uow:
        identity = staff_users.identity_for(uow.session, nonce=nonce, now=utc_now())
        uow.commit()
    if identity is None or identity.username != session.get("username"):
        session.clear()
        return
    g.staff = identity


def current_staff() -> StaffIdentity:
    """The signed-in user; only called behind ``requires``."""
    identity = g.get("staff")
    assert identity is not None, "views call current_staff only behind requires()"
    return identity


def actor() -> str:
    """How the audit log names the signed-in user."""
    return f"console:{current_staff().username}"


def may(*roles: str) -> bool:
    """Whether the signed-in user holds one of ``roles`` (templates use it for the nav bar)."""
    identity = g.get("staff")
    return identity is not None and bool(identity.roles & set(roles))


def requires(*roles: str) -> Callable[[Callable[ViewArguments, ViewResult]],
                                      GuardedView[ViewArguments, ViewResult | BaseResponse]]:
    """Send anonymous visitors to the login page; refuse (403) users without one of ``roles``."""

    def decorate(view: Callable[ViewArguments, ViewResult]) -> GuardedView[ViewArguments, ViewResult | BaseResponse]:
        @functools.wraps(view)
        def guarded(*args: ViewArguments.args, **kwargs: ViewArguments.kwargs) -> ViewResult | BaseResponse:
            if g.get("staff") is None:
                if request.method == "POST":
                    abort(403, "Your session has ended; sign in again.")
                return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
            if roles and not may(*roles):
                abort(403, f"This page needs the role {' or '.join(roles)}; you have "
                           f"{', '.join(sorted(current_staff().roles)) or 'none'}.")
            return view(*args, **kwargs)
        # A function takes the attribute at run time; GuardedView tells the type checker it has it.
        guarded_view = cast("GuardedView[ViewArguments, ViewResult | BaseResponse]", guarded)
        guarded_view.required_roles = roles
        return guarded_view
    return decorate


def safe_next(target: str | None) -> str:
    """Where to go after login: only a path inside the console, never another site."""
    if target and target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("console.home")
