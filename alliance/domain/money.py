"""Currencies: how many minor units make one unit (ISO 4217 exponents)."""

from __future__ import annotations

# Currencies whose minor unit is not the cent; every other ISO 4217 code has two decimals.
NON_CENT_EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3, "CLF": 4, "UYW": 4,
}
DEFAULT_EXPONENT = 2


def minor_units_per_unit(currency: str) -> int:
    """100 for EUR, 1 for JPY, 1000 for KWD."""
    # Every exponent is >= 0, so the power is a whole number.
    units: int = 10 ** NON_CENT_EXPONENTS.get(currency, DEFAULT_EXPONENT)
    return units


PRICE_SCALE, PRICE_PRECISION = 8, 20
RATE_SCALE, RATE_PRECISION = 4, 12
MULTIPLIER_SCALE, MULTIPLIER_PRECISION = 4, 8


def exact_decimal_problem(value: object, *, scale: int, precision: int) -> str | None:
    """Why ``value`` cannot be stored exactly as NUMERIC(precision, scale), or None if it can.

    Rounding a price to fit its column would silently change what a partner is charged,
    so anything finer than the column's scale, or too large for it, is refused instead.
    """
    from decimal import Decimal

    if not isinstance(value, Decimal) or not value.is_finite():
        return "must be a finite decimal number"
    if value < 0:
        return "must not be negative"
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -scale:
        return f"has more than {scale} decimal places"
    if value >= Decimal(10) ** (precision - scale):
        return f"must be below {10 ** (precision - scale)}"
    return None


def major_units_text(amount_minor: int, currency: str) -> str:
    """Minor units as the currency's major units, exactly, without separators: 1460 EUR is ``14.60``."""
    places = NON_CENT_EXPONENTS.get(currency, DEFAULT_EXPONENT)
    sign = "-" if amount_minor < 0 else ""
    whole, fraction = divmod(abs(amount_minor), 10 ** places)
    return f"{sign}{whole}.{fraction:0{places}d}" if places else f"{sign}{whole}"


def parse_major_units(text: str, currency: str, *, signed: bool = False) -> int:
    """An amount typed in the currency's major units (``14.60``, ``1,234.5``) as exact minor units.

    Thousands separators (``,``, spaces, ``_``) are allowed; more decimals than the
    currency has are refused rather than rounded (``14.605`` EUR), as is a sign unless
    ``signed`` (then ``-`` or ``−`` makes it negative). Raises ``ValueError`` saying why.
    """
    cleaned = "".join(text.split()).replace(",", "").replace("_", "")
    negative = False
    if cleaned[:1] in ("-", "\u2212", "+"):
        if not signed:
            raise ValueError("must not carry a sign")
        negative, cleaned = cleaned[0] != "+", cleaned[1:]
    whole, point, fraction = cleaned.partition(".")
    if not (whole or fraction) or not (whole.isascii() and fraction.isascii()) \
            or not (whole.isdigit() or not whole) or not (fraction.isdigit() or not fraction) \
            or (point and not fraction and not whole):
        raise ValueError(f"is not an amount such as 14.60, got {text!r}")
    places = NON_CENT_EXPONENTS.get(currency, DEFAULT_EXPONENT)
    if len(fraction) > places:
        raise ValueError(f"has more decimals than {currency}'s {places}" if places
                         else f"is in whole {currency}, without decimals")
    # places >= 0, so the power is a whole number.
    scale: int = 10 ** places
    amount = int(whole or "0") * scale + int(fraction.ljust(places, "0") or "0")
    return -amount if negative else amount
