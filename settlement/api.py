"""Settlement's public surface: what the web layer, the console, the CLI, the scheduler and the metrics use.

Everything outside the ``settlement`` package reaches settlement through this module
(``tests/unit/test_layering.py`` checks it for ``alliance``'s web, console and CLI
layers, the scheduler, the app factory and the metrics; ``alliance.services`` may also
use the pure core's values and renderers, never the settlement services directly).
The modules behind it:

- the pure core, plain values in and out, no database: ``cycles`` (when a partner's
  cycle closes), ``netting`` (statement lines, nets, the cycle summary),
  ``statements`` (canonical documents, signatures, the balance chain), ``matching``
  (a partner's CSV against the hub's records) and ``keys`` (the statement key);
- the settlement services, on a SQLAlchemy session: ``closing`` (aggregate, lock,
  sign and store a cycle, exactly once), ``finance`` (adjustments, invoices, payments,
  disputes, overdue), ``reconciliation`` (store a matching report for a statement),
  ``reports`` (what the console's finance pages read), ``credit`` (partners'
  credit exposure, limits and alerts), ``liability`` (the points liability report) and ``locking`` (the partner's
  settlement lock they share).

The names below are re-exported unchanged; their documentation is in those modules.
"""

from __future__ import annotations

from settlement import credit
from settlement.closing import (
    DEFAULT_CLOSING_GRACE,
    MAX_STATEMENT_PAGE_SIZE,
    ClosedStatement,
    PartnerDue,
    PeriodPosition,
    StatementSummary,
    close_cycle,
    close_due_cycles,
    close_due_cycles_by,
    closing_job,
    cycle_summary,
    due_by_partner,
    partner_statement_count,
    partner_statement_page,
    partner_statements,
    period_position,
    statement_by_id,
)
from settlement.cycles import Cycle, Frequency, cycle_containing
from settlement.finance import (
    ADJUSTMENT_SORTS,
    DECISIONS,
    MAX_PAGE_SIZE,
    MAX_REASON_LENGTH,
    RESOLUTIONS,
    AdjustmentNotUsable,
    AdjustmentView,
    AlreadyDecided,
    AlreadyInvoiced,
    DisputeClosed,
    DisputeView,
    DuplicateReference,
    NothingOwed,
    NotInvoiced,
    Overpayment,
    SameApprover,
    StatementStatus,
    adjustment_by_id,
    adjustments_page,
    apply_prepaid,
    decidable_by,
    decide_adjustment,
    dispute_by_id,
    disputes_page,
    list_adjustments,
    list_disputes,
    mark_invoiced,
    open_dispute,
    overdue,
    overdue_job,
    overdue_total,
    record_payment,
    request_adjustment,
    resolve_dispute,
    statement_status,
)
from settlement.keys import (
    StatementSigner,
    load_public_key,
    load_statement_private_key,
    private_key_pem,
    public_key_pem,
    statement_key_id,
)
from settlement.liability import (
    HUB_ISSUER,
    LOOK_BACK_MONTHS,
    LiabilityLine,
    LiabilityReport,
    RedemptionPrice,
    as_of_moment,
    member_liability_points,
    member_liability_points_by_kind,
    points_liability,
)
from settlement.liability import major_units as liability_major_units
from settlement.liability import render_csv as render_liability_csv
from settlement.reconciliation import reconcile_statement
from settlement.reports import (
    CLOSED_CYCLE_SORTS,
    NET_DIRECTIONS,
    RECONCILIATION_SORTS,
    STATEMENT_STATES,
    ClosedCycleRow,
    CycleEnd,
    OpenCycleRow,
    PaymentPosition,
    ReconciliationRow,
    StatementDetail,
    closed_cycles_page,
    cycle_ends,
    open_cycles,
    payment_positions,
    reconciliation_report,
    reconciliations_page,
    statement_detail,
)
from settlement.statements import StatementSignatureRejected, parse_signature, verify_statement

__all__ = [
    # Closing and reading statements.
    "DEFAULT_CLOSING_GRACE", "MAX_STATEMENT_PAGE_SIZE", "ClosedStatement", "PartnerDue", "PeriodPosition",
    "StatementSummary", "close_cycle", "close_due_cycles", "close_due_cycles_by", "closing_job", "cycle_summary",
    "due_by_partner", "partner_statement_count", "partner_statement_page", "partner_statements", "period_position",
    "statement_by_id",
    # Partners' credit exposure, limits and alerts (the module: ``credit.refresh``, ``credit.credit_of``, ...).
    "credit",
    # Cycles.
    "Cycle", "Frequency", "cycle_containing",
    # The finance workflow.
    "DECISIONS", "MAX_PAGE_SIZE", "MAX_REASON_LENGTH", "RESOLUTIONS", "AdjustmentNotUsable", "AdjustmentView",
    "AlreadyDecided", "AlreadyInvoiced", "DisputeClosed", "DisputeView", "DuplicateReference", "NothingOwed",
    "NotInvoiced", "Overpayment", "SameApprover", "StatementStatus", "adjustment_by_id", "adjustments_page",
    "apply_prepaid",
    "ADJUSTMENT_SORTS", "RECONCILIATION_SORTS",
    "decidable_by", "decide_adjustment", "dispute_by_id", "disputes_page", "list_adjustments", "list_disputes",
    "mark_invoiced", "overdue_job",
    "open_dispute", "overdue", "overdue_total", "record_payment", "request_adjustment", "resolve_dispute",
    "statement_status",
    # The statement key and verifying what it signed.
    "StatementSigner", "load_public_key", "load_statement_private_key", "private_key_pem", "public_key_pem",
    "statement_key_id", "StatementSignatureRejected", "parse_signature", "verify_statement",
    # Reconciliation.
    "reconcile_statement",
    # What the console's finance pages read.
    "CLOSED_CYCLE_SORTS", "NET_DIRECTIONS", "STATEMENT_STATES", "ClosedCycleRow", "CycleEnd", "OpenCycleRow",
    "PaymentPosition", "payment_positions", "ReconciliationRow", "StatementDetail",
    "closed_cycles_page", "cycle_ends", "open_cycles", "reconciliation_report", "reconciliations_page",
    "statement_detail",
    # The points liability for finance.
    "HUB_ISSUER", "LOOK_BACK_MONTHS", "LiabilityLine", "LiabilityReport", "RedemptionPrice",
    "as_of_moment", "member_liability_points", "member_liability_points_by_kind", "points_liability",
    "liability_major_units", "render_liability_csv",
]
