"""Finance over the back-office API, partners over the signed API, and the public statement keys."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

from alliance.extensions import hub_state
from partners_sdk.statements import public_key_from_raw, verify_statement
from settlement import closing as settlement_closing
from settlement.cycles import Cycle, Frequency
from tests.back_office_support import BackOffice
from tests.factories import make_signing_partner
from tests.http_server import wall_clock_partner_time
from tests.partner_client import SignedTestClient


def close_one(app, partner) -> int:  # type: ignore[no-untyped-def]
    signer = hub_state(app).statement_signer
    cycle = Cycle(partner.code, Frequency.DAILY, datetime(2026, 1, 1, tzinfo=timezone.utc),
                  datetime(2026, 1, 2, tzinfo=timezone.utc))
    with hub_state(app).unit_of_work() as uow:
        closed = settlement_closing.close_cycle(
            uow.session, partner_id=partner.partner_id, cycle=cycle, now=datetime.now(timezone.utc),
            signing_key=signer.signing_key, key_id=signer.key_id, payment_terms_days=signer.payment_terms_days)
        uow.commit()
    return closed.statement_id


def test_finance_closes_lists_and_fetches_signed_statements(app):
    bo = BackOffice(app)
    make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    closed = bo.post("/settlement/closings", {"partner": "shop"}, role="finance")
    assert closed.status == 200, closed.body
    listed = bo.get("/settlement/statements", role="finance", query={"partner": "shop"})
    assert listed.status == 200 and len(listed.body["statements"]) == len(closed.body["statements"])
    unknown = bo.post("/settlement/closings", {"partner": "nobody"}, role="finance")
    assert (unknown.status, unknown.code) == (404, "not_found")


def test_partners_see_only_their_statements_and_verify_them_with_the_published_key(app):
    hub = hub_state(app)
    shop = make_signing_partner(hub, now=wall_clock_partner_time(), code="shop")
    rival = make_signing_partner(hub, now=wall_clock_partner_time(), code="rival")
    statement_id = close_one(app, shop)
    own = SignedTestClient(app, shop).client
    from tests.signing import sign_request

    def signed_get(partner, path):  # type: ignore[no-untyped-def]
        headers = sign_request(method="GET", url="http://localhost" + path, body=b"", key_id=partner.key_id,
                               private_key=partner.private_key)
        return own.get(path, headers=headers)

    listing = signed_get(shop, "/partner/v1/statements")
    assert [item["statement_id"] for item in listing.get_json()["statements"]] == [statement_id]
    document = signed_get(shop, f"/partner/v1/statements/{statement_id}?format=json")
    signature = signed_get(shop, f"/partner/v1/statements/{statement_id}?format=json-signature")
    assert document.status_code == 200 and signature.status_code == 200
    assert signed_get(rival, f"/partner/v1/statements/{statement_id}").status_code == 404
    published = app.test_client().get("/settlement/v1/statement-keys").get_json()["keys"]
    keys = {key["key_id"]: public_key_from_raw(base64.b64decode(key["public_key_b64"])) for key in published}
    assert verify_statement(document.get_data(), signature.get_data(), keys) == published[0]["key_id"]
