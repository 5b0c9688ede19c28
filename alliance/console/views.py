"""Signing in and out, and the start page."""

from __future__ import annotations

from flask import redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import security
from alliance.console.blueprint import console
from alliance.console.helpers import now
from alliance.extensions import hub_state
from alliance.services import staff_users


@console.route("/login", methods=["GET", "POST"])
def login() -> str | tuple[str, int] | BaseResponse:
    """The login form; every refusal gets the same words, whatever its reason."""
    target = security.safe_next(request.values.get("next"))
    if request.method == "GET":
        if security.may("admin", "finance", "partner_manager", "customer_service"):
            return redirect(target)
        return render_template("console/login.html", next=target, username="", error=None)
    username = (request.form.get("username") or "").strip().lower()
    password = request.form.get("password") or ""
    state = hub_state()
    with state.unit_of_work() as uow:
        try:
            started = staff_users.log_in(uow.session, username=username, password=password,
                                         remote_address=request.remote_addr, now=now())
        except staff_users.LoginRefused as refusal:
            # The throttle's counts are kept even though the login failed.
            uow.commit()
            return render_template("console/login.html", next=target, username=username,
                                   error=refusal.detail), 401
        uow.commit()
    security.start_session(started)
    return redirect(target, code=303)


@console.route("/logout", methods=["GET", "POST"])
def logout() -> str | BaseResponse:
    """GET asks for confirmation; POST (with the CSRF token) ends the session on the server and in the cookie."""
    if request.method == "GET":
        return render_template("console/logout.html")
    nonce = session.get("nonce")
    if nonce:
        with hub_state().unit_of_work() as uow:
            staff_users.log_out(uow.session, nonce=nonce, now=now())
            uow.commit()
    session.clear()
    return redirect(url_for("console.login", signed_out=1), code=303)


@console.route("/")
@security.requires()
def home() -> str:
    """The start page: what this user's roles open."""
    return render_template("console/home.html")
