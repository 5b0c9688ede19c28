"""No personal data in the hub's telemetry: requests full of card numbers, PINs, e-mails,
names and phone numbers go through every route family, the CLI and the scheduler, and
none of it shows in any log line or in the ``/metrics`` exposition.

Every record the hub's processes log is captured: the hub's own JSON handler on the
root logger writes to a buffer, and the root level is lowered to DEBUG for the test, so
libraries' debug records and the tracebacks of errors are captured as well. Each request
sent is checked to have its one log line (method, URL rule, status), so the search for
personal data runs over real lines and cannot pass on an empty log.
"""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from alliance.domain.cards import card_number_from_sequence
from alliance.extensions import hub_state
from alliance.observability.logs import configure_logging
from alliance.scheduler import hub_jobs
from tests.back_office_support import BASE, BackOffice, Reply, hub_app, member_id_of, run_cli
from tests.console_support import ConsoleClient, add_staff, text_of
from tests.factories import SigningPartner, make_signing_partner
from tests.http_server import (
    HttpReply,
    fund_member,
    purchase_payload,
    send_prepared,
    serve,
    wall_clock_partner_time,
)
from tests.signing import sign_request

METRICS_TOKEN = "pii-test-metrics-token-7c1e0b5d"
MAX_BODY_BYTES = 16_384

NAME = "Adaeze Okonkwo-Pii"
SECOND_NAME = "Zoé Quixley-Pïi"
EMAIL = "ada.lovelace.pii@example.org"
SECOND_EMAIL = "zoe.quixley.pii@example.net"
PHONE = "+44 7700 900461"
SECOND_PHONE = "+33 6 41 27 93 58"
PIN = "5827391604"
WRONG_PIN = "9164038275"
CONSOLE_USERNAME = "adaeze.okonkwo.pii"
CONSOLE_PASSWORD = "Okonkwo-console-passphrase-61"
WRONG_CONSOLE_PASSWORD = "Lovelace-wrong-passphrase-62"
UNISSUED_CARD = card_number_from_sequence("6390", 42_424_243)
# What a person would type into a free-text field: everything at once.
FREE_TEXT = f"{NAME} ({EMAIL}, {PHONE}) says card {{card}} with PIN {PIN} earned nothing"

PURCHASES = "/partner/v1/purchases"
BATCH = "/partner/v1/purchases/batch"
RECEIPT = "/partner/v1/purchases/<receipt_id>"
PURCHASE_REFUNDS = "/partner/v1/purchases/<receipt_id>/refunds"
REDEMPTIONS = "/partner/v1/redemptions"
CAPTURE = "/partner/v1/redemptions/<reference>/capture"
VOID = "/partner/v1/redemptions/<reference>/void"
REDEMPTION_REFUNDS = "/partner/v1/redemptions/<reference>/refunds"
BALANCE = "/partner/v1/balance-inquiries"
TOKEN = "/oauth/token"
UNMATCHED = "unmatched"


def spellings(card_number: str) -> list[str]:
    """A card number as a person might write it: plain, in fours with spaces, in fours with dashes."""
    fours = [card_number[start:start + 4] for start in range(0, len(card_number), 4)]
    return [card_number, " ".join(fours), "-".join(fours)]


def phone_spellings(phone: str) -> list[str]:
    """A phone number as given, as the hub normalises it, and its national digits."""
    digits = re.sub(r"\D", "", phone)
    return [phone, "+" + digits, digits[2:]]


@dataclass
class Watched:
    """A hub whose every log record lands in ``lines``, with the personal values it was sent."""

    app: Flask
    lines: io.StringIO
    secrets: set[str] = field(default_factory=set)
    expected: Counter[tuple[str, str, int]] = field(default_factory=Counter)

    def keep_out(self, *values: str) -> None:
        """Values that must appear in no log line and no metric."""
        self.secrets.update(value for value in values if value)

    def answered(self, reply_status: int, method: str, route: str, status: int) -> None:
        """The reply had ``status``, and the log must hold one line for it under ``route``."""
        assert reply_status == status, (method, route, reply_status)
        self.expected[(method, route, status)] += 1

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines.getvalue().splitlines()]


# Where the hub and the libraries it uses log; none may keep a record from the root logger's handler.
HUB_LOGGER_FAMILIES = ("alliance", "werkzeug", "flask", "flask_smorest", "sqlalchemy", "psycopg", "authlib",
                       "alembic", "apscheduler", "prometheus_client", "marshmallow", "gunicorn")


@contextmanager
def watched_hub(database_url: str, instance: Path, **overrides: Any) -> Iterator[Watched]:
    """A hub with metrics on behind a token whose every log record, at DEBUG and up, is written to a buffer."""
    app = hub_app(database_url, instance, metrics_token=METRICS_TOKEN, **overrides)
    lines = io.StringIO()
    configure_logging("json", stream=lines)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        assert [handler.stream for handler in root.handlers if handler.get_name() == "alliance"] == [lines]
        bypassing = [name for name, logger in logging.Logger.manager.loggerDict.items()
                     if name.split(".")[0] in HUB_LOGGER_FAMILIES and isinstance(logger, logging.Logger)
                     and (not logger.propagate or any(not isinstance(handler, logging.NullHandler)
                                                      for handler in logger.handlers))]
        assert bypassing == [], "these loggers write somewhere other than the root logger's handler"
        watched = Watched(app, lines)
        watched.keep_out(METRICS_TOKEN)
        yield watched
    finally:
        root.setLevel(level)
        configure_logging("json")
        hub_state(app).dispose()


@pytest.fixture(params=("postgres", "sqlite"))
def watched(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Watched]:
    """The watched hub on PostgreSQL and on SQLite, with small bodies and transfers allowed from enrolment."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with watched_hub(request.getfixturevalue(f"{request.param}_url"), tmp_path / "instance",
                     max_body_bytes=MAX_BODY_BYTES, transfer_min_membership_days=0) as hub:
        yield hub


@pytest.fixture
def pg_watched(postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Watched]:
    """The watched hub on PostgreSQL only, for the unexpected errors a missing table makes."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with watched_hub(postgres_url, tmp_path / "instance") as hub:
        yield hub


def signed(base_url: str, partner: SigningPartner, method: str, target: str, body: Any = None, *,
           headers: dict[str, str] | None = None, idempotency_key: str | None = None) -> HttpReply:
    """Sign ``target`` (path and query) with the partner's key and send it, with any extra headers unsigned."""
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    if method != "GET" and idempotency_key is None:
        idempotency_key = str(uuid.uuid4())
    signature = sign_request(method=method, url=base_url + target, body=raw, key_id=partner.key_id,
                             private_key=partner.private_key, idempotency_key=idempotency_key)
    return send_prepared(base_url, method, target, raw, {**signature, **(headers or {})})


def _partner_api(watched: Watched, partner: SigningPartner, card: str, member_number: str, code: str) -> None:
    """Purchases, balance, redemptions, refunds and a batch, then every kind of refusal, each carrying personal data."""
    seen = watched.answered
    with serve(watched.app) as base:
        key, purchase = str(uuid.uuid4()), purchase_payload("pii-r1", card, 40_000)
        earned = signed(base, partner, "POST", PURCHASES, purchase, idempotency_key=key)
        seen(earned.status, "POST", PURCHASES, 201)
        replayed = signed(base, partner, "POST", PURCHASES, purchase, idempotency_key=key)
        seen(replayed.status, "POST", PURCHASES, 201)
        assert replayed.headers["idempotent-replayed"] == "true"
        balance = signed(base, partner, "POST", BALANCE, {"card_number": card, "pin": PIN})
        seen(balance.status, "POST", BALANCE, 200)
        wrong_pin = signed(base, partner, "POST", BALANCE, {"card_number": card, "pin": WRONG_PIN})
        seen(wrong_pin.status, "POST", BALANCE, 403)
        assert wrong_pin.body["code"] == "member_not_verified"
        authorized = signed(base, partner, "POST", REDEMPTIONS,
                            {"reference": "pii-h1", "points": 100, "card_number": card, "pin": PIN})
        seen(authorized.status, "POST", REDEMPTIONS, 201)
        seen(signed(base, partner, "POST", "/partner/v1/redemptions/pii-h1/capture", {"points": 60}).status,
             "POST", CAPTURE, 200)
        seen(signed(base, partner, "POST", "/partner/v1/redemptions/pii-h1/refunds",
                    {"refund_id": "pii-rf1", "points": 10}).status, "POST", REDEMPTION_REFUNDS, 200)
        by_code = signed(base, partner, "POST", REDEMPTIONS, {"reference": "pii-h2", "points": 20,
                                                              "redemption_code": code})
        seen(by_code.status, "POST", REDEMPTIONS, 201)
        seen(signed(base, partner, "POST", "/partner/v1/redemptions/pii-h2/void", {}).status, "POST", VOID, 200)
        seen(signed(base, partner, "POST", "/partner/v1/purchases/pii-r1/refunds",
                    {"refund_id": "pii-pr1", "amount_minor": 1_000}).status, "POST", PURCHASE_REFUNDS, 201)
        batch = signed(base, partner, "POST", BATCH, {"purchases": [purchase_payload("pii-b1", card, 2_000),
                                                                    purchase_payload("pii-b2", UNISSUED_CARD, 2_000)]})
        seen(batch.status, "POST", BATCH, 200)
        assert (batch.body["applied"], batch.body["rejected"]) == (1, 1)

        # Refused: an unknown card, a wrong field set, a body that is not JSON, no signature, a
        # tampered body, a body over the limit, personal data in the query and in the path.
        unknown = signed(base, partner, "POST", PURCHASES, purchase_payload("pii-r2", UNISSUED_CARD))
        seen(unknown.status, "POST", PURCHASES, 404)
        invalid = signed(base, partner, "POST", PURCHASES, {
            "receipt_id": EMAIL, "card_number": spellings(card)[2], "amount_minor": PIN, "currency": NAME,
            "purchased_at": PHONE, EMAIL: FREE_TEXT.format(card=card)})
        seen(invalid.status, "POST", PURCHASES, 422)
        not_json = signed(base, partner, "POST", PURCHASES, f'{{"card_number": "{card}", "pin": "{PIN}"'.encode())
        seen(not_json.status, "POST", PURCHASES, 400)
        unsigned = send_prepared(base, "POST", PURCHASES, json.dumps(purchase_payload("pii-r3", card)).encode(),
                                 {"Content-Type": "application/json"})
        seen(unsigned.status, "POST", PURCHASES, 401)
        body = json.dumps(purchase_payload("pii-r4", card)).encode()
        signature = sign_request(method="POST", url=base + PURCHASES, body=body, key_id=partner.key_id,
                                 private_key=partner.private_key, idempotency_key=str(uuid.uuid4()))
        tampered = send_prepared(base, "POST", PURCHASES, body.replace(card.encode(), UNISSUED_CARD.encode()),
                                 signature)
        seen(tampered.status, "POST", PURCHASES, 401)
        oversized = signed(base, partner, "POST", BATCH, {"purchases": [
            purchase_payload(f"pii-o{number}", card, notes=FREE_TEXT.format(card=card)) for number in range(100)]})
        seen(oversized.status, "POST", BATCH, 413)
        assert [reply.body["code"] for reply in (unknown, invalid, not_json, unsigned, tampered, oversized)] == [
            "not_found", "validation_failed", "bad_request", "signature_missing", "content_digest_mismatch",
            "request_entity_too_large"]
        in_query = signed(base, partner, "GET", f"/partner/v1/purchases/pii-r1?card_number={card}&email={EMAIL}"
                                                f"&pin={PIN}&member={member_number}")
        seen(in_query.status, "GET", RECEIPT, 200)
        seen(signed(base, partner, "GET", f"/partner/v1/purchases/{card}").status, "GET", RECEIPT, 404)
        seen(signed(base, partner, "POST", f"/partner/v1/redemptions/{card}/capture", {"points": 1}).status,
             "POST", CAPTURE, 404)
        seen(signed(base, partner, "GET", f"/partner/v1/{EMAIL}/{card}").status, "GET", UNMATCHED, 404)

        # A request id that is a card number is not taken (nor logged); an identifier is.
        card_as_id = signed(base, partner, "POST", BALANCE, {"card_number": card, "pin": PIN},
                            headers={"X-Request-Id": card})
        seen(card_as_id.status, "POST", BALANCE, 200)
        assert card_as_id.headers["x-request-id"] != card
        client_id = f"till-7-{uuid.uuid4()}"
        own_id = signed(base, partner, "POST", BALANCE, {"card_number": card, "pin": PIN},
                        headers={"X-Request-Id": client_id})
        seen(own_id.status, "POST", BALANCE, 200)
        assert own_id.headers["x-request-id"] == client_id
    logged_ids = {record["request_id"] for record in watched.records() if record["logger"] == "alliance.request"}
    assert {client_id, card_as_id.headers["x-request-id"]} <= logged_ids


@dataclass
class Desk:
    """Customer service's bearer tokens, and the member enrolled through the back office."""

    token: str
    manager_token: str
    member_number: str
    card: str


def _enrol(watched: Watched, bo: BackOffice) -> Desk:
    """Tokens for customer service and a partner manager (right and wrong secrets), and one member enrolled."""
    seen = watched.answered
    desk = bo.register_client("customer_service", name=NAME)
    manager = bo.register_client("partner_manager")
    watched.keep_out(desk.client_secret, manager.client_secret)
    granted = bo.request_token(desk.client_id, desk.client_secret)
    seen(granted.status, "POST", TOKEN, 200)
    by_post = bo.request_token(manager.client_id, manager.client_secret, auth="post")
    seen(by_post.status, "POST", TOKEN, 200)
    watched.keep_out(granted.body["access_token"], by_post.body["access_token"])
    seen(bo.request_token(desk.client_id, desk.client_secret + "-wrong").status, "POST", TOKEN, 401)
    seen(bo.request_token(EMAIL, PIN, auth="post").status, "POST", TOKEN, 400)
    enrolled = bo.call("POST", "/members", token=granted.body["access_token"],
                       json={"name": NAME, "phone": PHONE, "email": EMAIL})
    seen(enrolled.status, "POST", BASE + "/members", 201)
    return Desk(granted.body["access_token"], by_post.body["access_token"], enrolled.body["member_number"],
                enrolled.body["card_number"])


def _back_office(watched: Watched, bo: BackOffice, desk: Desk) -> tuple[str, str]:
    """Lookups, profile, PIN, codes, card replacement, transfers and complaints; returns (the replacement card,
    a one-time redemption code for the partner API to use)."""
    seen = watched.answered
    card, member_number, manager_token = desk.card, desk.member_number, desk.manager_token

    def call(method: str, path: str, route: str, status: int, *, token: str = desk.token, **options: Any) -> Reply:
        reply = bo.call(method, path, token=token, **options)
        seen(reply.status, method, BASE + route, status)
        return reply

    enrolled = call("POST", "/members", "/members", 201, json={"name": SECOND_NAME, "phone": SECOND_PHONE,
                                                                "email": SECOND_EMAIL})
    second_member, second_card = enrolled.body["member_number"], enrolled.body["card_number"]
    watched.keep_out(second_member, *spellings(second_card))
    call("POST", "/members/search", "/members/search", 200, json={"phone": PHONE})
    call("POST", "/members/search", "/members/search", 200, json={"email": EMAIL.upper()})
    call("GET", "/members", "/members", 400, query={"email": EMAIL, "phone": PHONE})
    call("GET", f"/members/{member_number}", "/members/<member_number>", 200)
    call("GET", f"/members/{member_number}/history", "/members/<member_number>/history", 200)
    call("GET", f"/members/{member_number}/export", "/members/<member_number>/export", 200)
    call("GET", f"/members/{EMAIL}", "/members/<member_number>", 404)
    call("PATCH", f"/members/{second_member}/profile", "/members/<member_number>/profile", 200,
         json={"name": NAME + " Jr", "email": None})
    call("POST", "/cards/pin", "/cards/pin", 204, json={"card_number": card, "pin": PIN})
    call("POST", "/cards/pin", "/cards/pin", 422, json={"card_number": card, "pin": NAME})
    issued = call("POST", f"/members/{member_number}/redemption-codes", "/members/<member_number>/redemption-codes",
                  201, json={})
    code = issued.body["redemption_code"]
    watched.keep_out(code)
    replaced = call("POST", "/cards/replacement", "/cards/replacement", 201, json={"card_number": second_card})
    watched.keep_out(*spellings(replaced.body["card_number"]))
    call("POST", "/cards/replacement", "/cards/replacement", 404, json={"card_number": UNISSUED_CARD})
    fund_member(bo.hub, member_id=member_id_of(bo.hub, member_number), partner_id=None, points=500)
    call("POST", "/transfers", "/transfers", 201, json={"from_member": member_number, "to_member": second_member,
                                                       "points": 100})
    call("POST", "/transfers", "/transfers", 422, json={"from_member": EMAIL, "to_member": card, "points": PIN})
    filed = call("POST", "/complaints", "/complaints", 201, json={
        "partner": "pii-shop", "category": "points_missing", "member": member_number,
        "description": FREE_TEXT.format(card=card)})
    complaint = filed.body["id"]
    call("POST", f"/complaints/{complaint}/transitions", "/complaints/<int:complaint_id>/transitions", 200,
         token=manager_token, json={"status": "investigating"})
    call("POST", f"/complaints/{complaint}/transitions", "/complaints/<int:complaint_id>/transitions", 200,
         json={"status": "resolved", "note": f"called {NAME} on {PHONE}, wrote to {EMAIL}"})
    call("POST", "/complaints", "/complaints", 201, json={"partner": "pii-shop", "category": "staff_conduct",
                                                          "description": f"{SECOND_NAME} on {SECOND_PHONE}"})
    call("GET", "/complaints", "/complaints", 200, query={"partner": "pii-shop"})
    call("GET", "/complaints", "/complaints", 422, query={"partner": EMAIL, "status": NAME})
    refused = bo.call("POST", "/members/search", token=f"{card}-{PIN}", json={"email": EMAIL})
    seen(refused.status, "POST", BASE + "/members/search", 401)
    return replaced.body["card_number"], code


def _console(watched: Watched, card: str) -> None:
    """Logins right and wrong, pages, a complaint's note, and paths and forms carrying personal data."""
    seen = watched.answered
    add_staff(hub_state(watched.app), CONSOLE_USERNAME, "customer_service", "partner_manager",
              password=CONSOLE_PASSWORD, display_name=NAME)
    browser = ConsoleClient(watched.app)
    form = browser.client.get("/console/login")
    seen(form.status_code, "GET", "/console/login", 200)
    wrong = browser.client.post("/console/login", data={"csrf_token": browser.token_in(form),
                                                        "username": CONSOLE_USERNAME,
                                                        "password": WRONG_CONSOLE_PASSWORD})
    seen(wrong.status_code, "POST", "/console/login", 401)
    stranger = browser.client.post("/console/login", data={"csrf_token": browser.token_in(form),
                                                           "username": EMAIL, "password": card})
    seen(stranger.status_code, "POST", "/console/login", 401)
    signed_in = browser.client.post(f"/console/login?next=/console/complaints%3Fq%3D{EMAIL}",
                                    data={"csrf_token": browser.token_in(form), "username": CONSOLE_USERNAME,
                                          "password": CONSOLE_PASSWORD})
    seen(signed_in.status_code, "POST", "/console/login", 303)
    session_cookie = browser.cookie()
    assert session_cookie is not None
    watched.keep_out(session_cookie)
    seen(browser.get("/console/").status_code, "GET", "/console/", 200)
    queue = browser.get("/console/complaints", q=EMAIL, card=card)
    seen(queue.status_code, "GET", "/console/complaints", 200)
    # The page shows the open complaint (filed second) to the staff member; it is the logs that must not.
    assert f"{SECOND_NAME} on {SECOND_PHONE}" in text_of(queue)
    complaint = re.search(r"/console/complaints/(\d+)/transitions", queue.get_data(as_text=True))
    assert complaint is not None, "the queue offers the open complaint's transitions"
    logout_page = browser.client.get("/console/logout")
    seen(logout_page.status_code, "GET", "/console/logout", 200)
    csrf = browser.token_in(logout_page)
    moved = browser.post(f"/console/complaints/{complaint.group(1)}/transitions",
                         {"status": "rejected", "note": FREE_TEXT.format(card=card)}, csrf=csrf)
    seen(moved.status_code, "POST", "/console/complaints/<int:complaint_id>/transitions", 303)
    seen(browser.get(f"/console/partners/{EMAIL}").status_code, "GET", "/console/partners/<code>", 404)
    seen(browser.get(f"/console/{card}/{NAME}").status_code, "GET", "/console/<path:unknown>", 404)
    seen(browser.post("/console/partners/pii-shop/terminals", {"code": card}, csrf=csrf).status_code,
         "POST", "/console/partners/<code>/terminals", 400)


def _health_and_docs(watched: Watched, card: str) -> None:
    """The public routes, with personal data in the query string and the path."""
    client = watched.app.test_client()
    query = {"card_number": card, "email": EMAIL, "name": NAME, "pin": PIN}
    for path, status in (("/healthz", 200), ("/readyz", 200), ("/docs", 200), ("/openapi.json", 200),
                         ("/settlement/v1/statement-keys", 200)):
        watched.answered(client.get(path, query_string=query).status_code, "GET", path, status)
    watched.answered(client.get(f"/static/{card}.css", query_string=query).status_code,
                     "GET", "/static/<path:filename>", 404)
    watched.answered(client.get(f"/{EMAIL}/{PHONE}", query_string=query).status_code, "GET", UNMATCHED, 404)
    # A method no rule allows matches no rule.
    watched.answered(client.delete("/healthz", json=query).status_code, "DELETE", UNMATCHED, 405)


def _scrape(app: Flask) -> str:
    reply = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert reply.status_code == 200
    return reply.get_data(as_text=True)


def test_personal_data_sent_through_every_route_family_appears_in_no_log_line_and_no_metric(watched):
    """The partner API, the back office, the console, the public routes, the CLI and a scheduler run, each sent
    personal data in bodies, forms, paths, query strings and headers; then the log and a scrape are searched."""
    hub = hub_state(watched.app)
    partner = make_signing_partner(hub, now=wall_clock_partner_time(), code="pii-shop")
    bo = BackOffice(watched.app)
    desk = _enrol(watched, bo)
    member_number, card = desk.member_number, desk.card
    watched.keep_out(NAME, "Adaeze", "Okonkwo", SECOND_NAME, "Quixley", EMAIL, "ada.lovelace.pii", SECOND_EMAIL,
                     *phone_spellings(PHONE), *phone_spellings(SECOND_PHONE), PIN, WRONG_PIN, CONSOLE_USERNAME,
                     CONSOLE_PASSWORD, WRONG_CONSOLE_PASSWORD, member_number, *spellings(card),
                     *spellings(UNISSUED_CARD))

    replacement_card, code = _back_office(watched, bo, desk)
    _partner_api(watched, partner, card, member_number, code)
    _console(watched, card)
    _health_and_docs(watched, card)

    commands = [("members", "enrol", "--name", NAME, "--phone", PHONE, "--email", EMAIL),
                ("members", "set-pin", "--card", card, "--pin", PIN),
                ("members", "issue-code", "--card", card),
                ("members", "issue-code", "--card", UNISSUED_CARD),
                ("staff", "add-person", "okonkwo-pii", "--name", NAME),
                ("staff", "add", "okonkwo.cli", "--name", NAME, "--role", "customer_service",
                 "--person", "okonkwo-pii", "--generate-password"),
                ("scheduler", "--once")]
    outputs = []
    for command in commands:
        result = run_cli(watched.app, *command)
        outputs.append(result.output)
        assert result.exit_code == (1 if UNISSUED_CARD in command else 0), (command, result.output)
    cli_member, cli_card = re.fullmatch(r"member (\w+), card (\d+)\n", outputs[0]).groups()  # type: ignore[union-attr]
    cli_code = re.search(r"redemption code (\w+) ", outputs[2]).group(1)  # type: ignore[union-attr]
    cli_password = re.search(r"^password=(\S+)$", outputs[5], re.MULTILINE).group(1)  # type: ignore[union-attr]
    watched.keep_out(cli_member, *spellings(cli_card), cli_code, cli_password)
    watched.keep_out(*spellings(replacement_card))

    exposition = _scrape(watched.app)
    records = watched.records()
    requests = Counter((record["method"], record["route"], record["status"])
                       for record in records if record["logger"] == "alliance.request")
    assert requests == watched.expected
    logged_commands = [(record["command"].split(" ", 1)[1], record["outcome"])
                       for record in records if record["logger"] == "alliance.command"]
    assert logged_commands == [("members enrol", "ok"), ("members set-pin", "ok"), ("members issue-code", "ok"),
                               ("members issue-code", "not_found"), ("staff add-person", "ok"), ("staff add", "ok"),
                               ("scheduler", "ok")]
    assert sorted(record["job"] for record in records if record["logger"] == "alliance.job") == sorted(
        job.name for job in hub_jobs(hub))
    assert 'partner="pii-shop"' in exposition

    # Each line as written (JSON escapes non-ASCII) and as read back (names with accents in full).
    readings = [(record["logger"], text)
                for line, record in zip(watched.lines.getvalue().splitlines(), records, strict=True)
                for text in (line, json.dumps(record, ensure_ascii=False))]
    leaks = sorted({(value, logger) for value in watched.secrets for logger, text in readings
                    if value.lower() in text.lower()})
    assert leaks == []
    assert [value for value in watched.secrets if value.lower() in exposition.lower()] == []
    # Route labels are URL rules, never paths as sent. The registry is the process's, so it
    # also holds routes other tests' apps added; every label is rule-shaped, and every
    # route this app served is labelled by its rule.
    rules = {rule.rule for rule in watched.app.url_map.iter_rules()}
    labelled = {sample.labels["route"] for family in text_string_to_metric_families(exposition)
                for sample in family.samples if "route" in sample.labels}
    assert all(route == UNMATCHED or RULE_SHAPED.fullmatch(route) for route in labelled), labelled
    served = {record["route"] for record in records if record["logger"] == "alliance.request"}
    assert served <= rules | {UNMATCHED} and served <= labelled


# A URL rule: literal path segments and <converter:name> placeholders, nothing a client typed.
RULE_SHAPED = re.compile(r"(/([A-Za-z0-9._-]|<([a-z]+(\([^)]*\))?:)?[a-z_]+>)*)+")


def test_a_request_id_is_taken_when_it_is_an_identifier_and_replaced_when_it_is_personal_data(watched):
    client = watched.app.test_client()
    identifiers = [str(uuid.uuid4()), "01HZX3K9V7Q2M4N8P6R5T0W1YB", "till-7:req.42"]
    card = card_number_from_sequence("6390", 31_415_926)
    personal = [card, *spellings(card)[1:], EMAIL, NAME, PHONE, PIN]
    echoed = []
    for request_id in identifiers + personal:
        reply = client.get("/healthz", headers={"X-Request-Id": request_id})
        assert reply.status_code == 200
        echoed.append(reply.headers["X-Request-Id"])
    assert echoed[:len(identifiers)] == identifiers
    for replaced in echoed[len(identifiers):]:
        assert re.fullmatch(r"[0-9a-f]{32}", replaced), replaced
    logged = [record["request_id"] for record in watched.records() if record["logger"] == "alliance.request"]
    assert logged == echoed
    assert [value for value in personal if value.lower() in watched.lines.getvalue().lower()] == []


def _rename_table(watched: Watched, table: str) -> None:
    """Take ``table`` away from under the hub (this test's own database): its next query fails unexpectedly."""
    with hub_state(watched.app).engine.begin() as connection:
        connection.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {table}_taken_away")


def _unexpected_error_records(watched: Watched, request_id: str) -> list[dict[str, Any]]:
    return [record for record in watched.records() if record["level"] == "ERROR" and request_id in record["message"]]


def test_an_unexpected_error_in_the_back_office_logs_its_traceback_without_the_path_or_the_parameters(pg_watched):
    """A table gone from under the hub: a 500 whose traceback names the query, not the values bound to it nor
    the path the client sent (which carries personal data here)."""
    bo = BackOffice(pg_watched.app)
    token = bo.token("customer_service")
    pg_watched.keep_out(token, *spellings(UNISSUED_CARD), EMAIL, NAME)
    _rename_table(pg_watched, "members")
    reply = bo.call("GET", f"/members/{EMAIL}-{UNISSUED_CARD}", token=token)
    assert (reply.status, reply.code) == (500, "internal_error")
    (error,) = _unexpected_error_records(pg_watched, reply.body["request_id"])
    assert error["logger"] == "alliance.api.errors"
    assert error["message"] == (f"unexpected error in GET {BASE}/members/<member_number> "
                                f"(request {reply.body['request_id']})")
    assert "sqlalchemy.exc.ProgrammingError" in error["exc_info"]
    assert "[SQL parameters hidden due to hide_parameters=True]" in error["exc_info"]
    text = pg_watched.lines.getvalue()
    assert [value for value in pg_watched.secrets if value.lower() in text.lower()] == []


def test_an_unexpected_error_in_the_console_logs_its_traceback_without_the_path(pg_watched):
    """The console's 500 page for the same kind of failure: the log line names the URL rule, not the path."""
    add_staff(hub_state(pg_watched.app), CONSOLE_USERNAME, "partner_manager", password=CONSOLE_PASSWORD)
    browser = ConsoleClient(pg_watched.app)
    assert browser.login(CONSOLE_USERNAME, CONSOLE_PASSWORD).status_code == 303
    pg_watched.keep_out(EMAIL, *spellings(UNISSUED_CARD))
    _rename_table(pg_watched, "partners")
    reply = browser.get(f"/console/partners/{EMAIL}-{UNISSUED_CARD}")
    assert reply.status_code == 500
    request_id = reply.headers["X-Request-Id"]
    (error,) = _unexpected_error_records(pg_watched, request_id)
    assert error["logger"] == "alliance.console.blueprint"
    assert error["message"] == f"unexpected error in console GET /console/partners/<code> (request {request_id})"
    assert "sqlalchemy.exc.ProgrammingError" in error["exc_info"]
    text = pg_watched.lines.getvalue()
    assert [value for value in pg_watched.secrets if value.lower() in text.lower()] == []
