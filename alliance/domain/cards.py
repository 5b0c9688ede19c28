"""Card numbers: digits with a Luhn check digit, so a mistyped number is caught at the till."""

from __future__ import annotations

from alliance.domain.errors import AllianceError, ValidationFailed

CARD_NUMBER_DIGITS = 16


class CardNotUsable(AllianceError):
    """A blocked or replaced card, or one whose member is closed."""

    code = "card_not_usable"
    http_status = 409
    title = "Card not usable"


def luhn_check_digit(body: str) -> str:
    """Return the Luhn check digit for a string of digits."""
    if not body.isdigit():
        raise ValueError("a card number body must be digits only")
    total = 0
    # Walking from the right, the digit next to the (future) check digit is doubled.
    for position, character in enumerate(reversed(body)):
        digit = int(character)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def is_valid_card_number(number: str) -> bool:
    """True when the number is all digits, of the card length, with a correct check digit."""
    if len(number) != CARD_NUMBER_DIGITS or not number.isdigit():
        return False
    return luhn_check_digit(number[:-1]) == number[-1]


def card_number_from_sequence(prefix: str, sequence: int) -> str:
    """Build a card number from an issuer prefix and a serial number, check digit last."""
    body_length = CARD_NUMBER_DIGITS - 1
    body = f"{prefix}{sequence:0{body_length - len(prefix)}d}"
    if len(body) != body_length:
        raise ValueError("the serial number does not fit the card number")
    return body + luhn_check_digit(body)


def require_valid_card_number(card_number: str) -> None:
    """Refuse a card number whose check digit is wrong, before looking it up."""
    if not is_valid_card_number(card_number):
        raise ValidationFailed("the card number is not valid", fields={"card_number": ["fails the check digit"]})


def require_usable_card(card_status: str, member_status: str) -> None:
    """Refuse a blocked or replaced card, or one whose membership is closed."""
    if card_status != "active" or member_status != "active":
        raise CardNotUsable(f"the card is {card_status} and its membership {member_status}")
