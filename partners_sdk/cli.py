"""``alliance-pos``: every partner call from a shell, for integrators trying the hub.

Settings come from flags or the environment: ``ALLIANCE_POS_HUB``,
``ALLIANCE_POS_KEY_ID``, ``ALLIANCE_POS_KEY_FILE``, ``ALLIANCE_POS_QUEUE``,
``ALLIANCE_POS_QUEUE_KEY_FILE``. Results are printed as JSON on standard output
(``keygen`` and ``public-key`` print the public key PEM, ready for
``alliance partners add-key --public-key FILE``). A failure prints the error as JSON,
with its ``code``, on standard error and exits 1 when the hub refused the request, 2
for bad arguments or settings, 3 when the hub could not be reached or failed (the same
command may be tried again). Card numbers are never printed whole: only their last
four digits show, in results, queue listings and errors alike.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Literal, Sequence, overload

from partners_sdk.client import DEFAULT_TIMEOUT_S, AllianceClient
from partners_sdk.errors import AllianceError, ConfigurationError, ReceiptAlreadyReportedError
from partners_sdk.keys import generate_key_pair, load_private_key, public_key_pem
from partners_sdk.offline_queue import DeadLetter, OfflineQueue, PendingOperation
from partners_sdk.payloads import MAX_BATCH_ITEMS, PurchaseReport
from partners_sdk.results import Queued, to_json_ready
from partners_sdk.retry import DEFAULT_DEADLINE_S

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_RETRY_LATER = 3
ENVIRONMENT = {"hub": "ALLIANCE_POS_HUB", "key_id": "ALLIANCE_POS_KEY_ID", "key_file": "ALLIANCE_POS_KEY_FILE",
               "queue": "ALLIANCE_POS_QUEUE", "queue_key_file": "ALLIANCE_POS_QUEUE_KEY_FILE"}
MAX_BATCH_FILE_BYTES = 8 * 1024 * 1024
# Printed values that are prose, where a card number could hide inside a sentence.
FREE_TEXT_FIELDS = frozenset({"detail", "last_error", "reason", "stopped_by", "title"})
CARD_NUMBER_IN_TEXT = re.compile(r"(?<![0-9])[0-9]{16}(?![0-9])")


def _common_options(*, with_defaults: bool) -> argparse.ArgumentParser:
    """The settings every call takes, given before the command (``with_defaults``) or after it.

    After the command they default to nothing at all: an option left out there must not
    undo the same option given before the command.
    """
    common = argparse.ArgumentParser(add_help=False,
                                     argument_default=None if with_defaults else argparse.SUPPRESS)

    def default(value: object) -> object:
        return value if with_defaults else argparse.SUPPRESS

    common.add_argument("--hub", help=f"hub base URL (default ${ENVIRONMENT['hub']})")
    common.add_argument("--key-id", help=f"this terminal's key id (default ${ENVIRONMENT['key_id']})")
    common.add_argument("--key-file", help=f"private key PEM (default ${ENVIRONMENT['key_file']})")
    common.add_argument("--queue", help=f"offline queue file (default ${ENVIRONMENT['queue']}, none if unset)")
    common.add_argument("--queue-key-file", help=f"the queue's 32-byte key file (default "
                                                 f"${ENVIRONMENT['queue_key_file']}, else the queue file + .key)")
    common.add_argument("--timeout-s", type=float, default=default(DEFAULT_TIMEOUT_S),
                        help=f"bound on each attempt (default {DEFAULT_TIMEOUT_S:g})")
    common.add_argument("--deadline-s", type=float, default=default(DEFAULT_DEADLINE_S),
                        help=f"bound on each call, retries included (default {DEFAULT_DEADLINE_S:g})")
    common.add_argument("--max-retries", type=int, default=default(3), help="retries per operation (default 3)")
    common.add_argument("--idempotency-key", help="reuse a key to retry an earlier write by hand")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``alliance-pos``."""
    parser = argparse.ArgumentParser(prog="alliance-pos", description="Try every partner call of the alliance hub.",
                                     parents=[_common_options(with_defaults=True)])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options(with_defaults=False)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[common])

    keygen = commands.add_parser("keygen", help="create a terminal key pair; prints the public key PEM")
    keygen.add_argument("--private-key", required=True, help="where to write the private key (mode 0600)")
    keygen.add_argument("--public-key", help="also write the public key PEM here")
    keygen.add_argument("--force", action="store_true", help="replace an existing private key file")
    command("public-key", "print the public key PEM of --key-file")

    purchase = command("purchase", "report a purchase")
    purchase.add_argument("--receipt-id", required=True)
    purchase.add_argument("--card", required=True, help="16-digit card number")
    purchase.add_argument("--amount-minor", type=int, required=True, help="amount in minor units (cents)")
    purchase.add_argument("--currency", required=True)
    purchase.add_argument("--purchased-at", type=_aware_time, help="ISO 8601 with offset (default now)")
    purchase.add_argument("--terminal")
    batch = command("batch", f"report up to {MAX_BATCH_ITEMS} purchases from a JSON file")
    batch.add_argument("--file", required=True, help='a JSON list of purchases, or {"purchases": [...]}')
    refund = command("refund", "refund part or all of a purchase")
    refund.add_argument("--receipt-id", required=True)
    refund.add_argument("--refund-id", required=True)
    refund.add_argument("--amount-minor", type=int, required=True)
    _redemption_commands(command)
    command("get-purchase", "show one purchase").add_argument("--receipt-id", required=True)
    command("get-redemption", "show one redemption").add_argument("--reference", required=True)
    balance = command("balance", "a member's balance (card and PIN)")
    balance.add_argument("--card", required=True)
    balance.add_argument("--pin", help="the member's PIN (asked for if absent)")
    flush = command("flush", "send queued purchases and refunds now")
    flush.add_argument("--limit", type=int, default=10_000)
    queue = command("queue", "list pending operations and dead letters")
    queue.add_argument("--limit", type=int, default=100)
    queue.add_argument("--discard", type=int, metavar="DEAD_LETTER_ID", help="delete one dead letter")
    return parser


def _redemption_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    authorize = command("authorize", "verify the member and hold points for a redemption")
    authorize.add_argument("--reference", required=True)
    authorize.add_argument("--points", type=int, required=True)
    authorize.add_argument("--card", help="card number (with --pin)")
    authorize.add_argument("--pin", help="the member's PIN (asked for if --card is given without it)")
    authorize.add_argument("--code", help="a one-time redemption code, instead of card and PIN")
    authorize.add_argument("--ttl-s", type=int, help="how long the hold lives")
    authorize.add_argument("--terminal")
    capture = command("capture", "spend held points")
    capture.add_argument("--reference", required=True)
    capture.add_argument("--points", type=int, required=True)
    command("void", "release a hold").add_argument("--reference", required=True)
    refund = command("redemption-refund", "give back points of a captured redemption")
    refund.add_argument("--reference", required=True)
    refund.add_argument("--refund-id", required=True)
    refund.add_argument("--points", type=int, required=True)


def _aware_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give a UTC offset, for example 2026-11-02T09:30:00+01:00")
    return moment


def _setting(arguments: argparse.Namespace, name: str, *, required: bool = True) -> str | None:
    value = getattr(arguments, name, None) or os.environ.get(ENVIRONMENT[name])
    if required and not value:
        flag = "--" + name.replace("_", "-")
        raise ConfigurationError(f"give {flag} or set {ENVIRONMENT[name]}")
    return value


@overload
def _queue(arguments: argparse.Namespace, *, required: Literal[True]) -> OfflineQueue: ...


@overload
def _queue(arguments: argparse.Namespace, *, required: bool) -> OfflineQueue | None: ...


def _queue(arguments: argparse.Namespace, *, required: bool) -> OfflineQueue | None:
    # A required setting that is missing raises ConfigurationError, so required=True never gives None.
    path = _setting(arguments, "queue", required=required)
    if path is None:
        return None
    return OfflineQueue(path, key_file=_setting(arguments, "queue_key_file", required=False))


def _client(arguments: argparse.Namespace, queue: OfflineQueue | None) -> AllianceClient:
    return AllianceClient(
        str(_setting(arguments, "hub")), str(_setting(arguments, "key_id")),
        load_private_key(str(_setting(arguments, "key_file"))), timeout_s=arguments.timeout_s,
        deadline_s=arguments.deadline_s, max_retries=arguments.max_retries, queue=queue,
    )


def _pin(given: str | None) -> str:
    if given is not None:
        return given
    # A PIN on the command line shows in the process list; ask for it instead.
    if sys.stdin.isatty():
        return getpass.getpass("member PIN: ")
    return sys.stdin.readline().strip()


def _batch_reports(path: str) -> list[PurchaseReport]:
    source = Path(path)
    if source.stat().st_size > MAX_BATCH_FILE_BYTES:
        raise ConfigurationError(f"{source} is larger than {MAX_BATCH_FILE_BYTES} bytes")
    document = json.loads(source.read_text(encoding="utf-8"))
    items = document.get("purchases") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise ConfigurationError(f"{source} must hold a JSON list of purchases")
    try:
        return [PurchaseReport(receipt_id=item["receipt_id"], card_number=item["card_number"],
                               amount_minor=item["amount_minor"], currency=item["currency"],
                               purchased_at=datetime.fromisoformat(item["purchased_at"]),
                               terminal=item.get("terminal")) for item in items]
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigurationError(f"{source}: each purchase needs receipt_id, card_number, amount_minor, "
                                 f"currency and purchased_at ({error})") from error


def _run_client_command(arguments: argparse.Namespace, client: AllianceClient) -> Any:
    key = arguments.idempotency_key
    name = arguments.command
    if name == "purchase":
        return client.report_purchase(receipt_id=arguments.receipt_id, card_number=arguments.card,
                                      amount_minor=arguments.amount_minor, currency=arguments.currency,
                                      purchased_at=arguments.purchased_at, terminal=arguments.terminal,
                                      idempotency_key=key)
    if name == "batch":
        return client.report_purchases(_batch_reports(arguments.file), idempotency_key=key)
    if name == "refund":
        return client.refund_purchase(arguments.receipt_id, refund_id=arguments.refund_id,
                                      amount_minor=arguments.amount_minor, idempotency_key=key)
    if name == "authorize":
        pin = _pin(arguments.pin) if arguments.card is not None else arguments.pin
        return client.authorize_redemption(reference=arguments.reference, points=arguments.points,
                                           card_number=arguments.card, pin=pin, redemption_code=arguments.code,
                                           ttl_s=arguments.ttl_s, terminal=arguments.terminal, idempotency_key=key)
    if name == "capture":
        return client.capture_redemption(arguments.reference, points=arguments.points, idempotency_key=key)
    if name == "void":
        return client.void_redemption(arguments.reference, idempotency_key=key)
    if name == "redemption-refund":
        return client.refund_redemption(arguments.reference, refund_id=arguments.refund_id, points=arguments.points,
                                        idempotency_key=key)
    if name == "get-purchase":
        return client.get_purchase(arguments.receipt_id)
    if name == "get-redemption":
        return client.get_redemption(arguments.reference)
    if name == "balance":
        return client.get_balance(card_number=arguments.card, pin=_pin(arguments.pin), idempotency_key=key)
    if name == "flush":
        return client.flush(limit=arguments.limit)
    raise ConfigurationError(f"unknown command {name!r}")


def _queue_listing(arguments: argparse.Namespace) -> dict[str, Any]:
    with _queue(arguments, required=True) as queue:
        discarded = queue.discard_dead_letter(arguments.discard) if arguments.discard is not None else None
        listing: dict[str, Any] = {
            "pending_count": queue.pending_count(), "dead_letter_count": queue.dead_letter_count(),
            "pending": [_readable(operation) for operation in queue.pending(limit=arguments.limit)],
            "dead_letters": [_readable(letter) for letter in queue.dead_letters(limit=arguments.limit)],
        }
    if discarded is not None:
        listing["discarded"] = discarded
    return listing


def _readable(row: PendingOperation | DeadLetter) -> dict[str, Any]:
    # A dataclass comes back as a dict of its fields.
    values: dict[str, Any] = to_json_ready(row)
    values["body"] = json.loads(row.body) if row.body else None
    return values


def _masked_card(number: str) -> str:
    """A card number with all but its last four digits hidden, as the hub shows one."""
    return "•" * 12 + number[-4:]


def _masked(value: Any, field: str | None = None) -> Any:
    """``value`` with every card number cut to its last four digits, for printing."""
    if isinstance(value, dict):
        return {name: _masked(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, field) for item in value]
    if isinstance(value, str) and field == "card_number":
        return _masked_card(value)
    if isinstance(value, str) and field in FREE_TEXT_FIELDS:
        return CARD_NUMBER_IN_TEXT.sub(lambda match: _masked_card(match.group()), value)
    return value


def _error_json(error: AllianceError) -> dict[str, Any]:
    values = error.to_dict()
    if isinstance(error, ReceiptAlreadyReportedError) and error.existing_purchase is not None:
        values["existing_purchase"] = to_json_ready(error.existing_purchase)
    return values


def _print_json(value: Any, stream: Any) -> None:
    stream.write(json.dumps(_masked(value), indent=2, ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``alliance-pos``; returns the exit status."""
    arguments = build_parser().parse_args(argv)
    try:
        if arguments.command == "keygen":
            sys.stdout.write(generate_key_pair(arguments.private_key, public_key_path=arguments.public_key,
                                               overwrite=arguments.force))
            return 0
        if arguments.command == "public-key":
            sys.stdout.write(public_key_pem(load_private_key(str(_setting(arguments, "key_file")))))
            return 0
        if arguments.command == "queue":
            _print_json(_queue_listing(arguments), sys.stdout)
            return 0
        with _queue(arguments, required=False) or contextlib.nullcontext() as queue, \
                _client(arguments, queue) as client:
            result = _run_client_command(arguments, client)
        _print_json({"queued": to_json_ready(result)} if isinstance(result, Queued) else to_json_ready(result),
                    sys.stdout)
        return 0
    except (OSError, ValueError) as error:
        _print_json(ConfigurationError(str(error)).to_dict(), sys.stderr)
        return EXIT_USAGE
    except AllianceError as error:
        _print_json(_error_json(error), sys.stderr)
        if isinstance(error, ConfigurationError) or error.http_status is None and not error.retry_safe:
            return EXIT_USAGE
        return EXIT_RETRY_LATER if error.retry_safe else EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
