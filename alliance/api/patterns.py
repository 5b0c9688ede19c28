"""Pattern validation that holds for the whole value.

Python's ``$`` also matches just before a trailing newline, so ``re.match`` with
``^[0-9]{16}$`` accepts ``"6390...\\n"``; the patterns compiled for our own checks end in
``\\Z`` instead. The API's marshmallow patterns keep ``$``, because they are published
in the OpenAPI document, where a JSON Schema ``pattern`` (ECMA-262) has no ``\\Z`` and
its ``$`` only matches at the very end; they are matched against the whole value here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, overload

from marshmallow import ValidationError, fields, validate


class WholeValue(validate.Regexp):
    """marshmallow's ``Regexp``, refusing what the pattern does not match from first character to last."""

    @overload
    def __call__(self, value: str) -> str: ...

    @overload
    def __call__(self, value: bytes) -> bytes: ...

    def __call__(self, value: str | bytes) -> str | bytes:
        # A str pattern is matched against str values and a bytes one against bytes, as in
        # marshmallow's own Regexp; that pairing is beyond what the types can say.
        regex: re.Pattern[Any] = self.regex
        if regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class UtcDateTime(fields.AwareDateTime):
    """An ISO 8601 date and time with its offset that also exists in UTC.

    ``0001-01-01T00:00:00+00:01`` is a valid aware date-time, but a minute before year 1
    in UTC: converting it (as every timestamp is, on its way to the database) overflows.
    Such a value is refused here, with the other malformed input, instead of failing later.
    """

    default_error_messages = {"out_of_range": "Not a date and time that exists in UTC (years 1 to 9999)."}

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            moment.astimezone(timezone.utc)
        except OverflowError:
            raise self.make_error("out_of_range") from None
        return moment
