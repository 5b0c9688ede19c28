"""Pattern validation that holds for the whole value.

Python's ``$`` also matches just before a trailing newline, so ``re.match`` with
``^[0-9]{16}$`` accepts ``"6390...\\n"``; the patterns compiled for our own checks end in
``\\Z`` instead. The API's marshmallow patterns keep ``$``, because they are published
in the OpenAPI document, where a JSON Schema ``pattern`` (ECMA-262) has no ``\\Z`` and
its ``$`` only matches at the very end; they are matched against the whole value here.
"""

from __future__ import annotations

from marshmallow import ValidationError, validate


class WholeValue(validate.Regexp):
    """marshmallow's ``Regexp``, refusing what the pattern does not match from first character to last."""

    def __call__(self, value):  # type: ignore[no-untyped-def]
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value
