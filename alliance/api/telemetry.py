"""Every request's log line and figures, and the ``/metrics`` route.

``/metrics`` answers only a bearer token equal to ``ALLIANCE_METRICS_TOKEN`` (compared
in constant time) and is a 404 without one configured or with ``ALLIANCE_METRICS=off``.
It is on the hub's own port rather than a listener of its own: gunicorn's workers
share their values through the multiprocess directory, so any worker can answer a
scrape, and a host keeps one port to firewall. The load balancer never routes it
(``deploy/templates/haproxy.cfg.j2``); Prometheus scrapes each hub host directly.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import cast

from flask import Blueprint, Flask, Response, abort, g, request
from sqlalchemy.exc import SQLAlchemyError

from alliance.extensions import HubState, hub_state
from alliance.observability import metrics
from alliance.observability.logs import REQUEST_LOGGER
from alliance.scheduler import hub_jobs
from alliance.services import alliance_figures, partners

blueprint = Blueprint("telemetry", __name__)
PARTNER_PREFIX = "/partner/"
REPLAY_HEADER = "Idempotent-Replayed"
logger = logging.getLogger(__name__)


@blueprint.get("/metrics")
def metrics_view() -> Response:
    """The Prometheus exposition of this host: its processes' counters and the database's figures."""
    state = hub_state()
    token = state.settings.metrics_token
    if not metrics.enabled() or not token:
        abort(404)
    offered = request.headers.get("Authorization", "")
    if not hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
        response = Response("a bearer token is required\n", status=401, content_type="text/plain; charset=utf-8")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = metrics.exposition(lambda: _database_figures(state))
    return Response(body, content_type=content_type)


def _database_figures(state: HubState) -> metrics.DatabaseFigures:
    """The alliance-wide figures, read on the report replica while it keeps up."""
    now = datetime.now(timezone.utc)
    with state.read_only_unit_of_work() as uow:
        figures = alliance_figures.database_figures(
            uow.session, now=now, time_zone=state.settings.alliance_time_zone,
            job_intervals_s={job.name: job.interval_s for job in hub_jobs(state)})
    if state.reads.replica_engine is not None:
        figures = replace(figures, replica_lag_s=state.reads.replica_lag_s())
    return figures


class PartnerCodes:
    """One hub's partner codes by partner id, read once per partner per process (codes never change)."""

    def __init__(self) -> None:
        self._codes: dict[int, str] = {}
        self._lock = threading.Lock()

    def code(self, partner_id: int) -> str:
        """The partner's code; ``unknown`` if it cannot be read now (the database failing over)."""
        code = self._codes.get(partner_id)
        if code is not None:
            return code
        try:
            with hub_state().session_factory() as session:
                code = partners.partner_code(session, partner_id)
        except SQLAlchemyError:
            return metrics.UNKNOWN_PARTNER
        if code is None:
            return metrics.UNKNOWN_PARTNER
        with self._lock:
            self._codes[partner_id] = code
        return code


PARTNER_CODES_KEY = "partner_codes"


def partner_codes() -> PartnerCodes:
    """This app's partner codes (on its hub state: ids mean something only in one database)."""
    extras = hub_state().extras
    codes = extras.get(PARTNER_CODES_KEY)
    if codes is None:
        codes = extras.setdefault(PARTNER_CODES_KEY, PartnerCodes())
    # The extras hold values of several kinds; under this key, always a PartnerCodes.
    return cast(PartnerCodes, codes)


def _start() -> None:
    g.started_s = time.perf_counter()


def _finish(response: Response) -> Response:
    started_s = g.get("started_s")
    if started_s is None:
        return response
    duration_s = time.perf_counter() - started_s
    rule = request.url_rule
    route = rule.rule if rule is not None else metrics.UNMATCHED_ROUTE
    if route == "/metrics":
        return response
    partner_id, key_id = _signer()
    on_partner_api = request.path.startswith(PARTNER_PREFIX)
    partner = None
    if on_partner_api:
        partner = partner_codes().code(partner_id) if partner_id is not None else (
            metrics.UNKNOWN_PARTNER if g.get("problem_code") in metrics.REFUSAL_CODES else metrics.UNVERIFIED_PARTNER)
    if metrics.enabled():
        metrics.observe_request(route=route, method=request.method, status=response.status_code,
                                duration_s=duration_s, partner=partner, problem_code=g.get("problem_code"),
                                replayed=response.headers.get(REPLAY_HEADER) == "true")
    if hub_state().settings.request_log == "on":
        REQUEST_LOGGER.info("request", extra={
            "request_id": g.get("request_id"), "partner": partner, "key_id": key_id, "route": route,
            "method": request.method, "status": response.status_code, "problem": g.get("problem_code"),
            "duration_ms": round(duration_s * 1000, 3),
        })
    return response


def _signer() -> tuple[int | None, str | None]:
    """The partner and key behind this request: who signed it, or whose registered key a refusal named."""
    caller = g.get("caller")
    if caller is not None:
        return caller.partner_id, caller.key_id
    signer = g.get("signer")
    if signer is not None:
        return signer
    return g.get("problem_partner_id"), None


def init_app(app: Flask) -> None:
    """Time and count every request, log its line, serve ``/metrics``."""
    app.register_blueprint(blueprint)
    app.before_request(_start)
    app.after_request(_finish)
