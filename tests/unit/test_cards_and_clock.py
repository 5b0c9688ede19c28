"""Card numbers with a Luhn check digit, and calendar month arithmetic."""

from datetime import datetime, timezone

import pytest

from alliance.domain.cards import card_number_from_sequence, is_valid_card_number, luhn_check_digit
from alliance.domain.clock import add_months


def test_luhn_check_digit_matches_the_textbook_example():
    # The classic worked example: 7992739871 has check digit 3.
    assert luhn_check_digit("7992739871") == "3"


def test_card_number_from_sequence_is_valid_and_unique_per_sequence():
    first, second = card_number_from_sequence("6390", 1), card_number_from_sequence("6390", 2)
    assert first != second
    assert len(first) == 16 and first.startswith("6390")
    assert is_valid_card_number(first) and is_valid_card_number(second)


@pytest.mark.parametrize("typo_position", range(16))
def test_a_single_mistyped_digit_is_caught(typo_position):
    number = card_number_from_sequence("6390", 123456)
    wrong_digit = str((int(number[typo_position]) + 1) % 10)
    mistyped = number[:typo_position] + wrong_digit + number[typo_position + 1:]
    assert not is_valid_card_number(mistyped)


def test_card_numbers_of_the_wrong_form_are_invalid():
    assert not is_valid_card_number("6390-0000-0000-0013")
    assert not is_valid_card_number("639000000000001")


def test_card_number_refuses_a_sequence_that_does_not_fit():
    with pytest.raises(ValueError):
        card_number_from_sequence("6390", 10**12)


def test_add_months_clamps_to_the_end_of_a_shorter_month():
    moment = datetime(2026, 1, 31, 12, tzinfo=timezone.utc)
    assert add_months(moment, 1) == datetime(2026, 2, 28, 12, tzinfo=timezone.utc)
    assert add_months(moment, 24) == datetime(2028, 1, 31, 12, tzinfo=timezone.utc)
    assert add_months(datetime(2027, 11, 30, tzinfo=timezone.utc), 3) == datetime(2028, 2, 29, tzinfo=timezone.utc)
