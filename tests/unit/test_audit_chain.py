"""The hash-chained audit log: canonical payloads, building a chain, and finding the first break."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alliance.domain.audit_chain import (
    GENESIS_HASH,
    AuditEntry,
    BreakReason,
    ChainHead,
    anchor_problem,
    canonical_payload,
    chain_hash,
    entry_payload,
    next_entry,
    verify_chain,
)
from alliance.domain.errors import ValidationFailed

START = datetime(2026, 11, 24, 9, 30, tzinfo=timezone.utc)
PARIS = timezone(timedelta(hours=1))
CONTENT_FIELDS = ("occurred_at", "actor", "action", "subject", "before", "after")


def build_chain(length: int) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    previous = None
    for index in range(length):
        previous = next_entry(
            previous,
            occurred_at=START + timedelta(minutes=index),
            actor=f"staff:{index % 3}",
            action="partner.update",
            subject=f"partner:{index % 7}",
            before={"issue_price_per_point": Decimal("0.0100"), "name": f"Partner {index}"},
            after={"issue_price_per_point": Decimal("0.0125"), "name": f"Partner {index}", "tags": ["a", index]},
        )
        entries.append(previous)
    return entries


CHAIN = build_chain(100)


def edited(entry: AuditEntry, field_name: str) -> AuditEntry:
    replacements = {
        "occurred_at": entry.occurred_at + timedelta(microseconds=1),
        "actor": entry.actor + "x",
        "action": "partner.delete",
        "subject": entry.subject + "0",
        "before": {**entry.before, "name": "Someone else"},
        "after": None,
        "sequence": entry.sequence + 1,
        "previous_hash": "f" * 64,
        "entry_hash": "e" * 64,
    }
    return dataclasses.replace(entry, **{field_name: replacements[field_name]})


# Canonical payloads.


def test_canonical_payload_is_sorted_compact_utf8_json():
    payload = canonical_payload(
        7, datetime(2026, 11, 24, 10, 30, tzinfo=PARIS), "staff:ana", "member.erase", "member:42",
        {"name": "Zoë", "points": 1200, "price": Decimal("1.50")}, None, GENESIS_HASH,
    )
    assert payload == (
        '{"action":"member.erase","actor":"staff:ana","after":null,'
        '"before":{"name":"Zoë","points":1200,"price":"1.50"},'
        '"occurred_at":"2026-11-24T09:30:00.000000+00:00","previous_hash":"' + GENESIS_HASH + '",'
        '"sequence":7,"subject":"member:42"}'
    ).encode("utf-8")


def test_canonical_payload_does_not_depend_on_key_order_or_timezone_of_an_instant():
    first = canonical_payload(1, START, "a", "b", "c", {"x": 1, "y": {"p": 1, "q": 2}}, None, GENESIS_HASH)
    second = canonical_payload(
        1, START.astimezone(PARIS), "a", "b", "c", {"y": {"q": 2, "p": 1}, "x": 1}, None, GENESIS_HASH
    )
    assert first == second


def test_a_snapshot_read_back_from_json_storage_hashes_the_same():
    before = {"price": Decimal("12.50"), "valid_from": datetime(2026, 1, 1, tzinfo=timezone.utc),
              "starts_on": date(2026, 1, 1), "ids": (1, 2)}
    stored = json.loads(json.dumps(before, default=str))
    original = canonical_payload(1, START, "a", "b", "c", before, None, GENESIS_HASH)
    read_back = canonical_payload(1, START, "a", "b", "c", {**stored, "valid_from": "2026-01-01T00:00:00.000000+00:00"},
                                  None, GENESIS_HASH)
    assert original == read_back


@pytest.mark.parametrize(
    ("before", "after", "field", "path"),
    [
        ({"price": 1.5}, None, "before", "before.price"),
        (None, {"lines": [{"amount": 0.1}]}, "after", "after.lines[0].amount"),
        ({"nested": {"deeper": [1, 2, 3.0]}}, None, "before", "before.nested.deeper[2]"),
    ],
)
def test_canonical_payload_refuses_floats_anywhere_in_snapshots(before, after, field, path):
    with pytest.raises(ValidationFailed, match="float") as raised:
        canonical_payload(1, START, "a", "b", "c", before, after, GENESIS_HASH)
    assert raised.value.fields == {field: [f"{path}: floats are not allowed"]}


def test_next_entry_refuses_floats_too():
    with pytest.raises(ValidationFailed, match="float"):
        next_entry(None, occurred_at=START, actor="a", action="b", subject="c", before=None, after={"amount": 9.99})


@pytest.mark.parametrize(
    "snapshot",
    [{"amount": Decimal("NaN")}, {"amount": Decimal("Infinity")}, {1: "x"}, {"tags": {"a", "b"}},
     {"at": datetime(2026, 1, 1)}, {"blob": b"bytes"}],
    ids=["nan", "infinity", "non-text-key", "set", "naive-datetime", "bytes"],
)
def test_canonical_payload_refuses_values_without_one_canonical_form(snapshot):
    with pytest.raises(ValidationFailed):
        canonical_payload(1, START, "a", "b", "c", snapshot, None, GENESIS_HASH)


def test_canonical_payload_refuses_a_naive_occurred_at_and_a_bad_sequence():
    with pytest.raises(ValidationFailed, match="timezone-aware"):
        canonical_payload(1, datetime(2026, 1, 1), "a", "b", "c", None, None, GENESIS_HASH)
    for sequence in (0, -1, True, "1"):
        with pytest.raises(ValidationFailed, match="sequence"):
            canonical_payload(sequence, START, "a", "b", "c", None, None, GENESIS_HASH)


def test_canonical_payload_refuses_snapshots_nested_without_end():
    snapshot: dict = {}
    innermost = snapshot
    for _ in range(40):
        innermost["next"] = {}
        innermost = innermost["next"]
    with pytest.raises(ValidationFailed, match="nested too deeply"):
        canonical_payload(1, START, "a", "b", "c", snapshot, None, GENESIS_HASH)


def test_chain_hash_is_sha256_hex():
    assert chain_hash(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# Building a chain.


def test_the_first_entry_links_to_genesis_and_each_next_entry_to_its_predecessor():
    first, second = CHAIN[0], CHAIN[1]
    assert (first.sequence, first.previous_hash) == (1, GENESIS_HASH)
    assert (second.sequence, second.previous_hash) == (2, first.entry_hash)
    assert first.entry_hash == chain_hash(entry_payload(first))
    assert len({entry.entry_hash for entry in CHAIN}) == len(CHAIN)


def test_a_chain_of_a_hundred_entries_verifies():
    report = verify_chain(CHAIN)
    assert report.ok
    assert report.first_break is None
    assert report.entries_checked == 100
    assert (report.last_sequence, report.last_entry_hash) == (100, CHAIN[-1].entry_hash)


def test_an_empty_chain_verifies_with_the_genesis_head():
    report = verify_chain([])
    assert report.ok and report.entries_checked == 0
    assert (report.last_sequence, report.last_entry_hash) == (0, GENESIS_HASH)


def test_next_entry_stores_occurred_at_in_utc():
    entry = next_entry(None, occurred_at=START.astimezone(PARIS), actor="a", action="b", subject="c",
                       before=None, after=None)
    assert entry.occurred_at == START and entry.occurred_at.tzinfo == timezone.utc


def test_changing_the_callers_dictionary_afterwards_does_not_change_the_entry():
    after = {"name": "Old", "tags": ["x"]}
    entry = next_entry(None, occurred_at=START, actor="a", action="b", subject="c", before=None, after=after)
    after["name"] = "New"
    after["tags"].append("y")
    assert entry.after == {"name": "Old", "tags": ["x"]}
    assert verify_chain([entry]).ok


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"actor": ""}, "actor"), ({"action": "   "}, "action"), ({"subject": "s" * 201}, "subject"),
     ({"occurred_at": datetime(2026, 1, 1)}, "occurred_at")],
)
def test_next_entry_refuses_blank_or_oversized_labels_and_naive_times(changes, field):
    arguments = {"occurred_at": START, "actor": "a", "action": "b", "subject": "c", "before": None, "after": None}
    with pytest.raises(ValidationFailed) as raised:
        next_entry(None, **{**arguments, **changes})
    assert field in raised.value.fields


def test_next_entry_refuses_an_oversized_entry():
    with pytest.raises(ValidationFailed, match="limited"):
        next_entry(None, occurred_at=START, actor="a", action="b", subject="c", before=None,
                   after={"notes": "x" * 70_000})


# Finding the first broken link.


@pytest.mark.parametrize("field_name", CONTENT_FIELDS)
@pytest.mark.parametrize("index", [0, 41, 99])
def test_editing_any_content_field_breaks_the_chain_at_that_entry(field_name, index):
    entries = list(CHAIN)
    entries[index] = edited(entries[index], field_name)
    report = verify_chain(entries)
    assert not report.ok
    assert report.first_break.reason is BreakReason.ENTRY_HASH_MISMATCH
    assert (report.first_break.position, report.first_break.sequence) == (index + 1, index + 1)
    assert report.entries_checked == index + 1
    assert (report.last_sequence, report.last_entry_hash) == (
        index, CHAIN[index - 1].entry_hash if index else GENESIS_HASH)


def test_editing_a_recorded_entry_hash_is_a_hash_mismatch_at_that_entry():
    entries = list(CHAIN)
    entries[99] = edited(entries[99], "entry_hash")
    report = verify_chain(entries)
    assert report.first_break.reason is BreakReason.ENTRY_HASH_MISMATCH
    assert report.first_break.sequence == 100


def test_editing_a_previous_hash_breaks_the_link_at_that_entry():
    entries = list(CHAIN)
    entries[50] = edited(entries[50], "previous_hash")
    report = verify_chain(entries)
    assert report.first_break.reason is BreakReason.PREVIOUS_HASH_MISMATCH
    assert report.first_break.sequence == 51


def test_a_first_entry_not_linked_to_genesis_is_reported_as_such():
    entries = [edited(CHAIN[0], "previous_hash"), *CHAIN[1:]]
    report = verify_chain(entries)
    assert report.first_break.reason is BreakReason.NOT_LINKED_TO_GENESIS
    assert report.first_break.sequence == 1


@pytest.mark.parametrize("index", [0, 1, 57, 98])
def test_deleting_an_entry_is_a_sequence_gap_at_the_entry_after_it(index):
    entries = CHAIN[:index] + CHAIN[index + 1:]
    report = verify_chain(entries)
    assert report.first_break.reason is BreakReason.SEQUENCE_GAP
    assert (report.first_break.position, report.first_break.sequence) == (index + 1, index + 2)
    assert "expected sequence " + str(index + 1) in report.first_break.detail


@pytest.mark.parametrize("index", [0, 30, 98])
def test_swapping_two_neighbouring_entries_breaks_the_chain_where_the_first_one_was(index):
    entries = list(CHAIN)
    entries[index], entries[index + 1] = entries[index + 1], entries[index]
    report = verify_chain(entries)
    assert report.first_break.reason is BreakReason.SEQUENCE_GAP
    assert (report.first_break.position, report.first_break.sequence) == (index + 1, index + 2)


def test_swapping_distant_entries_breaks_the_chain_at_the_earlier_position():
    entries = list(CHAIN)
    entries[10], entries[80] = entries[80], entries[10]
    report = verify_chain(entries)
    assert report.first_break.reason is BreakReason.SEQUENCE_GAP
    assert (report.first_break.position, report.first_break.sequence) == (11, 81)


def test_repeating_an_entry_is_a_sequence_repeat():
    entries = CHAIN[:21] + [CHAIN[20]] + CHAIN[21:]
    report = verify_chain(entries)
    assert report.first_break.reason is BreakReason.SEQUENCE_REPEAT
    assert (report.first_break.position, report.first_break.sequence) == (22, 21)


def test_renumbering_an_entry_to_hide_a_deletion_is_caught_by_its_hash():
    entries = CHAIN[:40] + [dataclasses.replace(CHAIN[41], sequence=41)] + CHAIN[42:]
    report = verify_chain(entries)
    assert report.first_break.reason is BreakReason.PREVIOUS_HASH_MISMATCH
    assert report.first_break.sequence == 41


def test_rehashing_an_edited_entry_breaks_the_link_from_the_next_one():
    entries = list(CHAIN)
    tampered = edited(entries[60], "after")
    entries[60] = dataclasses.replace(tampered, entry_hash=chain_hash(entry_payload(tampered)))
    report = verify_chain(entries)
    assert report.first_break.reason is BreakReason.PREVIOUS_HASH_MISMATCH
    assert (report.first_break.position, report.first_break.sequence) == (62, 62)
    assert report.last_sequence == 61


def test_a_float_smuggled_into_a_stored_entry_is_reported_not_raised():
    entries = list(CHAIN)
    entries[5] = dataclasses.replace(entries[5], after={"amount": 1.5})
    report = verify_chain(entries)
    assert report.first_break.reason is BreakReason.MALFORMED_ENTRY
    assert report.first_break.sequence == 6
    assert "float" in report.first_break.detail


def test_verification_reads_entries_one_at_a_time_and_stops_at_the_first_break():
    entries = list(CHAIN[:10])
    entries[3] = edited(entries[3], "actor")
    read: list[int] = []

    def stream() -> Iterator[AuditEntry]:
        for entry in entries:
            read.append(entry.sequence)
            yield entry
        raise AssertionError("the verifier read past the first break")

    report = verify_chain(stream())
    assert report.first_break.sequence == 4
    assert read == [1, 2, 3, 4]


# Any single-field mutation anywhere is detected.

label_text = st.text(min_size=1, max_size=20)
snapshot_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**12), max_value=10**12) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
snapshots = st.none() | st.dictionaries(st.text(max_size=5), snapshot_values, max_size=4)
field_values = {
    "sequence": st.integers(min_value=-3, max_value=200),
    "occurred_at": st.datetimes(timezones=st.just(timezone.utc)),
    "actor": label_text,
    "action": label_text,
    "subject": label_text,
    "before": snapshots,
    "after": snapshots,
    "previous_hash": st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    "entry_hash": st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), length=st.integers(min_value=1, max_value=12))
def test_any_single_field_mutation_anywhere_is_detected_at_that_entry(data, length):
    entries = CHAIN[:length]
    index = data.draw(st.integers(min_value=0, max_value=length - 1), label="index")
    field_name = data.draw(st.sampled_from(sorted(field_values)), label="field")
    original = getattr(entries[index], field_name)
    replacement = data.draw(field_values[field_name].filter(lambda value: value != original), label="value")
    mutated = [*entries[:index], dataclasses.replace(entries[index], **{field_name: replacement}), *entries[index + 1:]]
    report = verify_chain(mutated)
    assert not report.ok
    assert report.first_break.position == index + 1
    assert report.entries_checked == index + 1


# Anchoring the head outside the log: truncation and rewriting show at the anchored position.

def test_a_chain_head_is_whole_entries_and_a_lowercase_hash():
    assert ChainHead(0, GENESIS_HASH).entries == 0
    assert ChainHead(3, CHAIN[2].entry_hash).head_hash == CHAIN[2].entry_hash
    for entries, head_hash in [(-1, CHAIN[0].entry_hash), (True, CHAIN[0].entry_hash), (1, CHAIN[0].entry_hash.upper()),
                               (1, "ab"), (1, GENESIS_HASH), (0, CHAIN[0].entry_hash)]:
        with pytest.raises(ValidationFailed):
            ChainHead(entries, head_hash)


def test_an_anchor_names_truncation_and_rewriting_and_accepts_the_log_that_holds_it():
    anchor = ChainHead(10, CHAIN[9].entry_hash)
    assert anchor_problem(anchor, CHAIN[9].entry_hash, newest_sequence=100) is None
    assert anchor_problem(anchor, None, newest_sequence=8) == "the log has no entry 10 (its newest is 8): truncated"
    assert anchor_problem(anchor, CHAIN[8].entry_hash, newest_sequence=12) == (
        f"its entry 10 hashes to {CHAIN[8].entry_hash} instead: rewritten")
    # An anchor taken on an empty log holds whatever the log became.
    assert anchor_problem(ChainHead(0, GENESIS_HASH), None, newest_sequence=0) is None
