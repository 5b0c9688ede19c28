"""Strict base64url for secrets in configuration and for values the hub writes itself."""

from __future__ import annotations

import base64
import binascii
import re

BASE64URL_PATTERN = re.compile(r"^[A-Za-z0-9_-]*={0,2}\Z")


def encode_base64url(data: bytes) -> str:
    """``data`` in base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_base64url(text: str) -> bytes | None:
    """Strict base64url: only the URL alphabet, and only the one canonical encoding.

    Python's decoder ignores stray characters and the unused low bits of the last
    character; accepting those would let a stored value change without failing to
    verify. Padding is optional; anything else that is not canonical gives ``None``.
    """
    if not BASE64URL_PATTERN.match(text):
        return None
    unpadded = text.rstrip("=")
    try:
        data = base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
    except (binascii.Error, ValueError):
        return None
    canonical_forms = (encode_base64url(data), base64.urlsafe_b64encode(data).decode("ascii"))
    return data if text in canonical_forms else None
