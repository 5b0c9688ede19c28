"""Rewards through the back office and the CLI: a reward proposed and approved by two people, ordered for
a member, fulfilled on the supplier's behalf and returned; refusals as problem+json leaving the books as
they were; the operator's bill-credit file written and confirmed (twice = once); the expiry job."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import func, select

from alliance.models import RewardOrder
from tests.back_office_support import BackOffice, audit_count, member_id_of, raw_table_text, run_cli
from tests.factories import make_partner
from tests.http_server import assert_audit_green, assert_books_unchanged, balances, books, fund_member

REWARD = {"supplier": "gifts", "code": "mug", "kind": "goods", "title": "Mug", "points_price": 120,
          "unit_price_minor": 95, "stock": 2}


def _alliance(bo: BackOffice, *, points: int = 1_000) -> tuple[str, int]:
    """Partners ``alpha`` (issues the member's points), ``gifts`` and ``telco``; a member holding ``points``."""
    now = datetime.now(timezone.utc)
    ids = {code: make_partner(bo.hub, now=now, code=code) for code in ("alpha", "gifts", "telco")}
    member_number, _ = bo.enrol(name="Reward Member")
    member_id = member_id_of(bo.hub, member_number)
    fund_member(bo.hub, member_id=member_id, partner_id=ids["alpha"], points=points)
    return member_number, member_id


def _listed(bo: BackOffice, reward: dict[str, object]) -> None:
    proposed = bo.post("/rewards", reward, role="partner_manager")
    assert proposed.status == 201, proposed.body
    approved = bo.post(f"/rewards/{reward['code']}/approval", role="admin")
    assert approved.status == 200, approved.body


def _order_count(bo: BackOffice) -> int:
    with bo.hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(RewardOrder)) or 0


def test_a_reward_is_approved_by_another_person_ordered_fulfilled_and_returned(app):
    bo = BackOffice(app)
    member_number, member_id = _alliance(bo)
    proposed = bo.post("/rewards", REWARD, role="partner_manager")
    assert proposed.status == 201, proposed.body
    assert (proposed.body["status"], proposed.body["points_price"], proposed.body["currency"]) == (
        "proposed", 120, "EUR")
    entries = audit_count(bo.hub)
    same_person = bo.post("/rewards/mug/approval", role="partner_manager")
    assert (same_person.status, same_person.code) == (409, "same_approver")
    assert same_person.headers["Content-Type"] == "application/problem+json"
    assert audit_count(bo.hub) == entries
    approved = bo.post("/rewards/mug/approval", role="admin")
    assert (approved.status, approved.body["status"], approved.body["approved_by"]) == (
        200, "listed", bo.actor("admin"))
    assert [reward["code"] for reward in bo.get("/rewards", role="admin", query={"status": "listed"}).body[
        "rewards"]] == ["mug"]

    placed = bo.post(f"/members/{member_number}/reward-orders", {"reference": "BO-1", "reward": "mug", "items": 2},
                     role="customer_service")
    assert placed.status == 201, placed.body
    order = placed.body["order"]
    assert (order["channel"], order["status"], order["points"], order["amount_minor"], placed.body["voucher_codes"]) \
        == ("back-office", "placed", 240, 190, None)
    assert balances(bo.hub, member_id) == {"available": 760, "pending": 0, "held": 240}
    again = bo.post(f"/members/{member_number}/reward-orders", {"reference": "BO-1", "reward": "mug", "items": 2},
                    role="customer_service")
    assert (again.status, again.body["replayed"], again.body["order"]) == (200, True, order)
    assert bo.get("/rewards/mug", role="partner_manager").body["stock"] == 0

    fulfilled = bo.post("/reward-orders/back-office/BO-1/fulfilment", {"note": "parcel 7731"},
                        role="partner_manager")
    assert (fulfilled.status, fulfilled.body["status"], fulfilled.body["fulfilment_note"]) == (
        200, "fulfilled", "parcel 7731")
    assert balances(bo.hub, member_id) == {"available": 760, "pending": 0, "held": 0}
    listed = bo.get("/reward-orders", role="partner_manager", query={"supplier": "gifts", "status": "fulfilled"})
    assert [row["reference"] for row in listed.body["orders"]] == ["BO-1"]
    assert bo.get("/reward-orders", role="customer_service", query={"member": member_number,
                                                                    "status": "placed"}).body["orders"] == []

    returned = bo.post("/reward-orders/back-office/BO-1/return", {"reason": "arrived broken"}, role="customer_service")
    assert (returned.status, returned.body["status"], returned.body["end_reason"]) == (
        200, "returned", "arrived broken")
    assert balances(bo.hub, member_id) == {"available": 1_000, "pending": 0, "held": 0}
    assert bo.get("/rewards/mug", role="partner_manager").body["stock"] == 2
    assert_audit_green(bo.hub)


def test_voucher_codes_are_counted_on_upload_and_shown_once_to_the_member(app):
    bo = BackOffice(app)
    member_number, _ = _alliance(bo)
    _listed(bo, {**REWARD, "code": "cinema", "kind": "voucher", "stock": None, "points_price": 100})
    uploaded = bo.post("/rewards/cinema/voucher-codes", {"codes": ["CINE-0001", "CINE-0002"]},
                       role="partner_manager")
    assert uploaded.status == 201, uploaded.body
    assert uploaded.body == {"reward": "cinema", "codes_added": 2, "vouchers_left": 2}
    assert "CINE-0001" not in str(raw_table_text(bo.hub, "reward_voucher_codes"))
    placed = bo.post(f"/members/{member_number}/reward-orders", {"reference": "V-1", "reward": "cinema"},
                     role="customer_service")
    assert (placed.status, placed.body["voucher_codes"], placed.body["order"]["status"]) == (
        201, ["CINE-0001"], "fulfilled")
    again = bo.post(f"/members/{member_number}/reward-orders", {"reference": "V-1", "reward": "cinema"},
                    role="customer_service")
    assert (again.status, again.body["voucher_codes"]) == (200, None)
    repeated = bo.post("/rewards/cinema/voucher-codes", {"codes": ["CINE-0002"]}, role="partner_manager")
    assert (repeated.status, repeated.code) == (409, "conflict")
    assert "CINE-0002" not in str(repeated.body)


def test_refused_orders_and_steps_are_problems_that_leave_the_books_unchanged(app):
    bo = BackOffice(app)
    member_number, _ = _alliance(bo, points=300)
    _listed(bo, REWARD)
    assert bo.post("/rewards", {**REWARD, "code": "pending"}, role="partner_manager").status == 201
    assert bo.post(f"/members/{member_number}/reward-orders", {"reference": "OK-1", "reward": "mug"},
                   role="customer_service").status == 201
    before, entries, orders = books(bo.hub), audit_count(bo.hub), _order_count(bo)
    refusals = [
        (bo.post(f"/members/{member_number}/reward-orders", {"reference": "R-1", "reward": "mug", "items": 2},
                 role="customer_service"), 409, "out_of_stock"),
        (bo.post(f"/members/{member_number}/reward-orders", {"reference": "R-2", "reward": "pending"},
                 role="customer_service"), 409, "reward_unavailable"),
        (bo.post(f"/members/{member_number}/reward-orders", {"reference": "R-3", "reward": "nothing"},
                 role="customer_service"), 404, "not_found"),
        (bo.post("/members/0000000000000000/reward-orders", {"reference": "R-4", "reward": "mug"},
                 role="customer_service"), 404, "not_found"),
        (bo.post(f"/members/{member_number}/reward-orders", {"reference": "OK-1", "reward": "mug", "items": 1,
                                                             "extra": 1}, role="customer_service"),
         422, "validation_failed"),
        (bo.post("/reward-orders/back-office/OK-1/return", {"reason": "not yet"}, role="customer_service"),
         409, "invalid_state"),
        (bo.post("/reward-orders/back-office/NOPE/fulfilment", {}, role="partner_manager"), 404, "not_found"),
        (bo.post("/rewards/mug/stock", {"items": 0}, role="partner_manager"), 422, "validation_failed"),
        (bo.post("/rewards/mug/prices", {"points_price": 5, "unit_price_minor": 4,
                                         "effective_from": "2020-01-01T00:00:00+00:00"}, role="partner_manager"),
         422, "validation_failed"),
        (bo.post("/reward-orders/back-office/OK-1/fulfilment", {}, role="customer_service"), 403, "role_refused"),
    ]
    for reply, status, code in refusals:
        assert (reply.status, reply.code) == (status, code), reply.body
        assert reply.headers["Content-Type"] == "application/problem+json"
    assert_books_unchanged(bo.hub, before)
    assert (audit_count(bo.hub), _order_count(bo)) == (entries, orders)
    assert bo.get("/rewards/mug", role="admin").body["stock"] == 1
    _listed(bo, {**REWARD, "code": "lamp", "points_price": 250, "stock": 5})
    before, entries, orders = books(bo.hub), audit_count(bo.hub), _order_count(bo)
    short = bo.post(f"/members/{member_number}/reward-orders", {"reference": "R-5", "reward": "lamp"},
                    role="customer_service")
    assert (short.status, short.code) == (422, "insufficient_points")
    assert_books_unchanged(bo.hub, before)
    assert (audit_count(bo.hub), _order_count(bo)) == (entries, orders)
    assert bo.get("/rewards/lamp", role="admin").body["stock"] == 5


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_operator_confirms_bill_credit_from_a_file_and_a_second_run_changes_nothing(app, tmp_path):
    bo = BackOffice(app)
    member_number, member_id = _alliance(bo)
    proposed = run_cli(app, "rewards", "propose", "--supplier", "telco", "--code", "phone-bill", "--kind",
                       "bill_credit", "--title", "Phone bill credit", "--points-price", "100",
                       "--unit-price-minor", "100", "--as", "pam")
    assert proposed.exit_code == 0, proposed.output
    refused = run_cli(app, "rewards", "approve", "phone-bill", "--as", "pam")
    assert refused.exit_code == 1 and "second person" in refused.output
    assert run_cli(app, "rewards", "approve", "phone-bill", "--as", "paul").exit_code == 0
    for reference, items in (("BILL-1", 3), ("BILL-2", 1), ("BILL-3", 1)):
        ordered = run_cli(app, "rewards", "order", "--member", member_number, "--reward", "phone-bill",
                          "--reference", reference, "--items", str(items))
        assert ordered.exit_code == 0, ordered.output
    assert balances(bo.hub, member_id)["held"] == 500

    waiting = tmp_path / "to-fulfil.csv"
    written = run_cli(app, "rewards", "to-fulfil", "--supplier", "telco", "--csv", str(waiting))
    assert written.exit_code == 0, written.output
    rows = _csv_rows(waiting)
    assert [(row["channel"], row["reference"], row["member_number"], row["reward"], row["items"],
             row["amount_minor"], row["currency"]) for row in rows] == [
        ("back-office", "BILL-1", member_number, "phone-bill", "3", "300", "EUR"),
        ("back-office", "BILL-2", member_number, "phone-bill", "1", "100", "EUR"),
        ("back-office", "BILL-3", member_number, "phone-bill", "1", "100", "EUR")]
    assert all(row["fulfil_by"] for row in rows)
    assert run_cli(app, "rewards", "to-fulfil", "--supplier", "gifts", "--csv", str(tmp_path / "none.csv")) \
        .output.startswith("0 orders")

    confirmation = tmp_path / "confirmed.csv"
    confirmation.write_text("channel,reference,outcome,note_or_reason\n"
                            "back-office,BILL-1,fulfilled,bill 2026-11 account 77\n"
                            "back-office,BILL-2,failed,account closed\n", encoding="utf-8")
    first = run_cli(app, "rewards", "confirm", "--supplier", "telco", "--file", str(confirmation))
    assert first.exit_code == 0, first.output
    assert "line 2: fulfilled: BILL-1 (bill 2026-11 account 77)" in first.output
    assert "line 3: failed: BILL-2 (account closed)" in first.output
    assert balances(bo.hub, member_id) == {"available": 600, "pending": 0, "held": 100}
    before, entries = books(bo.hub), audit_count(bo.hub)
    second = run_cli(app, "rewards", "confirm", "--supplier", "telco", "--file", str(confirmation))
    assert second.exit_code == 0, second.output
    assert "line 2: already fulfilled: BILL-1" in second.output and "line 3: already failed: BILL-2" in second.output
    assert_books_unchanged(bo.hub, before)
    assert audit_count(bo.hub) == entries
    # Another supplier's file does not reach telco's orders; a bad line is reported and the rest applied.
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("back-office,BILL-3,shipped,\nback-office,BILL-3,fulfilled,bill 2026-12\n", encoding="utf-8")
    assert "refused" in run_cli(app, "rewards", "confirm", "--supplier", "gifts", "--file", str(mixed)).output
    applied = run_cli(app, "rewards", "confirm", "--supplier", "telco", "--file", str(mixed))
    assert applied.exit_code == 1
    assert "line 1: refused: BILL-3: outcome 'shipped'" in applied.output
    assert "line 2: fulfilled: BILL-3" in applied.output
    assert [row["reference"] for row in _csv_rows(waiting)] == ["BILL-1", "BILL-2", "BILL-3"]
    assert_audit_green(bo.hub)


def test_the_expiry_job_ends_an_order_not_fulfilled_in_time(app):
    bo = BackOffice(app)
    member_number, member_id = _alliance(bo)
    _listed(bo, {**REWARD, "fulfilment_days": 1})
    assert bo.post(f"/members/{member_number}/reward-orders", {"reference": "LATE-1", "reward": "mug"},
                   role="customer_service").status == 201
    soon = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert run_cli(app, "jobs", "expire-reward-orders", "--now", soon).output.strip() == \
        "expire-reward-orders: 0 reward orders expired"
    later = (datetime.now(timezone.utc) + timedelta(days=2)).isoformat()
    ran = run_cli(app, "jobs", "expire-reward-orders", "--now", later)
    assert ran.output.strip() == "expire-reward-orders: 1 reward orders expired", ran.output
    order = bo.get("/reward-orders/back-office/LATE-1", role="customer_service").body
    assert (order["status"], order["end_reason"]) == ("expired", "not fulfilled in time")
    assert balances(bo.hub, member_id) == {"available": 1_000, "pending": 0, "held": 0}
    assert bo.get("/rewards/mug", role="partner_manager").body["stock"] == 2
    again = run_cli(app, "jobs", "expire-reward-orders", "--now", later)
    assert again.output.strip() == "expire-reward-orders: 0 reward orders expired"
