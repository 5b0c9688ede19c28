"""The OWASP API Security Top 10 (2023), item by item, against the hub.

Where another file already proves an item, the test here names it rather than repeat it;
what this file adds is what those files lacked. Each test's docstring names its item.
"""

from __future__ import annotations

import ast
import re
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import func, select

import alliance
from alliance.api.hardening import MAX_JSON_DEPTH
from alliance.api.partner.schemas import MAX_BATCH_ITEMS
from alliance.extensions import hub_state
from alliance.models import Member, Partner, ReconciliationReport
from alliance.services import webhook_delivery
from tests.back_office_support import ROLES, BackOffice
from tests.factories import make_member_with_pin, make_signing_partner
from tests.http_server import api_traces, assert_books_unchanged, books, purchase_payload, wall_clock_partner_time
from tests.integration.test_back_office_auth import _close_a_past_cycle
from tests.partner_client import SignedTestClient

PURCHASES = "/partner/v1/purchases"
STATEMENTS = "/partner/v1/statements"
CSV_HEADER = "receipt_id,amount_minor,currency,occurred_on\r\n"


def _count(hub, model) -> int:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(model)) or 0


def _two_partners_and_a_statement(app):  # type: ignore[no-untyped-def]
    bo = BackOffice(app)
    owner = make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="owner")
    intruder = make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="intruder")
    statement = _close_a_past_cycle(bo, owner)
    return bo, owner, intruder, statement.statement_id


# API1:2023 Broken Object Level Authorization


def test_api1_another_partners_statement_cannot_be_read_listed_or_reconciled(app):
    """API1 broken object-level authorization: statements.

    Purchases and redemptions of another partner are already a 404 in every verb
    (test_partner_api_scope_and_terminals.py::test_another_partners_purchases_and_redemptions_are_not_found_and_untouched);
    this covers the third kind of partner object, signed statements and their reconciliation.
    """
    bo, owner, intruder, statement_id = _two_partners_and_a_statement(app)
    owner_till, intruder_till = SignedTestClient(app, owner), SignedTestClient(app, intruder)
    assert owner_till.get(f"{STATEMENTS}/{statement_id}").status == 200

    foreign = intruder_till.get(f"{STATEMENTS}/{statement_id}")
    missing = intruder_till.get(f"{STATEMENTS}/{statement_id + 1000}")
    assert (foreign.status, foreign.body["code"]) == (missing.status, missing.body["code"]) == (404, "not_found")
    assert intruder_till.get(f"{STATEMENTS}/{statement_id}?format=csv-signature").status == 404
    assert intruder_till.get(STATEMENTS).body == {"statements": [], "total": 0, "page": 1, "page_size": 100}
    assert [item["statement_id"] for item in owner_till.get(STATEMENTS).body["statements"]] == [statement_id]
    upload = intruder_till.post(f"{STATEMENTS}/{statement_id}/reconciliations", CSV_HEADER.encode(),
                                headers={"Content-Type": "text/csv"})
    assert (upload.status, upload.body["code"]) == (404, "not_found")
    assert _count(bo.hub, ReconciliationReport) == 0


def test_api1_back_office_objects_by_id_are_refused_to_roles_that_do_not_own_them(app):
    """API1 broken object-level authorization: back-office objects by id across roles.

    Every route's role matrix is enumerated in test_back_office_auth.py; here the same
    statement id is fetched by each role, and only finance sees it.
    """
    bo, _, _, statement_id = _two_partners_and_a_statement(app)
    outcomes = {role: bo.get(f"/settlement/statements/{statement_id}", role=role).status for role in ROLES}
    assert outcomes == {role: 200 if role == "finance" else 403 for role in ROLES}


# API2:2023 Broken Authentication


def test_api2_credentials_of_one_kind_never_open_the_other_api(app):
    """API2 broken authentication.

    Partner signatures on every back-office route (401) and expired or revoked bearer
    tokens are covered by test_back_office_auth.py (the route matrix, and
    test_partner_routes_refuse_a_bearer_token_without_a_signature for bearer tokens on
    partner routes). This adds a signed partner request carrying a valid bearer token
    too: each API reads its own credential only, so the pair is still refused by the
    back office, and a bearer token cannot stand in for a missing signature.
    """
    bo = BackOffice(app)
    partner = make_signing_partner(bo.hub, now=wall_clock_partner_time())
    token = bo.token(*ROLES)
    signed = SignedTestClient(app, partner)
    reply = signed.client.get("/back-office/v1/partners", headers={"Authorization": "Signature pos"})
    assert (reply.status_code, reply.get_json()["code"]) == (401, "not_authenticated")
    reply = signed.client.get(f"{STATEMENTS}", headers={"Authorization": f"Bearer {token}"})
    assert (reply.status_code, reply.get_json()["code"]) == (401, "signature_missing")
    assert bo.call("GET", "/partners", token=token + "x").status == 401


# API3:2023 Broken Object Property Level Authorization


def test_api3_mass_assignment_of_server_owned_fields_is_refused_and_stores_nothing(app, subtests):
    """API3 broken object property level authorization (mass assignment).

    Every input schema refuses unknown fields (StrictSchema, unknown=RAISE), so a
    caller cannot set what the hub owns: points, a partner id, a status, a tier.
    """
    bo = BackOffice(app)
    partner = make_signing_partner(bo.hub, now=wall_clock_partner_time())
    member = make_member_with_pin(bo.hub, now=wall_clock_partner_time())
    till = SignedTestClient(app, partner)
    member_number, _ = bo.enrol(name="Mass Assignment")
    partner_terms = {"code": "newshop", "name": "New Shop", "currency": "EUR", "time_zone": "Europe/Paris",
                     "settlement_cycle": "monthly", "issue_price_per_point": "0.01",
                     "redemption_price_per_point": "0.008", "base_points_per_unit": "1"}
    partner_attempts = {
        "purchase points": (PURCHASES, purchase_payload("r-1", member.card_number, points=1_000_000)),
        "purchase partner_id": (PURCHASES, purchase_payload("r-2", member.card_number, partner_id=999)),
        "purchase status": (PURCHASES, purchase_payload("r-3", member.card_number, status="active")),
        "batch item points": (f"{PURCHASES}/batch", {"purchases": [purchase_payload("r-4", member.card_number,
                                                                                     points=5)]}),
    }
    before = books(bo.hub)
    for name, (path, body) in partner_attempts.items():
        with subtests.test(msg=name):
            reply = till.post(path, body)
            assert (reply.status, reply.body["code"]) == (422, "validation_failed"), reply.body
    assert_books_unchanged(bo.hub, before)
    members, partners = _count(bo.hub, Member), _count(bo.hub, Partner)
    back_office_attempts = {
        "member tier": ("POST", "/members", {"name": "X", "tier": "diamond"}, "customer_service"),
        "member status": ("POST", "/members", {"name": "X", "status": "active"}, "customer_service"),
        "profile member_number": ("PATCH", f"/members/{member_number}/profile", {"member_number": "0" * 16},
                                  "customer_service"),
        "partner status": ("POST", "/partners", dict(partner_terms, status="active"), "partner_manager"),
        "partner id": ("POST", "/partners", dict(partner_terms, id=1), "partner_manager"),
    }
    for name, (method, path, body, role) in back_office_attempts.items():
        with subtests.test(msg=name):
            reply = bo.call(method, path, role=role, json=body)
            assert (reply.status, reply.code) == (422, "validation_failed"), reply.body
    assert (_count(bo.hub, Member), _count(bo.hub, Partner)) == (members, partners)


# API4:2023 Unrestricted Resource Consumption


def test_api4_oversized_batches_deep_nesting_and_huge_ids_are_refused_cheaply(app):
    """API4 unrestricted resource consumption: batches, nesting, ids.

    Oversized bodies are a 413 problem before the signature is even checked
    (test_partner_api_signatures.py::test_a_signed_body_one_byte_over_the_size_limit_is_a_413_problem_and_at_the_limit_is_accepted,
    test_http_errors.py::test_oversized_body_is_refused_with_413); rate limits and the
    in-flight cap are in test_partner_rate_limits.py.
    """
    hub = hub_state(app)
    partner = make_signing_partner(hub, now=wall_clock_partner_time())
    member = make_member_with_pin(hub, now=wall_clock_partner_time())
    till = SignedTestClient(app, partner)
    before, traces = books(hub), api_traces(hub)
    too_many = {"purchases": [purchase_payload(f"r-{index}", member.card_number)
                              for index in range(MAX_BATCH_ITEMS + 1)]}
    reply = till.post(f"{PURCHASES}/batch", too_many)
    assert (reply.status, reply.body["code"]) == (422, "validation_failed") and "purchases" in reply.body["errors"]
    nested = b'{"receipt_id": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    reply = till.post(PURCHASES, nested)
    assert (reply.status, reply.body["code"]) == (400, "body_too_deeply_nested")
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert str(MAX_JSON_DEPTH) in reply.body["detail"]
    assert_books_unchanged(hub, before)
    # Both were refused before the idempotency key was claimed; the nested one even before its signature.
    assert api_traces(hub) == {"nonces": traces["nonces"] + 1, "idempotency_keys": traces["idempotency_keys"]}
    huge_id = till.get(f"{STATEMENTS}/{2**63}")
    assert (huge_id.status, huge_id.body["code"]) == (404, "not_found")


def test_api4_every_paged_listing_caps_its_page_size(app):
    """API4 unrestricted resource consumption: listings refuse a page larger than their cap."""
    bo = BackOffice(app)
    member_number, _ = bo.enrol(name="Pager")
    capped = [
        (f"/members/{member_number}/history", {"limit": "201"}, "customer_service", "limit"),
        ("/complaints", {"page_size": "201"}, "customer_service", "page_size"),
        ("/audit-log", {"limit": "501"}, "admin", "limit"),
        ("/partners", {"page_size": "201"}, "partner_manager", "page_size"),
        ("/settlement/adjustments", {"page_size": "201"}, "finance", "page_size"),
        ("/settlement/disputes", {"page_size": "201"}, "finance", "page_size"),
        ("/settlement/overdue", {"page_size": "201"}, "finance", "page_size"),
        ("/grades/2026-10", {"limit": "201"}, "partner_manager", "limit"),
        ("/grade-alerts", {"limit": "201"}, "partner_manager", "limit"),
    ]
    for path, query, role, field in capped:
        reply = bo.get(path, role=role, query=query)
        assert (reply.status, reply.code) == (422, "validation_failed"), (path, reply.body)
        assert field in reply.body["errors"], reply.body


def test_api4_unfiltered_lists_come_a_page_at_a_time(app):
    """API4 unrestricted resource consumption: a list without a page size still answers one bounded page."""
    from settlement import finance
    from tests.factories import make_partner

    bo = BackOffice(app)
    hub = bo.hub
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for number in range(205):
        make_partner(hub, now=moment, code=f"p{number:03d}")
    first = bo.get("/partners", role="partner_manager")
    assert (first.status, len(first.body["partners"]), first.body["total"]) == (200, 100, 205)
    last = bo.get("/partners", role="partner_manager", query={"page": "3", "page_size": "100"})
    assert [partner["code"] for partner in last.body["partners"]] == ["p200", "p201", "p202", "p203", "p204"]
    with hub.unit_of_work() as uow:
        for number in range(3):
            finance.request_adjustment(uow.session, partner_code="p000", amount_minor=100 + number, reason="r",
                                       reference=f"ADJ-{number}", actor="client:a", now=moment)
        uow.commit()
    second = bo.get("/settlement/adjustments", role="finance", query={"page": "2", "page_size": "2"})
    assert (second.body["total"], [item["reference"] for item in second.body["adjustments"]]) == (3, ["ADJ-2"])


# API5:2023 Broken Function Level Authorization


def test_api5_a_client_cannot_be_given_a_role_that_does_not_exist_nor_create_one_without_admin(app):
    """API5 broken function-level authorization.

    Every back-office route refuses every role it does not admit
    (test_back_office_auth.py::test_every_back_office_route_refuses_missing_foreign_and_insufficient_credentials_and_admits_its_roles)
    and a token never carries a role its client lacks
    (test_asking_for_a_role_the_client_lacks_gives_a_token_without_it). What that file
    lacked: creating clients is the one way to grant roles, so only admin may, and only
    the known roles.
    """
    bo = BackOffice(app)
    for role in set(ROLES) - {"admin"}:
        reply = bo.post("/clients", {"name": "escalate", "roles": ["admin"]}, role=role)
        assert (reply.status, reply.code) == (403, "role_refused"), (role, reply.body)
    reply = bo.post("/clients", {"name": "escalate", "roles": ["superuser"]}, role="admin")
    assert (reply.status, reply.code) == (422, "validation_failed")


# API6:2023 Unrestricted Access to Sensitive Business Flows


def test_api6_guessing_a_pin_under_fresh_idempotency_keys_locks_the_card(app):
    """API6 unrestricted access to sensitive business flows: PIN guessing.

    Replaying a signed request is refused
    (test_partner_api_signatures.py::test_the_exact_same_signed_request_sent_twice_is_refused_as_a_replay)
    and an idempotency key reused with another body is refused without effect
    (test_partner_api_idempotency.py::test_a_key_reused_for_a_different_request_is_refused_and_changes_nothing).
    Redemption itself is the flow worth abusing: a partner (or a stolen till key)
    guessing PINs with a fresh key each time is stopped after five wrong PINs, even
    when the sixth guess is right.
    """
    hub = hub_state(app)
    partner = make_signing_partner(hub, now=wall_clock_partner_time())
    member = make_member_with_pin(hub, now=wall_clock_partner_time(), pin="2468")
    till = SignedTestClient(app, partner)
    codes = []
    for guess in ("0000", "1111", "1234", "9999", "4321", "2468"):
        reply = till.post("/partner/v1/balance-inquiries", {"card_number": member.card_number, "pin": guess})
        codes.append(reply.body["code"])
    assert codes == ["member_not_verified"] * 4 + ["pin_locked", "pin_locked"]


# API7:2023 Server Side Request Forgery

# Clients that fetch from a URL. (``socket`` is left out: the CLI only asks it the host name.)
NETWORK_CLIENT_MODULES = {"urllib.request", "http.client", "requests", "httpx", "aiohttp", "urllib3", "pycurl",
                          "smtplib", "ftplib"}


def test_api7_only_the_webhook_sender_makes_outbound_requests_and_never_into_private_networks():
    """API7 server side request forgery.

    The hub makes one kind of outbound request: a webhook delivery to a URL a partner
    registered. Everything else is pushed to it (purchases, reconciliation files, keys as
    bytes). This reads every module of the hub (alliance/ and settlement/) and fails if
    any module but the webhook sender imports a network client. The sender resolves the
    host once, refuses any address that is not globally routable in production
    (loopback, private ranges, link-local cloud metadata) and connects to the address it
    checked, so a name that re-resolves elsewhere cannot redirect it
    (test_webhook_delivery.py checks the refusal end to end).
    """
    roots = [Path(alliance.__file__).parent, Path(alliance.__file__).parent.parent / "settlement"]
    sender = Path(alliance.__file__).parent / "services" / "webhook_delivery.py"
    offenders = []
    for root in roots:
        for source in root.rglob("*.py"):
            if source == sender:
                continue
            for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{source}: {name}" for name in names
                              if any(name == module or name.startswith(module + ".")
                                     for module in NETWORK_CLIENT_MODULES)]
    assert offenders == []
    for url in ("http://127.0.0.1:9/hook", "http://10.0.0.7/hook", "http://169.254.169.254/latest/meta-data",
                "http://[::1]:9/hook"):
        reply = webhook_delivery.post(url, b"{}", {}, 1.0, allow_private=False)
        assert reply.status_code is None and "not a public address" in (reply.error or ""), reply


# API8:2023 Security Misconfiguration


def test_api8_replies_are_not_sniffable_not_cacheable_and_not_open_to_other_origins(app):
    """API8 security misconfiguration.

    500s carry no stack trace nor exception text
    (test_http_errors.py::test_unexpected_errors_are_a_bare_500). Here: API replies say
    nosniff and no-store, no reply grants CORS to any origin (a preflight is refused),
    and the app is not in debug mode.
    """
    bo = BackOffice(app)
    partner = make_signing_partner(bo.hub, now=wall_clock_partner_time())
    origin = {"Origin": "https://evil.example"}
    replies = [
        bo.call("GET", "/partners", role="partner_manager", headers=origin),
        bo.call("GET", "/partners", headers=origin),
        SignedTestClient(app, partner).get(STATEMENTS, headers=origin),
    ]
    for reply in replies:
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert reply.headers["Cache-Control"] == "no-store"
        assert not any(name.lower().startswith("access-control-") for name in reply.headers)
    preflight = bo.client.options("/back-office/v1/partners", headers={
        **origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
    assert not any(name.lower().startswith("access-control-") for name in preflight.headers.keys())
    assert app.debug is False


# API9:2023 Improper Inventory Management

# Routes outside the OpenAPI document, each for a reason.
UNDOCUMENTED_ROUTES = {
    "/openapi.json": "the document itself",
    "/docs": "the document rendered as HTML",
    "/healthz": "liveness check; no data",
    "/readyz": "load balancer readiness check; names failed checks, no data",
    "/metrics": "Prometheus exposition for the operator, behind its own bearer token; never routed by the "
                "load balancer (docs/monitoring.md)",
    "/oauth/token": "RFC 6749 token endpoint, described by the bearer security scheme's tokenUrl",
    "/settlement/v1/statement-keys": "the hub's public statement keys, published for offline verification",
    "/static/<path:filename>": "Flask's static files",
}
UNDOCUMENTED_PREFIXES = ("/console",)


def test_api9_every_route_the_app_serves_is_in_the_openapi_document_or_listed_here_with_a_reason(app):
    """API9 improper inventory management: no shadow endpoints.

    test_openapi.py compares the two API prefixes with the document; this compares the
    whole URL map, so a route added anywhere else must be documented or named above.
    """
    spec = app.test_client().get("/openapi.json").get_json()
    documented = {(path, method.upper()) for path, item in spec["paths"].items() for method in item
                  if method in {"get", "post", "put", "patch", "delete"}}
    served = {(re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule.rule), method)
              for rule in app.url_map.iter_rules() for method in rule.methods - {"HEAD", "OPTIONS"}
              if rule.rule not in UNDOCUMENTED_ROUTES and not rule.rule.startswith(UNDOCUMENTED_PREFIXES)}
    assert served - documented == set()
    assert documented - served == set()


# API10:2023 Unsafe Consumption of APIs


def test_api10_malformed_partner_reconciliation_files_are_refused_cleanly_and_store_nothing(app, subtests):
    """API10 unsafe consumption of APIs: the partner files the hub consumes.

    The hub consumes no third-party API; what it takes from partners' systems is their
    reconciliation CSV. Hostile files are refused with a 422 problem naming the file,
    nothing is stored, and a file over the body limit is a 413.
    """
    bo, owner, _, statement_id = _two_partners_and_a_statement(app)
    till = SignedTestClient(app, owner)
    path = f"{STATEMENTS}/{statement_id}/reconciliations"
    files = {
        "empty": b"",
        "binary": bytes(range(256)) * 4,
        "not utf-8": CSV_HEADER.encode() + b"r-1,100,EUR,2026-01-01\xff\r\n",
        "wrong header": b"id,amount\r\nr-1,100\r\n",
        "float amount": (CSV_HEADER + "r-1,100.5,EUR,2026-01-01\r\n").encode(),
        "huge amount": (CSV_HEADER + f"r-1,{10**40},EUR,2026-01-01\r\n").encode(),
        "formula injection": (CSV_HEADER + "=cmd|' /C calc'!A0,100,EUR,2026-01-01\r\n").encode(),
        "unterminated quote": (CSV_HEADER + '"r-1,100,EUR,2026-01-01\r\n').encode(),
        "bad date": (CSV_HEADER + "r-1,100,EUR,2026-02-30\r\n").encode(),
    }
    for name, document in files.items():
        with subtests.test(msg=name):
            reply = till.post(path, document, headers={"Content-Type": "text/csv"})
            assert reply.status == 422, (name, reply.body)
            assert reply.headers["Content-Type"] == "application/problem+json"
            assert reply.body["code"] == "validation_failed" and reply.body["errors"], reply.body
    limit = app.config["MAX_CONTENT_LENGTH"]
    oversized = till.post(path, CSV_HEADER.encode() + b"x" * limit, headers={"Content-Type": "text/csv"})
    assert (oversized.status, oversized.body["code"]) == (413, "request_entity_too_large")
    assert _count(bo.hub, ReconciliationReport) == 0


def test_api8_a_nul_character_in_any_text_field_is_a_422_not_a_database_error(app):
    """API8 security misconfiguration: PostgreSQL text cannot hold NUL, so it is refused at the edge.

    Found by the schemathesis run with FUZZ_EXAMPLES=100 (a client name with
    ``\\u0000`` was a 500 on PostgreSQL); a literal backslash before ``u0000`` is ordinary text.
    """
    bo = BackOffice(app)
    assert bo.post("/people", {"handle": "nils", "name": "Nils Null"}, role="admin").status == 201
    clients_before = bo.get("/audit-log", role="admin").body["entries"]
    reply = bo.post("/clients", {"name": "evil\u0000name", "roles": ["finance"], "person": "nils"}, role="admin")
    assert (reply.status, reply.code) == (422, "validation_failed") and "body" in reply.body["errors"]
    assert bo.get("/audit-log", role="admin").body["entries"] == clients_before
    assert bo.post("/clients", {"name": "back\\u0000slash", "roles": ["finance"], "person": "nils"},
                   role="admin").status == 201


def test_api8_a_nul_character_in_a_path_query_or_form_is_refused_not_a_database_error(app):
    """A NUL in a path parameter reached PostgreSQL (a 500, found by the no-personal-data test): now a 404,
    and in a query or a form a 422, before any view runs."""
    bo = BackOffice(app)
    token = bo.token("customer_service")
    missing = bo.call("GET", "/members/M-1\x00x", token=token)
    assert (missing.status, missing.code) == (404, "not_found")
    queried = app.test_client().get("/healthz?probe=a\x00b")
    assert queried.status_code == 422 and queried.get_json()["errors"] == {"query": ["contains the NUL character"]}
    # The console answers with its own page, saying why.
    posted = app.test_client().post("/console/login", data={"username": "a\x00b", "password": "x"})
    assert posted.status_code == 422 and "may not contain the NUL character" in posted.get_data(as_text=True)

