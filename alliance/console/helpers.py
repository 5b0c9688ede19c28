"""What every console page needs: query arguments, one committed change, CSV replies, going back."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence, TypeVar, cast, final

from flask import Response, flash, redirect, request, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import display, security
from alliance.domain.errors import AllianceError
from alliance.domain.money import parse_major_units
from alliance.extensions import hub_state
from alliance.services.console_reports import Sort

Result = TypeVar("Result")

DEFAULT_PAGE_SIZE = 25
PAGE_SIZES = (10, 25, 50, 100)


def query_text(name: str, *, allowed: Sequence[str] | None = None) -> str | None:
    """A text filter from the query string; empty means absent; outside ``allowed`` is a 400."""
    value = (request.args.get(name) or "").strip()
    if not value:
        return None
    if len(value) > 100 or (allowed is not None and value not in allowed):
        raise BadRequest(f"The filter {name}={value!r} is not one of the choices offered.")
    return value


def query_page() -> tuple[int, int]:
    """The page number and page size from the query string (a 400 for nonsense)."""
    try:
        page = int(request.args.get("page", "1"))
        page_size = int(request.args.get("page_size", str(DEFAULT_PAGE_SIZE)))
    except ValueError:
        raise BadRequest("page and page_size are whole numbers") from None
    if page < 1 or page > 1_000_000 or page_size not in PAGE_SIZES:
        raise BadRequest(f"page starts at 1 and page_size is one of {', '.join(map(str, PAGE_SIZES))}")
    return page, page_size


def query_sort(keys: Sequence[str], default: str, *, descending: bool = False) -> Sort:
    """The list's order from ``?sort=<key>&order=asc|desc``: one of ``keys`` or the default (a 400 otherwise)."""
    key = request.args.get("sort") or default
    order = request.args.get("order") or ("desc" if descending and key == default else "asc")
    if key not in keys or order not in ("asc", "desc"):
        raise BadRequest(f"A list sorts by one of {', '.join(keys)}, in order asc or desc.")
    return Sort(key, order == "desc")


def sorted_rows(rows: Iterable[Result], sort: Sort, keys: Mapping[str, Callable[[Result], Any]]) -> list[Result]:
    """A short list already in memory, in ``sort``'s order (``keys`` names what each sort key reads)."""
    return sorted(rows, key=keys[sort.key], reverse=sort.descending)


def sort_url(sort: Sort, key: str) -> str:
    """The link a sortable column's header carries: by ``key``, flipping the order when it is already the sort."""
    order = "asc" if key != sort.key else ("asc" if sort.descending else "desc")
    arguments = {**pager_args(), **(request.view_args or {}), "sort": key, "order": order}
    return url_for(cast(str, request.endpoint), **arguments)


def form_confirmed(*, reason_field: str = "reason", max_length: int = 1000) -> str:
    """A dangerous change's confirmation: the box ticked and a reason given (a 400 naming what is missing)."""
    if request.form.get("confirm") != "yes":
        raise BadRequest("Tick the box to confirm: nothing was changed.")
    reason = (request.form.get(reason_field) or "").strip()
    if not reason:
        raise BadRequest("Say why (the reason is kept in the audit trail): nothing was changed.")
    if len(reason) > max_length:
        raise BadRequest(f"The reason is longer than {max_length} characters: nothing was changed.")
    return reason


def form_moment(name: str) -> datetime:
    """A moment typed as ``2027-01-01T00:00`` in the viewer's time zone (or with its own offset)."""
    text = form_text(name) or ""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"The {name.replace('_', ' ')} must be a date and time such as 2027-01-01T00:00.") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=display.viewer_zone())


def form_text(name: str, *, required: bool = True, max_length: int = 4000) -> str | None:
    """A form field, stripped; a missing required one is a 400."""
    value = (request.form.get(name) or "").strip()
    if not value:
        if required:
            raise BadRequest(f"The form needs {name.replace('_', ' ')}.")
        return None
    if len(value) > max_length:
        raise BadRequest(f"{name.replace('_', ' ')} is longer than {max_length} characters.")
    return value


def form_choice(name: str, choices: Collection[str], refusal: str) -> str:
    """A form field that must be one of ``choices`` (a select's or buttons' values); a 400 saying ``refusal``
    otherwise, missing included."""
    value = form_text(name, required=False, max_length=100)
    if value is None or value not in choices:
        raise BadRequest(refusal)
    return value


def form_whole_number(name: str) -> int:
    """A whole number from a form field (a 400 otherwise)."""
    text = form_text(name) or ""
    try:
        return int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise BadRequest(f"{name.replace('_', ' ')} must be a whole number, got {text!r}.") from None


def form_money(name: str, currency: str, *, signed: bool = False) -> int:
    """An amount typed in ``currency``'s major units (``14.60``), as exact minor units; a 400 saying why otherwise."""
    text = form_text(name) or ""
    try:
        return parse_major_units(text, currency, signed=signed)
    except ValueError as problem:
        raise BadRequest(f"The {name.replace('_', ' ')} in {currency} {problem}.") from None


def now() -> datetime:
    """The console's clock."""
    return security.utc_now()


@final
class Refused:
    """What ``attempt`` answers when the service refused the change; the reason is already on the next page."""


def attempt(action: Callable[..., Result], **arguments: object) -> Result | Refused:
    """Run a service change as the signed-in user in one committed unit of work; its result, or ``Refused``.

    A refusal by the service (``AllianceError``: the four-eyes rule, a state that does not
    allow it, bad input) commits nothing and is flashed for the page the browser goes to
    next. Pages that show a result once (a new card number, a generated password, a
    one-time code) render it from the result; the others go through ``change``.
    """
    try:
        with hub_state().unit_of_work() as uow:
            result = action(uow.session, now=now(), actor=security.actor(), **arguments)
            uow.commit()
    except AllianceError as error:
        flash(f"{error.title}: {error.detail}", "error")
        return Refused()
    return result


def change(action: Callable[..., Result], *, success: str | Callable[[Result], str], back: str,
           **arguments: object) -> BaseResponse:
    """Run a service change as the signed-in user (``attempt``), then go back, saying what happened.

    ``success`` is the message to show: either finished text, or a function of the
    service's result that returns it. It is never used as a format template, because it
    often contains what someone typed (a key id, a code), and ``str.format`` on such text
    would fail after the change was committed, or read attributes an attacker names.
    """
    result = attempt(action, **arguments)
    if not isinstance(result, Refused):
        flash(success(result) if callable(success) else success, "success")
    return redirect(back, code=303)


def csv_reply(filename: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Response:
    """A CSV download."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_cell(value) for value in row] for row in rows)
    return Response(buffer.getvalue(), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _cell(value: object) -> object:
    """Text that a spreadsheet would run as a formula is quoted; numbers stay numbers."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def pager_args(**fixed: str | None) -> dict[str, str]:
    """The current filters, for links to other pages of the same list.

    A query argument whose name starts with ``_`` is no filter of ours: passed on to
    ``url_for`` it would set one of its own options (``_external``, ``_scheme``,
    ``_anchor``, ``_method``), so ``?_external=1`` would turn a link absolute.
    """
    arguments = {key: value for key, value in request.args.items()
                 if key != "page" and value and not key.startswith("_")}
    arguments.update({key: value for key, value in fixed.items() if value is not None})
    return arguments


def pager_url(endpoint: str) -> str:
    """A link to ``endpoint`` with the current filters (``pager_args``, none of them ``url_for``'s own options)."""
    # url_for types its options (``_external: bool | None``...) beside ``**values: Any``;
    # pager_args has already left out every name starting with ``_``.
    return url_for(endpoint, **cast(dict[str, Any], pager_args()))
