"""What the hub tells its operator: /metrics, the figures each request and posting adds, and the log lines.

Counters are process-wide, so each test compares a figure before and after what it does.
"""

from __future__ import annotations

import io
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from alliance.config import Settings
from alliance.domain.errors import ConfigurationError
from alliance.extensions import hub_state
from alliance.observability import metrics
from alliance.observability.logs import configure_logging
from alliance.scheduler import hub_jobs, run_scheduler
from alliance.services.jobs import run_exclusively
from tests.back_office_support import hub_app, run_cli
from tests.factories import make_member, make_signing_partner
from tests.http_server import purchase_payload, send_prepared, send_signed, serve, wall_clock_partner_time
from tests.signing import sign_request

TOKEN = "metrics-token-for-tests-0123456789"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def observed(postgres_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A PostgreSQL hub with metrics on and a token, its JSON log lines captured."""
    app = hub_app(postgres_url, tmp_path / "instance", metrics_token=TOKEN)
    lines = io.StringIO()
    configure_logging("json", stream=lines)
    try:
        yield app, lines
    finally:
        configure_logging("json")
        hub_state(app).dispose()


def records(lines: io.StringIO, logger: str) -> list[dict]:  # type: ignore[type-arg]
    return [record for record in map(json.loads, lines.getvalue().splitlines()) if record["logger"] == logger]


def test_metrics_need_the_bearer_token_and_are_absent_without_one_configured(observed, postgres_url, tmp_path):
    app, _ = observed
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    refused = client.get("/metrics", headers={"Authorization": "Bearer not-the-token-0123456789"})
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    served = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert served.status_code == 200 and served.content_type.startswith("text/plain; version=0.0.4")
    names = {family.name for family in text_string_to_metric_families(served.get_data(as_text=True))}
    assert {"alliance_http_request_duration_seconds", "alliance_job_interval_seconds",
            "alliance_redemption_holds_open", "alliance_statements_overdue",
            "alliance_settlement_cycles_due_unclosed"} <= names
    without_token = hub_app(postgres_url, tmp_path / "other")
    try:
        assert without_token.test_client().get("/metrics").status_code == 404
    finally:
        hub_state(without_token).dispose()


def test_a_signed_earn_counts_for_its_partner_route_and_ledger_and_logs_one_line(observed):
    app, lines = observed
    hub = hub_state(app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created, code="obs-shop")
    member = make_member(hub, now=created)
    before = {
        "requests": value("alliance_partner_requests_total", partner="obs-shop", status="201"),
        "route": value("alliance_http_request_duration_seconds_count", route="/partner/v1/purchases", method="POST",
                       status="201"),
        "postings": value("alliance_ledger_postings_total", kind="earn"),
        "points": value("alliance_ledger_points_total", kind="earn"),
        "replays": value("alliance_idempotent_replays_total", partner="obs-shop"),
        # The gauge is the process's: other tests' hubs may hold connections of their own.
        "in_use": value("alliance_db_pool_connections_in_use", pool="primary"),
    }
    key = str(uuid.uuid4())
    payload = purchase_payload("obs-r1", member.card_number)
    with serve(app) as base_url:
        earned = send_signed(base_url, partner, "POST", "/partner/v1/purchases", payload, idempotency_key=key)
        again = send_signed(base_url, partner, "POST", "/partner/v1/purchases", payload, idempotency_key=key)
    assert earned.status == 201 and again.status == 201 and again.headers["idempotent-replayed"] == "true"
    points = earned.body["points"]["total"]
    assert value("alliance_partner_requests_total", partner="obs-shop", status="201") == before["requests"] + 2
    assert value("alliance_http_request_duration_seconds_count", route="/partner/v1/purchases", method="POST",
                 status="201") == before["route"] + 2
    # The replay posts nothing: one earn transaction, its points once.
    assert value("alliance_ledger_postings_total", kind="earn") == before["postings"] + 1
    assert value("alliance_ledger_points_total", kind="earn") == before["points"] + points
    assert value("alliance_idempotent_replays_total", partner="obs-shop") == before["replays"] + 1
    assert value("alliance_db_pool_connections_in_use", pool="primary") == before["in_use"]
    logged = [record for record in records(lines, "alliance.request") if record["route"] == "/partner/v1/purchases"]
    assert len(logged) == 2
    first = logged[0]
    assert first["partner"] == "obs-shop" and first["key_id"] == partner.key_id and first["status"] == 201
    assert first["method"] == "POST" and first["level"] == "INFO" and first["request_id"] == earned.headers[
        "x-request-id"]
    assert first["duration_ms"] > 0 and datetime.fromisoformat(first["time"]).tzinfo is not None


def test_refusals_count_by_reason_for_the_partner_whose_key_was_named_or_unknown(observed):
    app, lines = observed
    hub = hub_state(app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created, code="obs-refused")
    member = make_member(hub, now=created)
    mismatch_before = value("alliance_partner_refusals_total", partner="obs-refused", reason="content_digest_mismatch")
    unknown_before = value("alliance_partner_refusals_total", partner="unknown", reason="key_unknown")
    body = json.dumps(purchase_payload("obs-r2", member.card_number)).encode()
    with serve(app) as base_url:
        headers = sign_request(method="POST", url=base_url + "/partner/v1/purchases", body=body,
                               key_id=partner.key_id, private_key=partner.private_key,
                               idempotency_key=str(uuid.uuid4()))
        tampered = send_prepared(base_url, "POST", "/partner/v1/purchases", body.replace(b"12345", b"99999"), headers)
        headers = sign_request(method="POST", url=base_url + "/partner/v1/purchases", body=body,
                               key_id="no-such-key", private_key=partner.private_key,
                               idempotency_key=str(uuid.uuid4()))
        unknown = send_prepared(base_url, "POST", "/partner/v1/purchases", body, headers)
    assert tampered.status == 401 and unknown.status == 401
    assert unknown.body["code"] == "key_unknown"
    # The body changed after signing: its digest no longer matches, a refusal about obs-refused's key.
    assert tampered.body["code"] == "content_digest_mismatch"
    assert value("alliance_partner_refusals_total", partner="obs-refused",
                 reason="content_digest_mismatch") == mismatch_before + 1
    assert value("alliance_partner_refusals_total", partner="unknown", reason="key_unknown") == unknown_before + 1
    refused = [record for record in records(lines, "alliance.request") if record["status"] == 401]
    assert [record["partner"] for record in refused] == ["obs-refused", "unknown"]
    # A key id nobody registered is the client's own string: it is not logged.
    assert [record["key_id"] for record in refused] == [None, None]


def test_a_request_over_the_partners_rate_is_counted_as_rate_limited(postgres_url, tmp_path):
    app = hub_app(postgres_url, tmp_path / "instance", partner_rate_per_s=1, partner_burst=1)
    hub = hub_state(app)
    try:
        created = wall_clock_partner_time()
        partner = make_signing_partner(hub, now=created, code="obs-limited")
        before = value("alliance_rate_limited_total", partner="obs-limited")
        with serve(app) as base_url:
            statuses = [send_signed(base_url, partner, "GET", "/partner/v1/statements").status for _ in range(3)]
        limited = statuses.count(429)
        assert limited >= 1
        assert value("alliance_rate_limited_total", partner="obs-limited") == before + limited
    finally:
        hub.dispose()


def test_a_posting_is_counted_when_its_transaction_commits_not_when_it_rolls_back(pg_hub):
    postings_before = value("alliance_ledger_postings_total", kind="rollback-check")
    points_before = value("alliance_ledger_points_total", kind="rollback-check")
    with pg_hub.session_factory() as session:
        # Postings are noted inside the transaction that writes them.
        session.execute(text("SELECT 1"))
        metrics.count_posting(session, "rollback-check", 40)
        assert value("alliance_ledger_postings_total", kind="rollback-check") == postings_before
        session.rollback()
        session.execute(text("SELECT 1"))
        metrics.count_posting(session, "rollback-check", 7)
        session.commit()
    assert value("alliance_ledger_postings_total", kind="rollback-check") == postings_before + 1
    assert value("alliance_ledger_points_total", kind="rollback-check") == points_before + 7


def test_the_database_figures_follow_the_books_and_the_job_leases(observed):
    app, _ = observed
    hub = hub_state(app)

    def scraped() -> dict[tuple[str, tuple], float]:  # type: ignore[type-arg]
        text = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True)
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    first = scraped()
    assert first[("alliance_redemption_holds_open", ())] == 0
    assert ("alliance_job_last_success_timestamp_seconds", (("job", "prune-nonces"),)) not in first
    job = next(job for job in hub_jobs(hub) if job.name == "prune-nonces")
    started = datetime.now(timezone.utc)
    assert run_exclusively(hub.session_factory, job, holder="test", now=started) == 0
    second = scraped()
    succeeded = second[("alliance_job_last_success_timestamp_seconds", (("job", "prune-nonces"),))]
    assert started.timestamp() - 1 <= succeeded <= datetime.now(timezone.utc).timestamp() + 1
    assert second[("alliance_job_last_duration_seconds", (("job", "prune-nonces"),))] >= 0
    assert second[("alliance_job_interval_seconds", (("job", "prune-nonces"),))] == 600


def test_a_clients_request_id_is_kept_and_echoed_and_one_like_a_card_number_is_replaced(observed):
    app, lines = observed
    client = app.test_client()
    kept = client.get("/healthz", headers={"X-Request-Id": "req-7f3a9c2e-0b1d"})
    assert kept.headers["X-Request-Id"] == "req-7f3a9c2e-0b1d"
    replaced = client.get("/healthz", headers={"X-Request-Id": "4111111111111111"})
    assert replaced.headers["X-Request-Id"] != "4111111111111111" and len(replaced.headers["X-Request-Id"]) == 32
    logged = [record["request_id"] for record in records(lines, "alliance.request") if record["route"] == "/healthz"]
    assert logged == ["req-7f3a9c2e-0b1d", replaced.headers["X-Request-Id"]]
    assert "4111111111111111" not in lines.getvalue()


def test_a_cli_command_and_a_job_run_each_log_one_line(observed):
    app, lines = observed
    result = run_cli(app, "jobs", "prune-nonces")
    assert result.exit_code == 0, result.output
    commands = records(lines, "alliance.command")
    assert len(commands) == 1 and commands[0]["outcome"] == "ok" and commands[0]["duration_ms"] >= 0
    # Click names the program after the group the test runner invokes; the command's own words follow.
    assert commands[0]["command"].endswith(" jobs prune-nonces")
    run_scheduler(hub_state(app), holder="test-scheduler", once=True, run_for_s=None, echo=lambda line: None)
    jobs = records(lines, "alliance.job")
    assert sorted(record["job"] for record in jobs) == sorted(job.name for job in hub_jobs(hub_state(app)))
    assert all(record["outcome"] in ("ran", "skipped") and record["holder"] == "test-scheduler" for record in jobs)
    assert value("alliance_job_runs_total", job="prune-nonces", outcome="ran") >= 1


def test_the_scheduler_refuses_to_serve_metrics_from_the_web_workers_directory(monkeypatch, pg_hub, tmp_path):
    from alliance.scheduler import serve_metrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError, match="PROMETHEUS_MULTIPROC_DIR is for the hub's web workers"):
        serve_metrics(("127.0.0.1", 0))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"metrics": "yes"}, "ALLIANCE_METRICS must be on or off"),
    ({"log_format": "xml"}, "ALLIANCE_LOG_FORMAT must be json or text"),
    ({"request_log": "maybe"}, "ALLIANCE_REQUEST_LOG must be on or off"),
    ({"metrics_token": "short"}, "ALLIANCE_METRICS_TOKEN must be at least 16 characters"),
])
def test_observability_settings_are_checked(overrides, message):
    with pytest.raises(ConfigurationError, match=message):
        Settings(**overrides).validated()


def test_with_metrics_off_nothing_is_counted_and_the_route_is_absent(postgres_url, tmp_path):
    app = hub_app(postgres_url, tmp_path / "instance", metrics="off", metrics_token=TOKEN)
    try:
        before = value("alliance_http_request_duration_seconds_count", route="/healthz", method="GET", status="200")
        assert app.test_client().get("/healthz").status_code == 200
        assert value("alliance_http_request_duration_seconds_count", route="/healthz", method="GET",
                     status="200") == before
        assert app.test_client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    finally:
        metrics.switch(True)
        hub_state(app).dispose()


def test_a_connection_taken_out_of_the_pool_for_good_leaves_the_in_use_gauge(pg_hub):
    before = value("alliance_db_pool_connections_in_use", pool="primary")
    connection = pg_hub.engine.connect()
    assert value("alliance_db_pool_connections_in_use", pool="primary") == before + 1
    # Detached: the pool forgets it, and no checkin will ever come for it.
    connection.detach()
    assert value("alliance_db_pool_connections_in_use", pool="primary") == before
    connection.close()
    assert value("alliance_db_pool_connections_in_use", pool="primary") == before
