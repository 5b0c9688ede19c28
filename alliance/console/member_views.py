"""Customer service on members: find a member, read their page, replace a card, reset a PIN, issue a code,
file a complaint.

Card numbers, phone numbers and e-mail addresses are searched by POST, so they never
reach a URL, the browser's history or an access log; member numbers are not contact
details and name the member page. A new card number and a one-time code are shown once,
on the page answering the POST that made them, never in a URL or a flash message kept
in the session cookie. Changes go through ``member_admin`` and ``complaints``, the
services the back-office API uses, with the signed-in user as the actor.
"""

from __future__ import annotations

from typing import TypeVar

from flask import flash, redirect, render_template, request, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import reward_views, security
from alliance.console.blueprint import console, navigation_item
from alliance.console.helpers import (
    Refused,
    attempt,
    change,
    form_choice,
    form_confirmed,
    form_text,
    form_whole_number,
    now,
    pager_args,
    query_page,
    query_sort,
)
from alliance.domain.errors import AllianceError
from alliance.domain.money import minor_units_per_unit
from alliance.extensions import hub_state
from alliance.services import complaints, console_reports, goodwill, member_admin, member_console, tier_policy
from alliance.services.console_reports import Sort

SERVICE_ROLES = ("customer_service", "admin")
MAX_SEARCH_CHARACTERS = 254
Result = TypeVar("Result")

navigation_item("Customer service", "Members", "console.members_search", roles=SERVICE_ROLES, order=30,
                summary="find a member by number, card, phone or e-mail; balances, history, cards, PINs, codes")


def _search_input() -> tuple[str, str] | None:
    """Which detail was typed and what (exactly one of the form's fields); None for an empty form."""
    given = {kind: (request.form.get(kind) or "").strip() for kind in member_console.SEARCH_KINDS}
    filled = [(kind, value) for kind, value in given.items() if value]
    if not filled:
        return None
    if len(filled) > 1:
        raise BadRequest("Fill in one detail only (member number, card number, phone or e-mail), then search.")
    kind, value = filled[0]
    if len(value) > MAX_SEARCH_CHARACTERS:
        raise BadRequest(f"The {member_console.SEARCH_KIND_WORDS[kind]} is longer than {MAX_SEARCH_CHARACTERS} "
                         "characters.")
    return kind, value


@console.route("/members", methods=["GET", "POST"])
@security.requires(*SERVICE_ROLES)
def members_search() -> str | tuple[str, int] | BaseResponse:
    """The search form; a POST searches by one detail and lists the matches (one match opens the member)."""
    if request.method == "GET":
        return render_template("console/members/search.html", kind=None, value="", matches=None, problem=None)
    try:
        typed = _search_input()
    except BadRequest as problem:
        return render_template("console/members/search.html", kind=None, value="", matches=None,
                               problem=problem.description), 400
    if typed is None:
        return render_template("console/members/search.html", kind=None, value="", matches=None,
                               problem="Type a member number, a card number, a phone number or an e-mail address."), 400
    kind, value = typed
    try:
        with hub_state().unit_of_work() as uow:
            matches = member_console.search(uow.session, key_ring=hub_state().key_ring, kind=kind, value=value)
    except AllianceError as refused:
        return render_template("console/members/search.html", kind=kind, value=value, matches=None,
                               problem=f"{refused.title}: {refused.detail}"), 400
    if len(matches) == 1:
        return redirect(url_for("console.member_page", member_number=matches[0].member_number), code=303)
    return render_template("console/members/search.html", kind=kind, value=value, matches=matches, problem=None,
                           kind_words=member_console.SEARCH_KIND_WORDS[kind])


def _member_sorts() -> tuple[Sort, Sort]:
    """The history's and the lots' orders: ``?sort=`` names a key of one of them; the other keeps its default."""
    if request.args.get("sort") in member_console.LOT_SORTS:
        return Sort("date", True), query_sort(member_console.LOT_SORTS, "expires")
    return query_sort(member_console.HISTORY_SORTS, "date", descending=True), Sort("expires")


@console.route("/members/<member_number>")
@security.requires(*SERVICE_ROLES)
def member_page(member_number: str) -> str:
    """A member: profile, cards, balances, lots, open holds, ledger history, tier, complaints and the actions."""
    history_sort, lot_sort = _member_sorts()
    page, page_size = query_page()
    settings = hub_state().settings
    currency = settings.alliance_currency
    with hub_state().unit_of_work() as uow:
        session = uow.session
        member = member_console.overview(session, key_ring=hub_state().key_ring, member_number=member_number)
        lots = member_console.lots(session, member_id=member.member_id, sort=lot_sort)
        holds = member_console.open_holds(session, member_id=member.member_id)
        history = member_console.history(session, member_id=member.member_id, sort=history_sort, page=page,
                                         page_size=page_size)
        standing = tier_policy.standing(session, member_id=member.member_id, tier=member.tier, now=now(),
                                        currency=currency, minor_units_per_unit=minor_units_per_unit(currency))
        member_complaints = member_console.complaints_of(session, member_id=member.member_id)
        purchases = member_console.recent_purchases(session, member_id=member.member_id)
        codes = console_reports.partner_codes(session)
        reward_orders, orderable_rewards = reward_views.member_rewards(session, member.member_id)
    return render_template("console/members/member.html", member=member, lots=lots, holds=holds, history=history,
                           history_sort=history_sort, lot_sort=lot_sort, standing=standing,
                           member_complaints=member_complaints, purchases=purchases, codes=codes,
                           categories=complaints.CATEGORIES,
                           goodwill_threshold=settings.goodwill_approval_threshold_points,
                           history_args={**pager_args(), "member_number": member.member_number},
                           reward_orders=reward_orders, orderable_rewards=orderable_rewards,
                           reward_reference=reward_views.fresh_reference())


def _member_url(member_number: str, section: str) -> str:
    return url_for("console.member_page", member_number=member_number, _anchor=section)


@console.route("/members/<member_number>/cards/<int:position>/replacement", methods=["POST"])
@security.requires(*SERVICE_ROLES)
def member_card_replacement(member_number: str, position: int) -> str | BaseResponse:
    """Block the member's card and issue a new one (confirmed, with a reason); the new number is shown once."""
    reason = form_confirmed()
    replaced = attempt(member_admin.replace_member_card, member_number=member_number, position=position,
                       reason=reason)
    if isinstance(replaced, Refused):
        return redirect(_member_url(member_number, "cards"), code=303)
    return render_template("console/members/new_card.html", member_number=member_number, card_number=replaced)


@console.route("/members/<member_number>/cards/<int:position>/pin", methods=["POST"])
@security.requires(*SERVICE_ROLES)
def member_pin_reset(member_number: str, position: int) -> BaseResponse:
    """Set a new PIN (typed twice) on the member's card; this also unlocks a card locked by wrong PINs."""
    back = _member_url(member_number, "cards")
    pin = request.form.get("pin") or ""
    if pin != (request.form.get("pin_again") or ""):
        flash("The two PINs typed differ: nothing was changed. Type the new PIN twice, the same both times.", "error")
        return redirect(back, code=303)
    return change(member_admin.reset_member_pin, member_number=member_number, position=position, pin=pin,
                  success=lambda card: f"The PIN of card {card} is reset and the card is unlocked.", back=back)


@console.route("/members/<member_number>/redemption-codes", methods=["POST"])
@security.requires(*SERVICE_ROLES)
def member_redemption_code(member_number: str) -> str | BaseResponse:
    """Issue a one-time redemption code; the code and its expiry are shown once."""
    issued = attempt(member_admin.new_redemption_code, member_number=member_number)
    if isinstance(issued, Refused):
        return redirect(_member_url(member_number, "cards"), code=303)
    code, expires_at = issued
    return render_template("console/members/code.html", member_number=member_number, code=code,
                           expires_at=expires_at)


def _purchase_choice() -> int | None:
    text = form_text("purchase", required=False, max_length=20)
    if text is None:
        return None
    if not text.isdigit():
        raise BadRequest("Choose the purchase from the list offered.")
    return int(text)


@console.route("/members/<member_number>/complaints", methods=["POST"])
@security.requires(*SERVICE_ROLES)
def member_complaint(member_number: str) -> BaseResponse:
    """File a complaint for the member, optionally about one of their purchases or a redemption."""
    category = form_choice("category", complaints.CATEGORIES, "Choose the complaint's category from the list offered.")
    return change(complaints.file_for_member, member_number=member_number,
                  partner_code=form_text("partner", required=False, max_length=40), category=category,
                  description=form_text("description", max_length=complaints.MAX_DESCRIPTION_CHARACTERS) or "",
                  purchase_id=_purchase_choice(),
                  redemption_reference=form_text("redemption_reference", required=False, max_length=64),
                  success=lambda filed: f"Complaint #{filed.id} is filed and open in the complaints queue.",
                  back=_member_url(member_number, "complaints"))


def _goodwill_said(made: goodwill.GoodwillView) -> str:
    what = "goodwill credit" if made.direction == "credit" else "correction"
    if made.status == "pending":
        return (f"The {what} of {made.points:,} points is requested (#{made.request_id}); another person must approve "
                "it in Goodwill approvals before it is posted.")
    return f"The {what} of {made.points:,} points is posted (#{made.request_id})."


@console.route("/members/<member_number>/goodwill", methods=["POST"])
@security.requires(*SERVICE_ROLES)
def member_goodwill(member_number: str) -> BaseResponse:
    """Credit goodwill points or correct (debit) the member's points: posted, or requested above the threshold."""
    direction = form_choice("direction", goodwill.DIRECTIONS, "Choose a goodwill credit or a correction (debit).")
    complaint_text = form_text("complaint", required=False, max_length=20)
    if complaint_text is not None and not complaint_text.isdigit():
        raise BadRequest("Choose the complaint from the list offered.")
    funded_by = form_text("funded_by", required=False, max_length=40) if direction == "credit" else None
    return change(goodwill.request_goodwill, member_number=member_number, direction=direction,
                  points=form_whole_number("points"),
                  reason=form_text("reason", max_length=goodwill.MAX_REASON_CHARACTERS) or "",
                  complaint_id=int(complaint_text) if complaint_text is not None else None,
                  reference=form_text("reference", required=False, max_length=64), funded_by=funded_by,
                  policy=goodwill.GoodwillPolicy.from_settings(hub_state().settings), success=_goodwill_said,
                  back=_member_url(member_number, "goodwill"))
