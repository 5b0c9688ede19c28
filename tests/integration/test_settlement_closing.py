"""Closing settlement cycles: exact lines, nets that sum to the hub margin, once and only once.

The activity below is worked by hand. All partners settle daily in UTC at midnight, in
EUR (100 cents to the euro); prices are per point in euros:

    partner  issue   redemption
    alpha    0.0125  0.0080
    bravo    0.0100  0.0075
    charlie  0.0133  0.0111

On 2026-11-02 (the cycle [11-02 00:00Z, 11-03 00:00Z)):

- member one earns 1000 and 333 at alpha: 1333 points issued × 1.25 cents = 1666.25 → 1666;
- member two earns 500 at bravo (issued: 500 × 1 cent = 500) and bravo claws back 100
  of them (reversed: −100);
- member two earns 50 at charlie: 50 × 1.33 = 66.5 → 66 (half-even keeps the even 66);
- member one holds 600 at charlie and captures 555: −555 × 1.11 = −616.05 → −616; then
  charlie refunds 55 of it: +55 × 1.11 = 61.05 → 61;
- member two holds and captures 200 at alpha: −200 × 0.80 = −160; the points come 50
  from the charlie lot (it expires first) and 150 from the bravo lot.

Nets: alpha 1666 − 160 = 1506; bravo 500 − 100 = 400; charlie 66 − 616 + 61 = −489.
Hub margin 1506 + 400 − 489 = 1417. Gross obligations 1826 + 600 + 743 = 3169, net
payments 1506 + 400 + 489 = 2395, netting efficiency 774 / 3169 = 0.24424… → 0.2442.
Residues: alpha 0.25, bravo 0, charlie 0.5 − 0.05 + 0.05 = 0.5.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError

from alliance.domain.errors import ConfigurationError, InsufficientPoints, InvalidState, ValidationFailed
from alliance.models import (
    JournalEntry,
    JournalTransaction,
    LedgerAccount,
    RedemptionHold,
    SettlementRun,
    SettlementStatement,
    SettlementStatementLine,
)
from alliance.services import ledger
from alliance.services.audit import run_audit
from alliance.services.jobs import run_exclusively
from alliance.services.partner_admin import add_price
from settlement.closing import (
    close_cycle,
    close_due_cycles,
    closing_job,
    cycle_summary,
    rounding_account_minor,
)
from settlement.cycles import cycle_containing
from settlement.keys import (
    StatementSigner,
    load_public_key,
    load_statement_private_key,
    private_key_pem,
    public_key_pem,
    statement_key_id,
)
from settlement.netting import IssuerRedeemerFlow
from settlement.statements import parse_signature, verify_statement
from tests.factories import make_member, make_partner

UTC = timezone.utc
ONBOARDED_AT = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
DAY_ONE = datetime(2026, 11, 2, tzinfo=UTC)
DAY_TWO = datetime(2026, 11, 3, tzinfo=UTC)
FAR_EXPIRY = datetime(2028, 12, 31, tzinfo=UTC)
PRICES = {
    "alpha": (Decimal("0.0125"), Decimal("0.0080")),
    "bravo": (Decimal("0.0100"), Decimal("0.0075")),
    "charlie": (Decimal("0.0133"), Decimal("0.0111")),
}


@pytest.fixture(scope="module")
def signer() -> StatementSigner:
    """A hub statement key, loaded the way the app would load it from PEM text."""
    key = load_statement_private_key(private_key_pem(Ed25519PrivateKey.generate()))
    return StatementSigner(signing_key=key, key_id=statement_key_id(key.public_key()), payment_terms_days=14)


def make_partners(hub, **terms) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """The three partners of the worked example, settling daily at midnight UTC."""
    return {
        code: make_partner(hub, now=ONBOARDED_AT, code=code, settlement_cycle="daily", time_zone="UTC",
                           issue_price_per_point=issue, redemption_price_per_point=redemption, **terms)
        for code, (issue, redemption) in PRICES.items()
    }


def post_day_one(hub, partners: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    """The activity of the module docstring, at explicit moments on 2026-11-02."""
    one = make_member(hub, now=ONBOARDED_AT).member_id
    two = make_member(hub, now=ONBOARDED_AT).member_id
    at = DAY_ONE.replace
    with hub.unit_of_work() as uow:
        session = uow.session
        ledger.earn(session, member_id=one, partner_id=partners["alpha"], points=1000, now=at(hour=10),
                    expires_at=FAR_EXPIRY)
        ledger.earn(session, member_id=one, partner_id=partners["alpha"], points=333, now=at(hour=10, minute=5),
                    expires_at=FAR_EXPIRY)
        bravo_earn = ledger.earn(session, member_id=two, partner_id=partners["bravo"], points=500,
                                 now=at(hour=10, minute=10), expires_at=FAR_EXPIRY)
        ledger.earn(session, member_id=two, partner_id=partners["charlie"], points=50, now=at(hour=10, minute=15),
                    expires_at=FAR_EXPIRY - timedelta(days=300))
        ledger.clawback_earn(session, earn_transaction_id=bravo_earn.transaction_id, points=100, now=at(hour=11))
        charlie_hold = ledger.authorize_hold(session, member_id=one, partner_id=partners["charlie"], points=600,
                                             now=at(hour=12), ttl_s=600)
        ledger.capture_hold(session, hold_id=charlie_hold.hold_id, points=555, now=at(hour=12, minute=1))
        alpha_hold = ledger.authorize_hold(session, member_id=two, partner_id=partners["alpha"], points=200,
                                           now=at(hour=12, minute=30), ttl_s=600)
        ledger.capture_hold(session, hold_id=alpha_hold.hold_id, points=200, now=at(hour=12, minute=31))
        ledger.refund_redemption(session, hold_id=charlie_hold.hold_id, points=55, now=at(hour=15))
        uow.commit()


def post_day_two(hub, partners: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    """An earn exactly at the cut-off and one later: both belong to the cycle of 11-03."""
    member = make_member(hub, now=ONBOARDED_AT).member_id
    with hub.unit_of_work() as uow:
        ledger.earn(uow.session, member_id=member, partner_id=partners["bravo"], points=4, now=DAY_TWO,
                    expires_at=FAR_EXPIRY)
        ledger.earn(uow.session, member_id=member, partner_id=partners["alpha"], points=80,
                    now=DAY_TWO.replace(hour=10), expires_at=FAR_EXPIRY)
        uow.commit()


def documents_by_partner(closed, partners: dict[str, int],  # type: ignore[no-untyped-def]
                         cycle_starts_at: datetime) -> dict:
    """The JSON statements of one cycle, by partner code."""
    codes = {partner_id: code for code, partner_id in partners.items()}
    return {codes[item.partner_id]: json.loads(item.document_json) for item in closed
            if item.cycle_starts_at == cycle_starts_at}


def line_amounts(document: dict) -> list[tuple[str, str, int, int, int, str]]:  # type: ignore[type-arg]
    """(kind, price, points, count, amount, residue) of each line."""
    return [(line["line_kind"], line["price_per_point"], line["points"], line["count"], line["amount_minor"],
             line["rounding_residue_minor"]) for line in document["lines"]]


def run_rows(hub) -> int:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(SettlementRun))


def test_closing_prices_every_line_exactly_and_nets_sum_to_the_hub_margin(hub, signer):
    partners = make_partners(hub)
    post_day_one(hub, partners)
    closed = close_due_cycles(hub.session_factory, now=DAY_TWO.replace(hour=1), signer=signer)
    # The onboarding day (empty) and the day of activity, for each of the three partners.
    assert [(item.cycle_starts_at.day, item.newly_closed) for item in closed] == [(1, True), (2, True)] * 3
    documents = documents_by_partner(closed, partners, DAY_ONE)
    assert line_amounts(documents["alpha"]) == [
        ("points_issued", "0.0125", 1333, 2, 1666, "0.25"),
        ("points_redeemed", "0.008", 200, 1, -160, "0"),
    ]
    assert line_amounts(documents["bravo"]) == [
        ("points_issued", "0.01", 500, 1, 500, "0"),
        ("issuance_reversed", "0.01", 100, 1, -100, "0"),
    ]
    assert line_amounts(documents["charlie"]) == [
        ("points_issued", "0.0133", 50, 1, 66, "0.5"),
        ("points_redeemed", "0.0111", 555, 1, -616, "-0.05"),
        ("redemptions_refunded", "0.0111", 55, 1, 61, "0.05"),
    ]
    assert {code: (doc["net_minor"], doc["due_date"]) for code, doc in documents.items()} == {
        "alpha": (1506, "2026-11-17"), "bravo": (400, "2026-11-17"), "charlie": (-489, "2026-11-17"),
    }
    with hub.unit_of_work() as uow:
        summary = cycle_summary(uow.session, cycle_ends_at=DAY_TWO, currency="EUR")
        rounding_minor = rounding_account_minor(uow.session, currency="EUR")
    assert [(net.partner_code, net.net_minor) for net in summary.partner_nets] == [
        ("alpha", 1506), ("bravo", 400), ("charlie", -489)]
    assert summary.hub_margin_minor == 1417 == sum(net.net_minor for net in summary.partner_nets)
    assert summary.hub_margin_exact_minor == Decimal("1417.75")
    assert (summary.gross_obligations_minor, summary.net_payments_minor) == (3169, 2395)
    assert summary.netting_efficiency == Decimal("0.2442")
    assert summary.issuer_redeemer_matrix == (
        IssuerRedeemerFlow("alpha", "charlie", 555),
        IssuerRedeemerFlow("bravo", "alpha", 150),
        IssuerRedeemerFlow("charlie", "alpha", 50),
    )
    assert rounding_minor == Decimal("0.75") == summary.rounding_residue_minor


def test_the_next_cycle_opens_at_the_closing_balance_and_holds_postings_from_the_cut_off(hub, signer):
    partners = make_partners(hub)
    post_day_one(hub, partners)
    close_due_cycles(hub.session_factory, now=DAY_TWO.replace(hour=1), signer=signer)
    post_day_two(hub, partners)
    closed = close_due_cycles(hub.session_factory, now=DAY_TWO + timedelta(days=1, hours=1), signer=signer)
    documents = documents_by_partner(closed, partners, DAY_TWO)
    assert {code: (doc["opening_balance_minor"], doc["net_minor"], doc["closing_balance_minor"])
            for code, doc in documents.items()} == {
        "alpha": (1506, 100, 1606), "bravo": (400, 4, 404), "charlie": (-489, 0, -489)}
    assert line_amounts(documents["bravo"]) == [("points_issued", "0.01", 4, 1, 4, "0")]
    assert documents["alpha"]["cycle"] == {
        "frequency": "daily", "starts_at": "2026-11-03T00:00:00Z", "ends_at": "2026-11-04T00:00:00Z"}


def test_a_closed_cycle_is_returned_byte_for_byte_with_a_signature_that_verifies(hub, signer):
    partners = make_partners(hub)
    post_day_one(hub, partners)
    first = close_due_cycles(hub.session_factory, now=DAY_TWO.replace(hour=1), signer=signer)
    cycle = cycle_containing(DAY_ONE, partner_code="charlie", frequency="daily", time_zone="UTC",
                             cutoff_local=time(0, 0))
    with hub.unit_of_work() as uow:
        again = close_cycle(uow.session, partner_id=partners["charlie"], cycle=cycle, now=DAY_TWO.replace(hour=9),
                            signing_key=signer.signing_key, key_id=signer.key_id, payment_terms_days=30)
        uow.commit()
    original = next(item for item in first if item.run_id == again.run_id)
    assert not again.newly_closed
    assert (again.document_json, again.document_csv, again.signature_json, again.signature_csv) == (
        original.document_json, original.document_csv, original.signature_json, original.signature_csv)
    assert close_due_cycles(hub.session_factory, now=DAY_TWO.replace(hour=2), signer=signer) == []
    assert run_rows(hub) == 6
    public_keys = {signer.key_id: signer.signing_key.public_key()}
    assert verify_statement(again.document_json, parse_signature(again.signature_json), public_keys)
    assert verify_statement(again.document_csv, parse_signature(again.signature_csv), public_keys)
    assert again.document_csv.startswith(b"partner_code,currency,cycle_starts_at,")


def test_a_cycle_that_has_not_ended_waits_and_closing_leaves_the_audit_green(hub, signer):
    partners = make_partners(hub)
    post_day_one(hub, partners)
    # Within the grace after the cut-off, postings that began before it may still commit.
    assert [item.cycle_starts_at.day for item in close_due_cycles(
        hub.session_factory, now=DAY_TWO + timedelta(minutes=2), signer=signer)] == [1, 1, 1]
    job = closing_job(hub.session_factory, signer)
    assert run_exclusively(hub.session_factory, job, holder="test", now=DAY_TWO.replace(hour=1)) == 3
    with hub.unit_of_work() as uow:
        report = run_audit(uow.session)
    assert report.ok, report.first_failure


def test_closing_refuses_a_cycle_not_yet_ended_and_one_that_skips_an_open_cycle(hub, signer):
    partners = make_partners(hub)
    day_one = cycle_containing(DAY_ONE, partner_code="alpha", frequency="daily", time_zone="UTC",
                               cutoff_local=time(0, 0))
    day_two = cycle_containing(DAY_TWO, partner_code="alpha", frequency="daily", time_zone="UTC",
                               cutoff_local=time(0, 0))
    with hub.unit_of_work() as uow:
        close_cycle(uow.session, partner_id=partners["alpha"], cycle=day_one, now=DAY_TWO,
                    signing_key=signer.signing_key, key_id=signer.key_id, payment_terms_days=14)
        with pytest.raises(InvalidState, match="cannot close before"):
            close_cycle(uow.session, partner_id=partners["alpha"], cycle=day_two, now=DAY_TWO.replace(hour=23),
                        signing_key=signer.signing_key, key_id=signer.key_id, payment_terms_days=14)
        later = cycle_containing(DAY_TWO + timedelta(days=1), partner_code="alpha", frequency="daily",
                                 time_zone="UTC", cutoff_local=time(0, 0))
        with pytest.raises(InvalidState, match="close cycles in order"):
            close_cycle(uow.session, partner_id=partners["alpha"], cycle=later, now=DAY_TWO + timedelta(days=3),
                        signing_key=signer.signing_key, key_id=signer.key_id, payment_terms_days=14)
        with pytest.raises(ValidationFailed, match="another partner"):
            close_cycle(uow.session, partner_id=partners["bravo"], cycle=day_one, now=DAY_TWO,
                        signing_key=signer.signing_key, key_id=signer.key_id, payment_terms_days=14)


def test_the_statement_key_id_names_the_public_key_and_only_ed25519_pem_is_accepted(signer):
    public_pem = public_key_pem(signer.signing_key.public_key())
    assert re.fullmatch(r"stmt-[0-9a-f]{16}", signer.key_id)
    assert statement_key_id(load_public_key(public_pem)) == signer.key_id
    other_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    for bad_text in (other_key, public_pem, "not a key"):
        with pytest.raises(ConfigurationError):
            load_statement_private_key(bad_text)


def test_a_closed_statement_cannot_be_edited_or_deleted_in_the_database(hub, signer):
    partners = make_partners(hub)
    post_day_one(hub, partners)
    close_due_cycles(hub.session_factory, now=DAY_TWO.replace(hour=1), signer=signer)
    for statement in (
        update(SettlementStatement).values(net_minor=0,
                                           closing_balance_minor=SettlementStatement.opening_balance_minor),
        update(SettlementStatementLine).values(amount_minor=0),
        delete(SettlementRun),
    ):
        with hub.unit_of_work() as uow, pytest.raises(DBAPIError, match="refused"):
            uow.session.execute(statement)
    assert run_rows(hub) == 6


def test_a_daily_cycle_across_the_spring_forward_night_in_paris_lasts_23_hours(hub, signer):
    onboarded_at = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    partner_id = make_partner(hub, now=onboarded_at, code="paris", settlement_cycle="daily",
                              time_zone="Europe/Paris")
    member_id = make_member(hub, now=onboarded_at).member_id
    with hub.unit_of_work() as uow:
        # 23:30Z on the 28th is 00:30 on the 29th in Paris: the short day, not the one before.
        ledger.earn(uow.session, member_id=member_id, partner_id=partner_id, points=10,
                    now=datetime(2026, 3, 28, 23, 30, tzinfo=UTC), expires_at=FAR_EXPIRY)
        uow.commit()
    closed = close_due_cycles(hub.session_factory, now=datetime(2026, 3, 30, 12, tzinfo=UTC), signer=signer)
    assert [(item.cycle_starts_at, item.cycle_ends_at, item.net_minor) for item in closed] == [
        (datetime(2026, 3, 27, 23, tzinfo=UTC), datetime(2026, 3, 28, 23, tzinfo=UTC), 0),
        (datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 22, tzinfo=UTC), 10),
    ]
    assert json.loads(closed[1].document_json)["due_date"] == "2026-04-13"


def test_two_concurrent_closers_make_one_run_and_the_same_documents(pg_hub, signer):
    partners = make_partners(pg_hub)
    post_day_one(pg_hub, partners)
    cycle = cycle_containing(DAY_ONE, partner_code="alpha", frequency="daily", time_zone="UTC",
                             cutoff_local=time(0, 0))
    barrier = threading.Barrier(4)
    results, errors = [], []

    def closer() -> None:
        try:
            barrier.wait(timeout=10)
            with pg_hub.unit_of_work() as uow:
                results.append(close_cycle(uow.session, partner_id=partners["alpha"], cycle=cycle,
                                           now=DAY_TWO.replace(hour=1), signing_key=signer.signing_key,
                                           key_id=signer.key_id, payment_terms_days=14))
                uow.commit()
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=closer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(result.newly_closed for result in results) == [False, False, False, True]
    assert len({(result.run_id, result.document_json, result.signature_json) for result in results}) == 1
    assert run_rows(pg_hub) == 1


def test_two_closing_processes_at_once_close_each_cycle_exactly_once(hub, signer):
    partners = make_partners(hub)
    post_day_one(hub, partners)
    barrier = threading.Barrier(2)
    closed_by_each, errors = [], []

    def closing_process() -> None:
        try:
            barrier.wait(timeout=10)
            closed_by_each.append(close_due_cycles(hub.session_factory, now=DAY_TWO.replace(hour=1),
                                                   signer=signer))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=closing_process) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    run_ids = [item.run_id for closed in closed_by_each for item in closed]
    assert len(run_ids) == len(set(run_ids)) == run_rows(hub) == 6


# Numbers the property test's examples, so each gets its own partners and days.
EXAMPLE_NUMBERS = itertools.count()
# Four decimal places, up to 5 cents a point: small enough that any mix of postings fits
# a day, fine enough that most lines need rounding.
price_strategy = st.integers(min_value=0, max_value=500).map(lambda units: Decimal(units).scaleb(-4))
operation_strategy = st.tuples(
    st.integers(min_value=0, max_value=2),  # day of the three-day window
    st.integers(min_value=0, max_value=1439),  # minute of that day
    st.sampled_from(["earn", "earn", "redeem", "refund", "clawback"]),
    st.integers(min_value=0, max_value=2),  # partner
    st.integers(min_value=0, max_value=1),  # member
    st.integers(min_value=1, max_value=400),  # points
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prices=st.lists(st.tuples(price_strategy, price_strategy), min_size=6, max_size=6),
       operations=st.lists(operation_strategy, min_size=1, max_size=14))
def test_for_random_activity_nets_sum_to_the_margin_and_each_closing_opens_the_next(
    pg_hub, signer, prices, operations
):
    # One database for every example: each example gets its own partners and its own days.
    example = next(EXAMPLE_NUMBERS)
    base = datetime(2027, 1, 1, tzinfo=UTC) + timedelta(days=10 * example)
    partners = [make_partner(pg_hub, now=base - timedelta(hours=1), code=f"x{example}-{index}",
                             settlement_cycle="daily", time_zone="UTC", issue_price_per_point=prices[index][0],
                             redemption_price_per_point=prices[index][1]) for index in range(3)]
    with pg_hub.unit_of_work() as uow:
        for index in range(3):
            # New prices from the second day's noon: a partner's lines then split by price.
            add_price(uow.session, code=f"x{example}-{index}", effective_from=base + timedelta(days=1, hours=12),
                      issue_price_per_point=prices[index + 3][0], redemption_price_per_point=prices[index + 3][1],
                      now=base - timedelta(hours=1), actor="test")
        uow.commit()
    members = [make_member(pg_hub, now=base - timedelta(hours=1)).member_id for _ in range(2)]
    for day, minute, kind, partner, member, points in sorted(operations):
        apply_operation(pg_hub, kind, partners[partner], members[member], points,
                        base + timedelta(days=day, minutes=minute))
    closed = close_due_cycles(pg_hub.session_factory, now=base + timedelta(days=3, hours=1), signer=signer)
    for partner_id in partners:
        chain = [json.loads(item.document_json) for item in closed if item.partner_id == partner_id]
        assert [document["opening_balance_minor"] for document in chain] == [0] + [
            document["closing_balance_minor"] for document in chain[:-1]]
    for day in range(3):
        ends_at = base + timedelta(days=day + 1)
        with pg_hub.unit_of_work() as uow:
            summary = cycle_summary(uow.session, cycle_ends_at=ends_at, currency="EUR")
            expected_exact_minor = exact_margin_from_the_journal(uow.session, partners, ends_at)
        assert summary.hub_margin_minor == sum(net.net_minor for net in summary.partner_nets)
        assert summary.hub_margin_exact_minor == expected_exact_minor
        assert summary.hub_margin_exact_minor == summary.hub_margin_minor + summary.rounding_residue_minor
    assert close_due_cycles(pg_hub.session_factory, now=base + timedelta(days=3, hours=2), signer=signer) == []



def apply_operation(hub, kind: str, partner_id: int, member_id: int, points: int,  # type: ignore[no-untyped-def]
                    now: datetime) -> None:
    """One posting in its own transaction; one the ledger refuses is simply not made."""
    with hub.unit_of_work() as uow:
        session = uow.session
        try:
            if kind == "earn":
                ledger.earn(session, member_id=member_id, partner_id=partner_id, points=points, now=now,
                            expires_at=FAR_EXPIRY)
            elif kind == "redeem":
                hold = ledger.authorize_hold(session, member_id=member_id, partner_id=partner_id, points=points,
                                             now=now, ttl_s=60)
                ledger.capture_hold(session, hold_id=hold.hold_id, points=points, now=now)
            elif kind == "refund":
                hold_id = session.scalar(select(RedemptionHold.id).where(
                    RedemptionHold.member_id == member_id, RedemptionHold.status == "captured",
                    RedemptionHold.points_refunded < RedemptionHold.points_captured).order_by(RedemptionHold.id))
                if hold_id is None:
                    return
                refundable = session.get_one(RedemptionHold, hold_id)
                ledger.refund_redemption(session, hold_id=hold_id, now=now, points=min(
                    points, refundable.points_captured - refundable.points_refunded))
            else:
                earn_id = session.scalar(select(JournalTransaction.id).where(
                    JournalTransaction.member_id == member_id, JournalTransaction.partner_id == partner_id,
                    JournalTransaction.kind == "earn").order_by(JournalTransaction.id))
                if earn_id is None:
                    return
                ledger.clawback_earn(session, earn_transaction_id=earn_id, points=1, now=now)
        except (InsufficientPoints, ValidationFailed, InvalidState):
            return
        uow.commit()


def exact_margin_from_the_journal(session, partner_ids: list[int],  # type: ignore[no-untyped-def]
                                  ends_at: datetime) -> Decimal:
    """The cycle's exact margin posting by posting: minus each partner-account entry × price, in cents."""
    rows = session.execute(
        select(JournalEntry.amount_points, JournalTransaction.price_per_point)
        .join(JournalTransaction, JournalTransaction.id == JournalEntry.transaction_id)
        .join(LedgerAccount, LedgerAccount.id == JournalEntry.account_id)
        .where(LedgerAccount.partner_id.in_(partner_ids),
               JournalTransaction.kind.in_(["earn", "clawback", "capture", "redemption_refund"]),
               JournalTransaction.posted_at >= ends_at - timedelta(days=1), JournalTransaction.posted_at < ends_at)
    ).all()
    return sum((-Decimal(amount) * price * 100 for amount, price in rows), Decimal(0))


def test_reversals_in_a_later_cycle_keep_the_price_of_the_posting_they_reverse(hub, signer):
    # Prices rise from 11-02 12:00; the refunds on 11-03 reverse postings made at the old prices.
    partner_id = make_partner(hub, now=ONBOARDED_AT, code="alpha", settlement_cycle="daily", time_zone="UTC",
                              issue_price_per_point=Decimal("0.0100"), redemption_price_per_point=Decimal("0.0080"))
    member_id = make_member(hub, now=ONBOARDED_AT).member_id
    with hub.unit_of_work() as uow:
        add_price(uow.session, code="alpha", effective_from=DAY_ONE.replace(hour=12),
                  issue_price_per_point=Decimal("0.0200"), redemption_price_per_point=Decimal("0.0150"),
                  now=ONBOARDED_AT, actor="test")
        earn = ledger.earn(uow.session, member_id=member_id, partner_id=partner_id, points=1000,
                           now=DAY_ONE.replace(hour=9), expires_at=FAR_EXPIRY)
        hold = ledger.authorize_hold(uow.session, member_id=member_id, partner_id=partner_id, points=400,
                                     now=DAY_ONE.replace(hour=10), ttl_s=600)
        ledger.capture_hold(uow.session, hold_id=hold.hold_id, points=400, now=DAY_ONE.replace(hour=10, minute=1))
        ledger.clawback_earn(uow.session, earn_transaction_id=earn.transaction_id, points=100,
                             now=DAY_TWO.replace(hour=9))
        ledger.refund_redemption(uow.session, hold_id=hold.hold_id, points=50, now=DAY_TWO.replace(hour=10))
        # A new earn the same day takes the new price: the lines split by price.
        ledger.earn(uow.session, member_id=member_id, partner_id=partner_id, points=10, now=DAY_TWO.replace(hour=11),
                    expires_at=FAR_EXPIRY)
        uow.commit()
    closed = close_due_cycles(hub.session_factory, now=DAY_TWO + timedelta(days=1, hours=1), signer=signer)
    document = json.loads(closed[-1].document_json)
    assert line_amounts(document) == [
        ("points_issued", "0.02", 10, 1, 20, "0"),
        ("issuance_reversed", "0.01", 100, 1, -100, "0"),
        ("redemptions_refunded", "0.008", 50, 1, 40, "0"),
    ]
