"""The ledger's pure rules: balanced postings and lot allocation, no database."""

from datetime import datetime, timedelta, timezone

import pytest

from alliance.domain.errors import InsufficientPoints, UnbalancedPosting, ValidationFailed
from alliance.domain.ledger import (
    MAX_ENTRIES_PER_TRANSACTION,
    MAX_POINTS_PER_POSTING,
    AccountKind,
    Entry,
    LotSlice,
    account_code,
    allocate_soonest_expiry_first,
    balanced_entries,
    require_positive_points,
    restore_latest_expiry_first,
)

DAY = timedelta(days=1)
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_balanced_entries_merges_per_account_and_orders_by_account_id():
    entries = balanced_entries([(9, 50), (3, -80), (9, 30)])
    assert entries == [Entry(3, -80), Entry(9, 80)]


def test_balanced_entries_drops_zero_lines():
    assert balanced_entries([(1, -5), (2, 5), (3, 0)]) == [Entry(1, -5), Entry(2, 5)]


@pytest.mark.parametrize(
    "lines",
    [
        [(1, -5), (2, 4)],
        [(1, 5)],
        [(1, 5), (1, -5)],
        [],
        [(1, 0), (2, 0)],
    ],
    ids=["not-zero-sum", "single-entry", "nets-to-nothing", "empty", "only-zeros"],
)
def test_balanced_entries_refuses_malformed_postings(lines):
    with pytest.raises(UnbalancedPosting):
        balanced_entries(lines)


def test_balanced_entries_refuses_non_integer_amounts():
    with pytest.raises(UnbalancedPosting, match="integer"):
        balanced_entries([(1, -1.5), (2, 1.5)])
    with pytest.raises(UnbalancedPosting, match="integer"):
        balanced_entries([(1, True), (2, -1)])


def test_balanced_entries_refuses_amounts_beyond_the_limit():
    with pytest.raises(UnbalancedPosting, match="limit"):
        balanced_entries([(1, -(MAX_POINTS_PER_POSTING + 1)), (2, MAX_POINTS_PER_POSTING + 1)])


def test_balanced_entries_refuses_too_many_entries():
    lines = [(account, 1) for account in range(1, MAX_ENTRIES_PER_TRANSACTION + 1)]
    lines.append((MAX_ENTRIES_PER_TRANSACTION + 1, -MAX_ENTRIES_PER_TRANSACTION))
    with pytest.raises(UnbalancedPosting, match="too many"):
        balanced_entries(lines)


@pytest.mark.parametrize("points", [0, -1, True, 2.0, MAX_POINTS_PER_POSTING + 1])
def test_require_positive_points_refuses_anything_but_a_positive_integer(points):
    with pytest.raises(ValidationFailed):
        require_positive_points(points)


def test_allocation_takes_the_soonest_expiring_lot_first():
    lots = [LotSlice(1, START + 30 * DAY, 100), LotSlice(2, START + 10 * DAY, 50), LotSlice(3, START + 20 * DAY, 80)]
    assert allocate_soonest_expiry_first(lots, 100) == [(2, 50), (3, 50)]


def test_allocation_breaks_expiry_ties_by_lot_id():
    lots = [LotSlice(7, START, 10), LotSlice(4, START, 10)]
    assert allocate_soonest_expiry_first(lots, 15) == [(4, 10), (7, 5)]


def test_allocation_refuses_more_than_the_lots_hold():
    with pytest.raises(InsufficientPoints):
        allocate_soonest_expiry_first([LotSlice(1, START, 10)], 11)


def test_allocation_skips_empty_lots():
    assert allocate_soonest_expiry_first([LotSlice(1, START, 0), LotSlice(2, START + DAY, 5)], 5) == [(2, 5)]


def test_restore_gives_back_to_the_latest_expiring_lots_first():
    consumed = [LotSlice(1, START + DAY, 40), LotSlice(2, START + 5 * DAY, 30)]
    assert restore_latest_expiry_first(consumed, 50) == [(2, 30), (1, 20)]


def test_restore_refuses_more_than_was_consumed():
    with pytest.raises(InsufficientPoints):
        restore_latest_expiry_first([LotSlice(1, START, 5)], 6)


def test_account_codes_name_their_owner():
    assert account_code(AccountKind.MEMBER_HELD, member_id=7) == "member:7:held"
    assert account_code(AccountKind.PARTNER_ISSUED, partner_id=3) == "partner:3:issued"
    assert account_code(AccountKind.HUB_BREAKAGE) == "hub:breakage"
    with pytest.raises(ValueError):
        account_code(AccountKind.MEMBER_AVAILABLE)
