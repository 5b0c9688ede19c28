"""A compiled dump gives exactly what marshmallow's ``Schema.dump`` gives, for every partner reply schema."""

from __future__ import annotations

import inspect
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, fields, post_dump

from alliance.api import dumping
from alliance.api.partner import schemas as partner_schemas

REPLY_SCHEMAS = sorted((schema for _, schema in inspect.getmembers(partner_schemas, inspect.isclass)
                        if issubclass(schema, Schema) and schema.__module__ == partner_schemas.__name__
                        and schema.__name__.endswith("Output")), key=lambda schema: schema.__name__)
MISSING = object()

odd_values = st.sampled_from([Decimal("12"), "12", b"bytes", 3, True, date(2026, 1, 2), 1.0])


def value_for(field: fields.Field[Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values a reply may hold for ``field``: the right kind mostly, now and then None or something odd."""
    if isinstance(field, fields.Nested) and depth < 3:
        nested = field.schema
        one = object_for(nested, depth + 1)
        right = st.lists(one, max_size=3) if nested.many or field.many else one
    elif isinstance(field, fields.List) and depth < 3:
        right = st.lists(value_for(field.inner, depth + 1), max_size=3)
    elif isinstance(field, fields.DateTime):
        right = st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30))]))
    elif isinstance(field, fields.Integer):
        right = st.integers(-(2**63), 2**63)
    elif isinstance(field, fields.String):
        right = st.text(max_size=12)
    elif isinstance(field, fields.Dict):
        right = st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5) | st.none(), max_size=3)
    else:
        right = st.integers() | st.text(max_size=5) | st.booleans()
    return st.one_of(right, right, right, st.none(), odd_values)


def object_for(schema: Schema, depth: int = 0) -> st.SearchStrategy[Any]:
    """A mapping (sometimes an object with attributes) with some of ``schema``'s fields, maybe extra keys."""
    members = {name: st.one_of(st.just(MISSING), value_for(field, depth)) for name, field in schema.dump_fields.items()}

    def build(drawn: dict[str, Any], extra: dict[str, int], as_object: bool) -> Any:
        values = {name: value for name, value in drawn.items() if value is not MISSING} | extra
        return SimpleNamespace(**values) if as_object else values

    return st.builds(build, st.fixed_dictionaries(members),
                     st.dictionaries(st.sampled_from(["unrelated", "other"]), st.integers(), max_size=1),
                     st.booleans().map(lambda flip: flip and depth > 0))


def outcome(dump: Any, value: Any) -> Any:
    try:
        return ("value", dump(value))
    except Exception as error:  # noqa: BLE001 - the two must fail alike, whatever they raise
        return ("raised", type(error))


@pytest.mark.parametrize("schema_class", REPLY_SCHEMAS, ids=lambda schema: schema.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_the_compiled_dump_equals_marshmallows(schema_class, data) -> None:  # type: ignore[no-untyped-def]
    schema = schema_class()
    value = data.draw(object_for(schema))
    assert outcome(dumping.compiled_dump(schema), value) == outcome(schema.dump, value)


def test_the_batch_reply_is_compiled_not_left_to_marshmallow() -> None:
    schema = partner_schemas.BatchOutput()
    assert dumping.compiled_dump(schema) != schema.dump
    now = datetime(2026, 12, 7, 10, 30, tzinfo=timezone.utc)
    reply = {"applied": 1, "rejected": 1, "results": [
        {"index": 0, "receipt_id": "r-1", "status": "applied", "problem": None, "purchase": {
            "receipt_id": "r-1", "card_number": "**** 1234", "amount_minor": 1250, "currency": "EUR",
            "purchased_at": now, "reported_at": now, "terminal": None, "refunded_amount_minor": 0,
            "points": {"total": 18, "partner_funded": 18, "hub_funded": 0, "state": "pending", "pending_until": now},
            "breakdown": {"rule_points": 18, "campaigns": []}}},
        {"index": 1, "receipt_id": "r-2", "status": "rejected", "purchase": None,
         "problem": {"code": "card_unknown", "status": 404}},
    ]}
    assert dumping.compiled_dump(schema)(reply) == schema.dump(reply)
    assert dumping.compiled_dump(schema)(reply)["results"][0]["purchase"]["purchased_at"] == "2026-12-07T10:30:00+00:00"


class _Hooked(Schema):
    name = fields.String()

    @post_dump
    def shout(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {key: value.upper() for key, value in data.items()}


class _Unusual(Schema):
    flag = fields.Boolean()


class _Renamed(Schema):
    shown = fields.String(attribute="hidden", dump_default="none")


@pytest.mark.parametrize("schema", [_Hooked(), _Unusual(), _Renamed(), _Hooked(many=True)],
                         ids=["hook", "boolean field", "default and attribute", "many with hook"])
def test_what_is_not_compiled_is_left_to_marshmallow(schema: Schema) -> None:
    assert dumping.compiled_dump(schema) == schema.dump


def test_a_many_schema_dumps_each_item() -> None:
    schema = partner_schemas.PointsOutput(many=True)
    items = [{"total": 1, "state": "active"}, {"total": Decimal("2"), "pending_until": None}]
    assert dumping.compiled_dump(schema)(items) == schema.dump(items) == [
        {"total": 1, "state": "active"}, {"total": 2, "pending_until": None}]
