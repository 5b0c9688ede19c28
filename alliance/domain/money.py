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
    return 10 ** NON_CENT_EXPONENTS.get(currency, DEFAULT_EXPONENT)
