"""The character sets of the identifiers staff choose: partner codes, terminal codes and key ids.

They end up in URLs, in the ``keyid`` parameter of RFC 9421 signature headers, in log
lines, CSV cells and console messages. Keeping them to a small, documented set of
characters means none of those places has to escape them, and nothing that looks like
markup, a format template, a quote or a header separator can enter the hub through them.
Every entry point (console forms, back-office API schemas, the operator CLI and the
partner-management service behind them) checks the same patterns from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IdentifierRule:
    """One kind of identifier: its pattern and the words that describe it to a person."""

    noun: str
    pattern: re.Pattern[str]
    description: str


PARTNER_CODE = IdentifierRule(
    "partner code", re.compile(r"[a-z0-9][a-z0-9-]{1,39}"),
    "2-40 characters: lowercase letters a-z, digits and '-', starting with a letter or digit")
TERMINAL_CODE = IdentifierRule(
    "terminal code", re.compile(r"[a-z0-9][a-z0-9-]{1,39}"),
    "2-40 characters: lowercase letters a-z, digits and '-', starting with a letter or digit")
KEY_ID = IdentifierRule(
    "key id", re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}"),
    "1-100 characters: letters A-Z and a-z, digits, '.', '_', ':' and '-', starting with a letter or digit")


def identifier_problem(rule: IdentifierRule, value: object) -> str | None:
    """Why ``value`` is not a valid identifier of this kind, or None when it is."""
    if isinstance(value, str) and rule.pattern.fullmatch(value):
        return None
    return f"a {rule.noun} has {rule.description}"
