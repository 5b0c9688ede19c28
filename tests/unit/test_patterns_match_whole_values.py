"""Validation patterns hold for the whole value: Python's ``$`` also matches before a final newline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from marshmallow import ValidationError

from alliance.api.patterns import WholeValue

REPOSITORY = Path(__file__).resolve().parents[2]
# A pattern literal given to re or marshmallow that ends in an unescaped $.
DOLLAR_AT_THE_END = re.compile(r"""(re\.compile|re\.match|re\.search|validate\.Regexp)\(\s*r?(["'])(.*?)(?<!\\)\$\2""")


def test_no_pattern_of_ours_ends_in_a_bare_dollar():
    found = [f"{path.relative_to(REPOSITORY)}:{number}"
             for package in ("alliance", "partners_sdk", "settlement")
             for path in sorted((REPOSITORY / package).rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if DOLLAR_AT_THE_END.search(line)]
    assert found == [], "end these patterns in \\Z (or validate with WholeValue): " + ", ".join(found)


def test_whole_value_refuses_a_final_newline_that_regexp_lets_through():
    card = WholeValue(r"^[0-9]{16}$", error="16 digits")
    assert card("6390000000000018") == "6390000000000018"
    for value in ("6390000000000018\n", "6390000000000018\n\n", "\n6390000000000018", "639000000000001"):
        with pytest.raises(ValidationError, match="16 digits"):
            card(value)
    # The published pattern (OpenAPI, ECMA-262) keeps $: there it only matches at the very end.
    assert card.regex.pattern == "^[0-9]{16}$"
