"""Audit-log checkpoint documents: canonical bytes, strict parsing, and the export file."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from alliance.domain.audit_chain import ChainHead
from alliance.domain.errors import ValidationFailed
from alliance.services.audit_checkpoints import (
    SignedCheckpoint,
    checkpoint_document,
    export_document,
    parse_checkpoint_document,
    parse_export,
)
from settlement.statements import parse_signature, render_signature, sign_statement, verify_statement

TAKEN_AT = datetime(2026, 12, 6, 0, 0, 12, 345678, tzinfo=timezone.utc)
HEAD = ChainHead(42, "cd" * 32)
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def test_a_checkpoint_document_is_canonical_json_and_parses_back():
    document = checkpoint_document(TAKEN_AT, HEAD)
    assert document == (b'{"entries":42,"format":"points-alliance-audit-checkpoint/1","head_hash":"'
                        + b"cd" * 32 + b'","taken_at":"2026-12-06T00:00:12.345678Z"}')
    assert parse_checkpoint_document(document) == (TAKEN_AT, HEAD)


@pytest.mark.parametrize(
    ("old", "new"),
    [(b'"entries":42', b'"entries":41.0'), (b'"entries":42', b'"entries": 42'), (b'checkpoint/1', b'checkpoint/2'),
     (b'"taken_at":"2026-12-06T00:00:12.345678Z"', b'"taken_at":"yesterday"'), (b'"cdcd', b'"CDCD'),
     (b'{"entries":42,', b'{"entries":42,"extra":1,')],
    ids=["float", "not-canonical", "format", "instant", "hash-case", "extra-field"],
)
def test_anything_but_a_checkpoint_document_is_refused(old, new):
    document = checkpoint_document(TAKEN_AT, HEAD)
    assert old in document
    with pytest.raises(ValidationFailed):
        parse_checkpoint_document(document.replace(old, new, 1))


def test_an_export_keeps_each_checkpoints_exact_signed_bytes():
    document = checkpoint_document(TAKEN_AT, HEAD)
    signature = render_signature(sign_statement(document, KEY, "stmt-test"))
    copies = parse_export(export_document([SignedCheckpoint(7, document, signature)]))
    assert copies == [SignedCheckpoint(7, document, signature)]
    assert verify_statement(copies[0].document, parse_signature(copies[0].signature), {"stmt-test": KEY.public_key()})
    for broken in (b"not json", b'{"format":"other","checkpoints":[]}',
                   b'{"format":"points-alliance-audit-checkpoints/1","checkpoints":[{"id":"7"}]}'):
        with pytest.raises(ValidationFailed):
            parse_export(broken)
