"""Finance pages: cycles, statements, the net position, reconciliation, approvals; CSV downloads.

Reads go through ``settlement.api`` (``console_reports`` gives the partner codes); every
change goes through settlement's finance workflow (or the closing the CLI and the API
run), with the signed-in user as the actor, so the four-eyes rule and every other refusal is the
service's own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime

from flask import Response, flash, redirect, render_template, request, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import display, security
from alliance.console.blueprint import console, money, navigation_item
from alliance.console.helpers import (
    change,
    csv_reply,
    form_choice,
    form_money,
    form_text,
    form_whole_number,
    now,
    pager_args,
    query_page,
    query_sort,
    query_text,
    sorted_rows,
)
from alliance.extensions import hub_state
from alliance.services import console_reports, partners, staff_directory
from settlement import api as settlement

FINANCE = security.FINANCE_ROLES

navigation_item("Finance", "Cycles", "console.finance_cycles", roles=FINANCE, order=10,
                summary="close due cycles; statements overdue and outstanding; invoice and record payments")
navigation_item("Finance", "Net position", "console.finance_position", roles=FINANCE, order=11,
                summary="per-partner nets with payments made and still to pay; the issuer → redeemer matrix")
navigation_item("Finance", "Reconciliation", "console.finance_reconciliations", roles=FINANCE, order=12,
                summary="partners' receipts matched against the statements, differences in words")
navigation_item("Finance", "Approvals", "console.finance_approvals", roles=FINANCE, order=13,
                summary="adjustments and disputes awaiting a decision")
CSV_BATCH = 200
DOCUMENT_FORMATS = {
    "json": ("document_json", "application/json", "json"),
    "csv": ("document_csv", "text/csv; charset=utf-8", "csv"),
    "json-signature": ("signature_json", "application/json", "json.sig.json"),
    "csv-signature": ("signature_csv", "application/json", "csv.sig.json"),
}


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """Whether a stored document verifies against the hub's statement key."""

    document: str
    verified: bool
    key_id: str
    detail: str


def _statement_filters() -> tuple[str | None, str | None, str | None]:
    with hub_state().read_only_unit_of_work() as uow:
        codes = console_reports.partner_codes(uow.session)
    return (query_text("partner", allowed=codes),
            query_text("state", allowed=settlement.STATEMENT_STATES),
            query_text("net", allowed=list(settlement.NET_DIRECTIONS)))


def _today() -> date:
    """Today where the viewer is: a statement is overdue once its due date has passed there."""
    return display.local(now()).date()


@console.route("/finance/cycles")
@security.requires(*FINANCE)
def finance_cycles() -> str:
    """Cycles running now and due to close, and closed cycles with their statements."""
    partner, state, net = _statement_filters()
    page, page_size = query_page()
    sort = query_sort(settlement.CLOSED_CYCLE_SORTS, "cycle", descending=True)
    with hub_state().read_only_unit_of_work() as uow:
        running = settlement.open_cycles(uow.session, now=now(), partner_code=partner)
        closed = settlement.closed_cycles_page(uow.session, partner_code=partner, state=state, page=page,
                                               page_size=page_size, net=net, as_of=_today(), sort=sort)
        codes = console_reports.partner_codes(uow.session)
    return render_template("console/finance/cycles.html", running=running, closed=closed, codes=codes,
                           partner=partner, state=state, states=settlement.STATEMENT_STATES,
                           net=net, nets=settlement.NET_DIRECTIONS, sort=sort,
                           pager=pager_args(), due_total=sum(row.due_to_close for row in running))


@console.route("/finance/cycles.csv")
@security.requires(*FINANCE)
def finance_cycles_csv() -> Response:
    """Every closed cycle matching the filters, as CSV."""
    partner, state, net = _statement_filters()
    rows: list[settlement.ClosedCycleRow] = []
    with hub_state().read_only_unit_of_work() as uow:
        page = 1
        while True:
            batch = settlement.closed_cycles_page(uow.session, partner_code=partner, state=state, page=page,
                                                  page_size=CSV_BATCH, net=net, as_of=_today())
            rows.extend(batch.items)
            if page >= batch.pages:
                break
            page += 1
    return csv_reply("closed-cycles.csv",
                     ["statement_id", "partner", "cycle_starts_at", "cycle_ends_at", "currency", "net_minor",
                      "due_date", "invoiced", "paid_minor", "outstanding_minor", "state", "overdue"],
                     [[row.statement_id, row.partner, row.cycle_starts_at.isoformat(), row.cycle_ends_at.isoformat(),
                       row.currency, row.net_minor, row.due_date.isoformat(), str(row.invoiced).lower(),
                       row.paid_minor, row.outstanding_minor, row.state, str(row.overdue).lower()] for row in rows])


@console.route("/finance/closings", methods=["POST"])
@security.requires(*FINANCE)
def finance_close_due_cycles() -> BaseResponse:
    """Close every overdue cycle, oldest first: the same closing as ``alliance settlement close``."""
    state = hub_state()
    moment = now()
    closed = settlement.close_due_cycles_by(state.session_factory, actor=security.actor(), now=moment,
                                            signer=state.statement_signer)
    flash(f"{len(closed)} cycles closed into signed statements." if closed else
          "No cycle was due: every ended cycle is already closed.", "success")
    return redirect(url_for("console.finance_cycles"), code=303)


def _signature_checks(item: settlement.ClosedStatement) -> list[SignatureCheck]:
    public_key = hub_state().statement_signer.signing_key.public_key()
    checks = []
    for name, document, signature in (("JSON", item.document_json, item.signature_json),
                                      ("CSV", item.document_csv, item.signature_csv)):
        try:
            parsed = settlement.parse_signature(signature)
            settlement.verify_statement(document, parsed, {hub_state().statement_signer.key_id: public_key})
            checks.append(SignatureCheck(name, True, parsed.key_id, "verified with the hub's statement key"))
        except settlement.StatementSignatureRejected as rejected:
            checks.append(SignatureCheck(name, False, item.key_id, f"{rejected.code}: {rejected.detail}"))
    return checks


@console.route("/finance/statements/<int:statement_id>")
@security.requires(*FINANCE)
def finance_statement(statement_id: int) -> str:
    """A statement with its lines, signature status, invoice and payments, reconciliations and disputes."""
    with hub_state().unit_of_work() as uow:
        detail = settlement.statement_detail(uow.session, statement_id=statement_id)
        status = settlement.statement_status(uow.session, statement_id)
        item = settlement.statement_by_id(uow.session, statement_id=statement_id)
        names = staff_directory.display_names(uow.session, [event.actor for event in detail.events])
    return render_template("console/finance/statement.html", detail=detail, status=status,
                           checks=_signature_checks(item), today=_today(), names=names)


@console.route("/finance/statements/<int:statement_id>/document")
@security.requires(*FINANCE)
def finance_statement_document(statement_id: int) -> Response:
    """The exact signed bytes of a statement (JSON or CSV) or a detached signature, as a download."""
    document_format = query_text("format", allowed=tuple(DOCUMENT_FORMATS)) or "csv"
    attribute, content_type, suffix = DOCUMENT_FORMATS[document_format]
    with hub_state().unit_of_work() as uow:
        item = settlement.statement_by_id(uow.session, statement_id=statement_id)
    return Response(getattr(item, attribute), content_type=content_type,
                    headers={"Content-Disposition": f'attachment; filename="statement-{statement_id}.{suffix}"'})


def _back_to_statement(statement_id: int) -> str:
    return url_for("console.finance_statement", statement_id=statement_id)


@console.route("/finance/statements/<int:statement_id>/invoiced", methods=["POST"])
@security.requires(*FINANCE)
def finance_mark_invoiced(statement_id: int) -> BaseResponse:
    """Mark a statement invoiced, once."""
    return change(settlement.mark_invoiced, statement_id=statement_id,
                  reference=form_text("reference", max_length=64),
                  success=lambda result: f"Statement {result.statement_id} marked invoiced.",
                  back=_back_to_statement(statement_id))


@console.route("/finance/statements/<int:statement_id>/payments", methods=["POST"])
@security.requires(*FINANCE)
def finance_record_payment(statement_id: int) -> BaseResponse:
    """Record a (partial) payment of an invoiced statement."""
    try:
        paid_on = date.fromisoformat(form_text("paid_on") or "")
    except ValueError:
        raise BadRequest("paid on must be a date such as 2026-11-30") from None
    with hub_state().read_only_unit_of_work() as uow:
        currency = settlement.statement_status(uow.session, statement_id).currency
    return change(settlement.record_payment, statement_id=statement_id,
                  amount_minor=form_money("amount", currency), paid_on=paid_on,
                  reference=form_text("reference", max_length=64),
                  success=lambda result: f"Payment recorded: {money(result.paid_minor, currency)} paid, "
                                         f"{money(result.outstanding_minor, currency)} outstanding.",
                  back=_back_to_statement(statement_id))


@console.route("/finance/statements/<int:statement_id>/reconciliations", methods=["POST"])
@security.requires(*FINANCE)
def finance_reconcile(statement_id: int) -> BaseResponse:
    """Reconcile the statement against a partner's CSV pasted or uploaded into the form."""
    upload = request.files.get("document_file")
    document = upload.read() if upload is not None and upload.filename else \
        (form_text("document", max_length=16 * 1024 * 1024) or "").encode("utf-8")
    return change(settlement.reconcile_statement, statement_id=statement_id, document=document, source="back_office",
                  success=lambda result: f"Reconciliation report {result.id} stored: "
                                         f"{result.discrepancies} discrepancies.",
                  back=_back_to_statement(statement_id))


@console.route("/finance/statements/<int:statement_id>/disputes", methods=["POST"])
@security.requires(*FINANCE)
def finance_open_dispute(statement_id: int) -> BaseResponse:
    """Dispute one line of the statement."""
    return change(settlement.open_dispute, statement_id=statement_id, line_number=form_whole_number("line_number"),
                  reason=form_text("reason", max_length=settlement.MAX_REASON_LENGTH),
                  success=lambda result: f"Dispute {result.id} opened on line {result.line_number}.",
                  back=_back_to_statement(statement_id))


POSITION_SORTS = ("partner", "net", "paid", "still")


@dataclass(frozen=True, slots=True)
class PositionRow:
    """One partner's line of the net position: its net over closed statements, paid, and still to pay."""

    partner: str
    net_minor: int
    paid_minor: int
    still_minor: int


@dataclass(frozen=True, slots=True)
class CycleChoice:
    """A cycle end offered by the picker: when (as the viewer reads it) and whose cycles ended then."""

    value: str
    label: str
    month: str
    chosen: bool


def _cycle_choices(ends: list[settlement.CycleEnd], chosen: datetime | None) -> list[tuple[str, list[CycleChoice]]]:
    """The picker's options by month, newest first: each end as a day and time in the viewer's zone, and whose."""
    months: dict[str, list[CycleChoice]] = {}
    for end in ends:
        when = display.local(end.ends_at)
        whose = ", ".join(f"{code} ({frequency})" for code, frequency in end.partners)
        months.setdefault(f"{when:%B %Y}", []).append(CycleChoice(
            end.ends_at.isoformat(), f"{display.day(when)} {when:%H:%M %Z} — {whose}", f"{when:%B %Y}",
            end.ends_at == chosen))
    return list(months.items())


@console.route("/finance/position")
@security.requires(*FINANCE)
def finance_position() -> str:
    """Net positions over every closed statement, and one cycle's summary with the issuer → redeemer matrix."""
    currency = hub_state().settings.alliance_currency
    sort = query_sort(POSITION_SORTS, "partner")
    with hub_state().read_only_unit_of_work() as uow:
        position = settlement.period_position(uow.session, currency=currency)
        payments = settlement.payment_positions(uow.session, currency=currency)
        ends = settlement.cycle_ends(uow.session, currency=currency)
        chosen_text = query_text("cycle_ends_at", allowed=[end.ends_at.isoformat() for end in ends])
        chosen = datetime.fromisoformat(chosen_text) if chosen_text else (ends[0].ends_at if ends else None)
        summary = settlement.cycle_summary(uow.session, cycle_ends_at=chosen, currency=currency) \
            if chosen else None
    rows = []
    for code, net in position.partner_nets_minor.items():
        paid = payments.get(code)
        rows.append(PositionRow(code, net, paid.paid_minor if paid else 0, paid.open_minor if paid else net))
    rows = sorted_rows(rows, sort, {"partner": lambda row: row.partner, "net": lambda row: row.net_minor,
                                    "paid": lambda row: row.paid_minor, "still": lambda row: row.still_minor})
    at = [end.ends_at for end in ends].index(chosen) if chosen else 0
    newer = ends[at - 1].ends_at.isoformat() if chosen and at > 0 else None
    older = ends[at + 1].ends_at.isoformat() if chosen and at + 1 < len(ends) else None
    matrix_partners = sorted({flow.redeemer_partner_code for flow in summary.issuer_redeemer_matrix}
                             | {flow.issuer_partner_code or "hub" for flow in summary.issuer_redeemer_matrix}) \
        if summary else []
    matrix = {(flow.issuer_partner_code or "hub", flow.redeemer_partner_code): flow.points
              for flow in summary.issuer_redeemer_matrix} if summary else {}
    return render_template("console/finance/position.html", currency=currency, position=position, rows=rows,
                           sort=sort, choices=_cycle_choices(ends, chosen), chosen=chosen, newer=newer, older=older,
                           chosen_end=ends[at] if chosen else None, summary=summary,
                           matrix_partners=matrix_partners, matrix=matrix)


@console.route("/finance/reconciliations")
@security.requires(*FINANCE)
def finance_reconciliations() -> str:
    """Stored reconciliation reports, newest first unless sorted otherwise."""
    page, page_size = query_page()
    sort = query_sort(settlement.RECONCILIATION_SORTS, "report", descending=True)
    with hub_state().read_only_unit_of_work() as uow:
        codes = console_reports.partner_codes(uow.session)
        partner = query_text("partner", allowed=codes)
        only_discrepancies = query_text("discrepancies", allowed=("only",)) is not None
        reports = settlement.reconciliations_page(uow.session, partner_code=partner,
                                                  with_discrepancies=only_discrepancies, page=page,
                                                  page_size=page_size, sort=sort)
        names = staff_directory.display_names(uow.session, [row.uploaded_by for row in reports.items])
    return render_template("console/finance/reconciliations.html", names=names, reports=reports, codes=codes,
                           partner=partner, only_discrepancies=only_discrepancies, pager=pager_args(), sort=sort)


@console.route("/finance/reconciliations/<int:report_id>")
@security.requires(*FINANCE)
def finance_reconciliation(report_id: int) -> str:
    """One reconciliation report: matched, missing on either side, mismatched."""
    with hub_state().unit_of_work() as uow:
        report, partner = settlement.reconciliation_report(uow.session, report_id=report_id)
        names = staff_directory.display_names(uow.session, [report.uploaded_by])
    return render_template("console/finance/reconciliation.html", report=report, partner=partner,
                           content=json.loads(report.report_json), names=names)


@console.route("/finance/reconciliations/<int:report_id>.csv")
@security.requires(*FINANCE)
def finance_reconciliation_csv(report_id: int) -> Response:
    """A reconciliation report as the CSV the hub stored."""
    with hub_state().unit_of_work() as uow:
        report, _ = settlement.reconciliation_report(uow.session, report_id=report_id)
    return Response(report.report_csv, content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="reconciliation-{report_id}.csv"'})


ADJUSTMENT_STATUSES = ("pending", "approved", "rejected")
DISPUTE_STATUSES = ("open", *settlement.RESOLUTIONS)


def _approval_filters() -> tuple[list[str], str | None, str | None]:
    """Partner codes, and the partner and status filters."""
    with hub_state().read_only_unit_of_work() as uow:
        codes = console_reports.partner_codes(uow.session)
    return codes, query_text("partner", allowed=codes), query_text("status", allowed=ADJUSTMENT_STATUSES)


@console.route("/finance/approvals")
@security.requires(*FINANCE)
def finance_approvals() -> str:
    """Adjustments (pending ones to approve or reject, by another person than the requester) and open disputes."""
    page, page_size = query_page()
    sort = query_sort(settlement.ADJUSTMENT_SORTS, "adjustment", descending=True)
    codes, partner, status = _approval_filters()
    with hub_state().unit_of_work() as uow:
        adjustments, total = settlement.adjustments_page(uow.session, partner_code=partner, status=status, page=page,
                                                         page_size=page_size, sort=sort)
        disputes = settlement.list_disputes(uow.session, partner_code=partner, status="open")
        decidable = settlement.decidable_by(uow.session, adjustments, security.actor())
        # What each disputing partner's disputes can be resolved with.
        approved = {code: settlement.list_adjustments(uow.session, partner_code=code, status="approved")
                    for code in sorted({dispute.partner for dispute in disputes})}
        names = staff_directory.display_names(uow.session, [
            *(item.requested_by for item in adjustments), *(item.decided_by for item in adjustments if item.decided_by),
            *(dispute.opened_by for dispute in disputes), security.actor()])
    shown = console_reports.Page(adjustments, total, page, page_size)
    return render_template("console/finance/approvals.html", adjustments=shown, disputes=disputes, codes=codes,
                           names=names,
                           decidable=decidable, approved=approved, sort=sort,
                           partner=partner, status=status, statuses=ADJUSTMENT_STATUSES, pager=pager_args(),
                           me=security.actor(), person=security.current_staff().person)


@console.route("/finance/adjustments.csv")
@security.requires(*FINANCE)
def finance_adjustments_csv() -> Response:
    """Adjustments matching the filters, as CSV."""
    _, partner, status = _approval_filters()
    with hub_state().read_only_unit_of_work() as uow:
        adjustments = settlement.list_adjustments(uow.session, partner_code=partner, status=status)
    return csv_reply("adjustments.csv",
                     ["id", "partner", "amount_minor", "currency", "reason", "reference", "status", "requested_by",
                      "requested_at", "decided_by", "decided_at", "applied_run_id"],
                     [[item.id, item.partner, item.amount_minor, item.currency, item.reason, item.reference,
                       item.status, item.requested_by, item.requested_at.isoformat(), item.decided_by or "",
                       item.decided_at.isoformat() if item.decided_at else "", item.applied_run_id or ""]
                      for item in adjustments])


@console.route("/finance/adjustments", methods=["POST"])
@security.requires(*FINANCE)
def finance_request_adjustment() -> BaseResponse:
    """Request an adjustment; someone else approves it."""
    partner_code = form_text("partner", max_length=40) or ""
    with hub_state().read_only_unit_of_work() as uow:
        currency = partners.currency_of(uow.session, partner_code)
    return change(settlement.request_adjustment, partner_code=partner_code,
                  amount_minor=form_money("amount", currency, signed=True),
                  reason=form_text("reason", max_length=settlement.MAX_REASON_LENGTH),
                  reference=form_text("reference", max_length=64),
                  success=lambda result: f"Adjustment {result.id} requested; another person must approve it.",
                  back=url_for("console.finance_approvals"))


@console.route("/finance/adjustments/<int:adjustment_id>/decision", methods=["POST"])
@security.requires(*FINANCE)
def finance_decide_adjustment(adjustment_id: int) -> BaseResponse:
    """Approve or reject a pending adjustment (the service refuses the requester)."""
    decision = form_choice("decision", settlement.DECISIONS, "decision is approve or reject")
    return change(settlement.decide_adjustment, adjustment_id=adjustment_id, decision=decision,
                  success=lambda result: f"Adjustment {result.id} is now {result.status}.",
                  back=url_for("console.finance_approvals"))


@console.route("/finance/disputes/<int:dispute_id>/resolution", methods=["POST"])
@security.requires(*FINANCE)
def finance_resolve_dispute(dispute_id: int) -> BaseResponse:
    """Resolve an open dispute with an approved adjustment, or reject it."""
    outcome = form_text("outcome", max_length=10)
    adjustment_text = form_text("adjustment_id", required=False, max_length=20)
    try:
        adjustment_id = int(adjustment_text) if adjustment_text else None
    except ValueError:
        raise BadRequest("adjustment id must be a whole number") from None
    return change(settlement.resolve_dispute, dispute_id=dispute_id, outcome=outcome, adjustment_id=adjustment_id,
                  success=lambda result: f"Dispute {result.id} is now {result.status}.",
                  back=url_for("console.finance_approvals"))
