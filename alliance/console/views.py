"""Signing in and out, and the start page."""

from __future__ import annotations

from flask import redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import security
from alliance.console.blueprint import console
from alliance.console.helpers import change, form_text, now
from alliance.extensions import hub_state
from alliance.services import staff_users

# The preferences form's value for "no zone of my own": the alliance's zone, whatever it becomes.
ALLIANCE_ZONE_CHOICE = "alliance"


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


@console.route("/preferences", methods=["GET", "POST"])
@security.requires()
def preferences() -> str | BaseResponse:
    """The signed-in user's own settings: the time zone the console shows dates in."""
    if request.method == "POST":
        chosen = form_text("time_zone", required=False, max_length=64)
        return change(staff_users.set_time_zone, username=security.current_staff().username,
                      time_zone=None if chosen in (None, ALLIANCE_ZONE_CHOICE) else chosen,
                      success="Your time zone is saved: dates are now shown in it.",
                      back=url_for("console.preferences"))
    return render_template("console/preferences.html", zones=sorted(staff_users.available_time_zones()),
                           chosen=security.current_staff().time_zone,
                           alliance_zone=hub_state().settings.alliance_time_zone,
                           alliance_choice=ALLIANCE_ZONE_CHOICE)
