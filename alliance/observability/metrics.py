"""The hub's Prometheus metrics: what is counted, where, and how ``/metrics`` exposes it.

Every metric of the hub is declared here, with the Prometheus client library doing
the counting, the multiprocess collection and the exposition format. Under gunicorn
each worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` (set for the web
processes only; ``alliance.gunicorn_conf`` empties it at start and retires a dead
worker's files), and a scrape of any worker adds them up. Without that variable (``alliance
serve``, tests) the values live in the process.

Labels are bounded and carry no personal data: routes are Flask's URL rules (never
the path a client sent), partners are partner codes (only of registered partners),
reasons are problem codes, kinds are ledger transaction kinds, jobs are job names.
Figures about the whole alliance (holds open, cycles due, statements overdue, when
each job last succeeded, the webhook outbox) are read from the database at scrape time by
``DatabaseCollector``, so every host reports the same value: aggregate them with
``max``, never ``sum``.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterator, cast

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, QueuePool

logger = logging.getLogger(__name__)

MULTIPROCESS_DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "unmatched"
UNVERIFIED_PARTNER = "unverified"
UNKNOWN_PARTNER = "unknown"
# Request latencies from a cached balance read (~1 ms) to a batch of a thousand receipts.
LATENCY_BUCKETS_S = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
POOL_WAIT_BUCKETS_S = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)

REQUEST_DURATION = Histogram(
    "alliance_http_request_duration_seconds", "Time from a request's arrival to its response, by URL rule and status.",
    ["route", "method", "status"], buckets=LATENCY_BUCKETS_S)
PARTNER_REQUESTS = Counter(
    "alliance_partner_requests", "Partner API requests by partner code and status (unverified: no valid signature).",
    ["partner", "status"])
PARTNER_REFUSALS = Counter(
    "alliance_partner_refusals", "Partner requests refused for their signature, key or terminal, by problem code.",
    ["partner", "reason"])
IDEMPOTENT_REPLAYS = Counter(
    "alliance_idempotent_replays", "Writes answered from their stored reply (a resend under the same Idempotency-Key).",
    ["partner"])
RATE_LIMITED = Counter(
    "alliance_rate_limited", "Partner requests refused with 429 for the partner's rate or in-flight limit.",
    ["partner"])
LEDGER_POSTINGS = Counter(
    "alliance_ledger_postings", "Journal transactions committed, by transaction kind.", ["kind"])
LEDGER_POINTS = Counter(
    "alliance_ledger_points", "Points moved by committed journal transactions (the sum of their debits), by kind.",
    ["kind"])
POOL_IN_USE = Gauge(
    "alliance_db_pool_connections_in_use", "Database connections lent out by the hub's pools.", ["pool"],
    multiprocess_mode="livesum")
POOL_WAIT = Histogram(
    "alliance_db_pool_checkout_wait_seconds", "Time a unit of work waited for a pooled database connection.",
    ["pool"], buckets=POOL_WAIT_BUCKETS_S)
JOB_RUNS = Counter(
    "alliance_job_runs", "Scheduled job runs in this scheduler process: ran, skipped (another process held the "
    "lease) or failed.", ["job", "outcome"])
JOB_DURATION = Histogram(
    "alliance_job_duration_seconds", "How long a scheduled job's run took in this scheduler process.", ["job"],
    buckets=JOB_BUCKETS_S)
WEBHOOK_DELIVERIES = Counter(
    "alliance_webhook_deliveries", "Webhook deliveries attempted by this delivery process, by outcome: delivered "
    "(2xx), failed (to be tried again, or given up) or gone (410: the endpoint disabled).", ["outcome"])

# Read from the database at scrape time (DatabaseCollector).
DATABASE_GAUGES = {
    "alliance_redemption_holds_open": "Redemption holds authorized and neither captured, voided nor expired.",
    "alliance_settlement_cycles_due_unclosed": "Settlement cycles ended longer ago than the closing grace and not "
                                               "closed.",
    "alliance_statements_overdue": "Statements owed to the hub, past their due date and not fully paid.",
    "alliance_job_last_success_timestamp_seconds": "When each scheduled job last succeeded, on any host.",
    "alliance_job_last_duration_seconds": "How long each scheduled job's last run took, on any host.",
    "alliance_job_interval_seconds": "How often each scheduled job is meant to run.",
    "alliance_replica_lag_seconds": "How far the report replica's replay is behind (only with a replica).",
    "alliance_webhook_deliveries_pending": "Webhook deliveries waiting to be sent: due now or at their next retry.",
    "alliance_webhook_backlog_age_seconds": "How long the longest-waiting due webhook delivery has waited past its "
                                            "attempt time (0 when none is due).",
    "alliance_webhook_endpoints_disabled": "Disabled webhook endpoints, by partner code (only partners with one).",
}

# Every metric name the hub exposes, as Prometheus sees it (the deploy rules and dashboard use only these).
METRIC_NAMES = frozenset({
    "alliance_http_request_duration_seconds", "alliance_partner_requests_total", "alliance_partner_refusals_total",
    "alliance_idempotent_replays_total", "alliance_rate_limited_total", "alliance_ledger_postings_total",
    "alliance_ledger_points_total", "alliance_db_pool_connections_in_use", "alliance_db_pool_checkout_wait_seconds",
    "alliance_job_runs_total", "alliance_job_duration_seconds", "alliance_webhook_deliveries_total", *DATABASE_GAUGES,
})


@dataclass
class _Switch:
    on: bool = True


_SWITCH = _Switch()


def enabled() -> bool:
    """Whether this process counts (``ALLIANCE_METRICS``); off, nothing is counted and ``/metrics`` is 404."""
    return _SWITCH.on


def switch(on: bool) -> None:
    """Turn counting on or off for this process (the app factory does, from its settings)."""
    _SWITCH.on = on


def multiprocess_directory() -> str | None:
    """The directory gunicorn's workers share their values through, if this process uses one."""
    return os.environ.get(MULTIPROCESS_DIRECTORY_VARIABLE) or None


# --- requests ---------------------------------------------------------------------------


def observe_request(*, route: str, method: str, status: int, duration_s: float, partner: str | None,
                    problem_code: str | None, replayed: bool) -> None:
    """Count one finished request (``partner``: a partner API request's partner code, else None)."""
    status_text = str(status)
    REQUEST_DURATION.labels(route, method, status_text).observe(duration_s)
    if partner is None:
        return
    PARTNER_REQUESTS.labels(partner, status_text).inc()
    if problem_code in REFUSAL_CODES:
        PARTNER_REFUSALS.labels(partner, problem_code).inc()
    elif status == 429:
        RATE_LIMITED.labels(partner).inc()
    if replayed:
        IDEMPOTENT_REPLAYS.labels(partner).inc()


# The refusals of a request's signature, key or terminal: a bounded set of problem codes.
REFUSAL_CODES = frozenset({
    "signature_missing", "signature_malformed", "signature_invalid", "signature_expired", "signature_replayed",
    "signature_nonce", "signature_label", "signature_components", "signature_parameters", "signature_algorithm",
    "signature_multiple", "content_digest_missing", "content_digest_malformed", "content_digest_mismatch",
    "key_unknown", "key_revoked", "key_expired", "key_unusable", "partner_inactive", "terminal_mismatch",
    "terminal_retired",
})


# --- ledger postings, counted when their transaction commits ----------------------------

_PENDING_POSTINGS = "alliance.metrics.postings"


def count_posting(session: Session, kind: str, points: int, postings: int = 1) -> None:
    """Note ``postings`` journal transactions of ``kind`` moving ``points``; counted if the session commits."""
    if not _SWITCH.on:
        return
    pending: dict[str, list[int]] = session.info.setdefault(_PENDING_POSTINGS, {})
    totals = pending.setdefault(kind, [0, 0])
    totals[0] += postings
    totals[1] += points


def count_postings_on_commit(session_factory: sessionmaker[Session]) -> None:
    """Count the postings a session noted when it commits; forget them when it rolls back."""
    event.listen(session_factory, "after_commit", _count_committed)
    event.listen(session_factory, "after_soft_rollback", _forget_rolled_back)


def _count_committed(session: Session) -> None:
    pending = session.info.pop(_PENDING_POSTINGS, None)
    for kind, (postings, points) in (pending or {}).items():
        LEDGER_POSTINGS.labels(kind).inc(postings)
        LEDGER_POINTS.labels(kind).inc(points)


def _forget_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    # Every rollback of the whole transaction, whether or not it reached the database;
    # a savepoint's leaves the outer transaction's postings pending.
    if previous_transaction.parent is None:
        session.info.pop(_PENDING_POSTINGS, None)


# --- database pools ---------------------------------------------------------------------


class TimedQueuePool(QueuePool):
    """SQLAlchemy's ``QueuePool`` that times each checkout: the wait in line, or for a new connection.

    ``_do_get`` is the method a pool implements to hand out a connection; the pool's
    events see only its end. A pool made again (``engine.dispose()``) keeps its class.
    """

    metrics_name = "primary"

    def _do_get(self) -> ConnectionPoolEntry:
        if not _SWITCH.on:
            return super()._do_get()
        started = time.perf_counter()
        try:
            return super()._do_get()
        finally:
            POOL_WAIT.labels(self.metrics_name).observe(time.perf_counter() - started)


@functools.cache
def pool_class(name: str) -> type[TimedQueuePool]:
    """The timed pool class of the pool called ``name`` (primary, replica, migration)."""
    # SQLAlchemy names a pool's logger after its class's module: this one logs with
    # SQLAlchemy's own pools (quiet unless an engine asks for ``echo_pool``).
    return type(f"TimedQueuePool_{name}", (TimedQueuePool,),
                {"metrics_name": name, "__module__": "sqlalchemy.pool.impl"})


def instrument_pool(engine: Engine, name: str) -> None:
    """Count the connections ``engine``'s pool lends out (events on the engine outlive a pool made again)."""
    in_use = POOL_IN_USE.labels(name)
    # A pool entry always has its record_info dictionary: SQLAlchemy declares the attribute Optional
    # for every ManagesConnection because a detached proxied connection (never an entry) has none.

    def checked_out(_dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry,
                    _proxy: PoolProxiedConnection) -> None:
        if _SWITCH.on:
            cast("dict[Any, Any]", record.record_info)[_LENT] = True
            in_use.inc()

    def given_back(_dbapi_connection: DBAPIConnection | None, record: ConnectionPoolEntry | None) -> None:
        # Checked in, or detached: taken out of the pool for good, never to be checked in.
        if record is not None and cast("dict[Any, Any]", record.record_info).pop(_LENT, False):
            in_use.dec()

    event.listen(engine, "checkout", checked_out)
    event.listen(engine, "checkin", given_back)
    event.listen(engine, "detach", given_back)


_LENT = "alliance.metrics.lent"


# --- scheduled jobs (the scheduler process) ---------------------------------------------


def observe_job(job: str, outcome: str, duration_s: float | None) -> None:
    """Count one run of ``job`` in this scheduler process: ran, skipped or failed."""
    JOB_RUNS.labels(job, outcome).inc()
    if duration_s is not None:
        JOB_DURATION.labels(job).observe(duration_s)


# --- webhook deliveries (the delivery process) ------------------------------------------


def observe_webhook_delivery(outcome: str) -> None:
    """Count one delivery attempt of this delivery process: delivered, failed or gone."""
    WEBHOOK_DELIVERIES.labels(outcome).inc()


# --- what the whole alliance looks like, read at scrape time ----------------------------


@dataclass(frozen=True, slots=True)
class JobLeaseFigures:
    """One job's lease as the database holds it: when it last succeeded, started and finished (any host)."""

    job: str
    last_succeeded_at: datetime | None
    last_started_at: datetime | None
    last_finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class WebhookFigures:
    """The webhook outbox as the database holds it: deliveries waiting, the longest wait past due, disabled
    endpoints by partner code."""

    pending: int
    backlog_age_s: float
    disabled_by_partner: dict[str, int]


@dataclass(frozen=True, slots=True)
class DatabaseFigures:
    """The alliance-wide figures of one scrape, as read from the database (``DATABASE_GAUGES``)."""

    holds_open: int
    cycles_due: int
    statements_overdue: int
    leases: list[JobLeaseFigures]
    job_intervals_s: dict[str, float]
    replica_lag_s: float | None = None
    webhooks: WebhookFigures | None = None


class DatabaseCollector:
    """The alliance-wide figures, read from the database on each scrape (a handful of indexed queries).

    ``read`` reads them (the web layer gives it, from ``alliance.services.alliance_figures``,
    so this module, which the database layer imports, depends on no service). A figure
    that cannot be read (the database is failing over) is left out of that scrape rather
    than reported as zero, so an alert on it neither fires nor clears on a guess.
    """

    def __init__(self, read: Callable[[], DatabaseFigures]) -> None:
        self.read = read

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            figures = self.read()
        except SQLAlchemyError as error:
            logger.warning("metrics: the database figures were left out of this scrape (%s)", type(error).__name__)
            return
        yield _gauge("alliance_redemption_holds_open", figures.holds_open)
        yield _gauge("alliance_settlement_cycles_due_unclosed", figures.cycles_due)
        yield _gauge("alliance_statements_overdue", figures.statements_overdue)
        succeeded = _family("alliance_job_last_success_timestamp_seconds", ["job"])
        duration = _family("alliance_job_last_duration_seconds", ["job"])
        for lease in figures.leases:
            if lease.last_succeeded_at is not None:
                succeeded.add_metric([lease.job], lease.last_succeeded_at.timestamp())
            started_at, finished_at = lease.last_started_at, lease.last_finished_at
            if started_at is not None and finished_at is not None and finished_at >= started_at:
                duration.add_metric([lease.job], (finished_at - started_at).total_seconds())
        yield succeeded
        yield duration
        interval = _family("alliance_job_interval_seconds", ["job"])
        for job, interval_s in figures.job_intervals_s.items():
            interval.add_metric([job], interval_s)
        yield interval
        if figures.replica_lag_s is not None:
            yield _gauge("alliance_replica_lag_seconds", figures.replica_lag_s)
        if figures.webhooks is not None:
            yield _gauge("alliance_webhook_deliveries_pending", figures.webhooks.pending)
            yield _gauge("alliance_webhook_backlog_age_seconds", figures.webhooks.backlog_age_s)
            disabled = _family("alliance_webhook_endpoints_disabled", ["partner"])
            for partner, count in sorted(figures.webhooks.disabled_by_partner.items()):
                disabled.add_metric([partner], count)
            yield disabled


def _family(name: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, DATABASE_GAUGES[name], labels=labels)


def _gauge(name: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, DATABASE_GAUGES[name], value=value)


def exposition(read_database_figures: Callable[[], DatabaseFigures]) -> tuple[bytes, str]:
    """The text exposition of a scrape: this host's processes' values and the database's figures."""
    database = CollectorRegistry(auto_describe=False)
    database.register(DatabaseCollector(read_database_figures))
    directory = multiprocess_directory()
    if directory:
        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes, path=directory)
        local = generate_latest(processes)
    else:
        local = generate_latest(REGISTRY)
    return local + generate_latest(database), CONTENT_TYPE_PLAIN_0_0_4

