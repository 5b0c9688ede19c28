"""Amounts typed and shown in a currency's major units, converted to minor units exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alliance.domain.money import major_units_text, parse_major_units


@pytest.mark.parametrize(("text", "currency", "minor"), [
    ("14.60", "EUR", 1460), ("14.6", "EUR", 1460), ("14", "EUR", 1400), (".5", "EUR", 50), ("0.05", "EUR", 5),
    ("1,234.56", "EUR", 123456), ("1 234.56", "EUR", 123456), ("1_000", "EUR", 100000),
    ("1500", "JPY", 1500), ("1.234", "KWD", 1234), ("0", "EUR", 0),
])
def test_major_units_become_exact_minor_units(text, currency, minor):
    assert parse_major_units(text, currency) == minor


@pytest.mark.parametrize(("text", "currency", "why"), [
    ("14.605", "EUR", "more decimals than EUR's 2"), ("1.5", "JPY", "whole JPY"), ("", "EUR", "not an amount"),
    (".", "EUR", "not an amount"), ("1.2.3", "EUR", "not an amount"), ("1e3", "EUR", "not an amount"),
    ("NaN", "EUR", "not an amount"), ("١٤", "EUR", "not an amount"), ("-5", "EUR", "sign"),
    ("1460 paid", "EUR", "not an amount"),
])
def test_what_is_not_an_exact_amount_is_refused_with_the_reason(text, currency, why):
    with pytest.raises(ValueError, match=why):
        parse_major_units(text, currency)


def test_a_signed_amount_may_be_negative_when_allowed():
    assert parse_major_units("-12.50", "EUR", signed=True) == -1250
    assert parse_major_units("\u221212.50", "EUR", signed=True) == -1250
    assert parse_major_units("+3", "EUR", signed=True) == 300


@pytest.mark.parametrize(("minor", "currency", "text"), [
    (1460, "EUR", "14.60"), (5, "EUR", "0.05"), (-1250, "EUR", "-12.50"), (1500, "JPY", "1500"), (1234, "KWD", "1.234"),
])
def test_minor_units_are_shown_in_major_units(minor, currency, text):
    assert major_units_text(minor, currency) == text


@given(st.integers(min_value=-10**15, max_value=10**15), st.sampled_from(["EUR", "JPY", "KWD", "CLF"]))
def test_showing_then_reading_an_amount_gives_it_back(minor, currency):
    assert parse_major_units(major_units_text(minor, currency), currency, signed=True) == minor
