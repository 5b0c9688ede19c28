"""The floors of the HTTP benchmarks, served by gunicorn with the hub's own server settings.

(a) ``GET /bare``: a bare Flask route returning a small JSON.
(b) ``POST /partner/v1/purchases``: verify the request's Ed25519 signature (the hub's own
    ``check_signature``: the RFC 9421 base built by http-message-signatures, then
    Ed25519) and run one earn-shaped transaction through SQLAlchemy Core: insert a
    transaction row and two entry rows, update one balance row, commit. Its own tables,
    in its own database on the benchmark's PostgreSQL server.
(c) the same route and transaction, with the signature verified the cheapest way it can
    be: the signature base built by hand from the headers by string splitting (no
    structured-field or library parsing, no checks beyond the signature itself), then
    Ed25519. Served by a second gunicorn (``BENCH_PROBE_VERIFY=minimal``) on a database of
    its own, so the gap between (b) and (c) is what parsing and the library cost.

It answers the same pre-signed purchase requests as the hub (the path is the same), so
the two are measured with the same load. Settings come from the environment:
``BENCH_PROBE_DATABASE_URL``, ``BENCH_PROBE_KEYS`` (a JSON file mapping key id to
the raw public key in hex) and ``BENCH_PROBE_VERIFY`` (``library``, the default, for (b);
``minimal`` for (c)).
"""

from __future__ import annotations

import base64
import json
import os

import http_sf
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flask import Flask, Response, request
from sqlalchemy import BigInteger, Column, Engine, MetaData, String, Table, create_engine, insert, update

from alliance.domain.signatures import IncomingRequest, SignatureRejected, check_signature

metadata = MetaData()
probe_transactions = Table(
    "probe_transactions", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("receipt_id", String(64), nullable=False),
    Column("member_card", String(19), nullable=False),
)
probe_entries = Table(
    "probe_entries", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("transaction_id", BigInteger, nullable=False),
    Column("account", String(40), nullable=False),
    Column("amount_points", BigInteger, nullable=False),
)
probe_balances = Table(
    "probe_balances", metadata,
    Column("card_number", String(19), primary_key=True),
    Column("balance_points", BigInteger, nullable=False),
)


def prepare_database(engine: Engine, card_numbers: list[str]) -> None:
    """Create the probe's tables and one zero balance row per card."""
    metadata.drop_all(engine)
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(probe_balances),
                           [{"card_number": card, "balance_points": 0} for card in card_numbers])


def probe_server(context: dict, partners, members, *, verify: str = "library"):  # type: ignore[no-untyped-def, type-arg]
    """The probe's database (one zero balance per member's card) and its gunicorn, not yet started.

    ``partners`` and ``members`` are ``common.earning_hub``'s, so the probe answers the
    same pre-signed purchase reports as the hub. ``verify`` is ``library`` for floor (b)
    and ``minimal`` for floor (c); each gets a database of its own.
    """
    from benchmarks import common

    name = "probe" if verify == "library" else f"probe_{verify}"
    probe_url = common.create_database(context["postgres"], f"bench_{name}")
    prepare_database(create_engine(probe_url), [card for _, card in members])
    keys_file = context["artifacts"] / "probe-keys.json"
    keys_file.write_text(json.dumps({partner.key_id: partner.public_key_raw.hex() for partner in partners}))
    return common.Gunicorn(context, "benchmarks.probe_app:create_app()",
                           {"BENCH_PROBE_DATABASE_URL": probe_url, "BENCH_PROBE_KEYS": str(keys_file),
                            "BENCH_PROBE_VERIFY": verify},
                           ready_path="/bare", name=name)


def minimal_signature_check(method: str, path: str, query: str, headers: dict[str, str],
                            keys: dict[str, Ed25519PublicKey]) -> bool:
    """Floor (c): the RFC 9421 base of the SDK's own request shape, built by hand, and its Ed25519 check.

    It assumes what the SDK sends (one signature, components and parameters written the
    SDK's way) and reads them by splitting strings: a request of another shape simply
    fails. It checks nothing but the signature, which is the point of a floor.
    """
    label, _, params = headers.get("signature-input", "").partition("=")
    inner, _, parameters = params.partition(")")
    key_id = parameters.split(';keyid="', 1)[-1].split('"', 1)[0]
    signature_b64 = headers.get("signature", "").partition("=")[2].strip(":")
    lines = []
    for component in inner.lstrip("(").split(" "):
        name = component.strip('"')
        if name == "@method":
            lines.append(f'"@method": {method}')
        elif name == "@path":
            lines.append(f'"@path": {path}')
        elif name == "@query":
            lines.append(f'"@query": ?{query}')
        else:
            lines.append(f'"{name}": {headers.get(name, "").strip()}')
    lines.append(f'"@signature-params": {params}')
    public_key = keys.get(key_id)
    if label != "pos" or public_key is None:
        return False
    try:
        public_key.verify(base64.b64decode(signature_b64), "\n".join(lines).encode("latin-1"))
    except Exception:
        return False
    return True


def _signature_key_id() -> str:
    parsed = http_sf.parse(request.headers.get("Signature-Input", "").encode("latin-1"), tltype="dictionary")
    (_, (_, parameters)), = parsed.items()
    return parameters["keyid"]


def create_app() -> Flask:
    """The probe application; gunicorn runs ``benchmarks.probe_app:create_app()``."""
    app = Flask("probe")
    keys = {key_id: Ed25519PublicKey.from_public_bytes(bytes.fromhex(raw))
            for key_id, raw in json.loads(open(os.environ["BENCH_PROBE_KEYS"]).read()).items()}
    engine = create_engine(os.environ["BENCH_PROBE_DATABASE_URL"], pool_size=5, max_overflow=5)
    minimal = os.environ.get("BENCH_PROBE_VERIFY", "library") == "minimal"

    @app.get("/bare")
    def bare() -> dict:  # type: ignore[type-arg]
        return {"status": "ok"}

    @app.post("/partner/v1/purchases")
    def earn() -> Response:
        if minimal:
            environ = request.environ
            headers = {name.lower(): value for name, value in request.headers.items()}
            if not minimal_signature_check(environ["REQUEST_METHOD"], environ["PATH_INFO"],
                                           environ.get("QUERY_STRING", ""), headers, keys):
                return Response('{"code":"signature_invalid"}', status=401, content_type="application/json")
            key_id = headers["signature-input"].split(';keyid="', 1)[-1].split('"', 1)[0]
            body = request.get_data(cache=True)
        else:
            message = IncomingRequest(method=request.method,
                                      url=f"http://{request.host}{request.full_path.rstrip('?')}",
                                      headers=tuple(request.headers.items()), body=request.get_data(cache=True))
            key_id = _signature_key_id()
            try:
                check_signature(message, key_id=key_id, public_key=keys[key_id])
            except (SignatureRejected, KeyError):
                return Response('{"code":"signature_invalid"}', status=401, content_type="application/json")
            body = message.body
        purchase = json.loads(body)
        points = purchase["amount_minor"] // 100
        with engine.begin() as connection:
            transaction_id = connection.execute(insert(probe_transactions).values(
                receipt_id=purchase["receipt_id"], member_card=purchase["card_number"]
            ).returning(probe_transactions.c.id)).scalar_one()
            connection.execute(insert(probe_entries), [
                {"transaction_id": transaction_id, "account": f"partner:{key_id}:issued", "amount_points": -points},
                {"transaction_id": transaction_id, "account": f"card:{purchase['card_number']}",
                 "amount_points": points},
            ])
            connection.execute(update(probe_balances).where(probe_balances.c.card_number == purchase["card_number"])
                               .values(balance_points=probe_balances.c.balance_points + points))
        body = json.dumps({"receipt_id": purchase["receipt_id"], "points": points, "transaction_id": transaction_id})
        return Response(body, status=201, content_type="application/json")

    return app
