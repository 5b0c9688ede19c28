"""The plan for spreading the hub's tables over a distributed PostgreSQL (Citus), as data.

One primary holds every table today. Past what one primary can write (see "Capacity
model" in docs/operations.md), the plan is Citus: the member's data sharded by member,
so that a posting, which locks one member and writes that member's rows, runs on one
node; the partners' small, read-mostly tables copied to every node as reference
tables; the back office, settlement and staff tables kept on the coordinator.

Citus's rules, which ``tests/unit/test_distribution_plan.py`` checks every table of
``alliance.models.Base.metadata`` against:

- a distributed table has its distribution column, never NULL;
- every primary key, unique constraint and unique index of a distributed table
  includes the distribution column (uniqueness is enforced per shard only);
- a foreign key runs between two co-located distributed tables and includes the
  distribution column on both sides, or from any table to a reference table, or
  between two coordinator tables; never from a reference or coordinator table to a
  distributed one;
- a table that refers to members is distributed by member.

Today's schema was built for one primary and breaks these rules in the places listed
in ``DEPARTURES``, each with what must change before the tables can be distributed.
The test fails when a new break appears that is not listed, and when a listed one has
been fixed (so the list shrinks as the schema is made ready), which keeps this file
and docs/operations.md ("Beyond one primary") true.

Nothing here imports the ORM or needs a database.
"""

from __future__ import annotations

from dataclasses import dataclass

MEMBER_GROUP = "member"


@dataclass(frozen=True)
class Distributed:
    """A sharded table: its distribution column and its co-location group.

    Tables of one group with equal distribution values share a shard, so a member's
    posting (transaction, entries, lots, balances) commits on one node.
    """

    column: str
    group: str = MEMBER_GROUP


@dataclass(frozen=True)
class Departure:
    """One way today's schema breaks a rule of the plan, and what must change first.

    ``rule`` is one of ``RULES``; ``subject`` names the constraint or index (by its
    name in the models) or, for the column rules, the column.
    """

    table: str
    rule: str
    subject: str
    change: str


RULES = (
    "distribution_column_missing",
    "distribution_column_nullable",
    "unique_without_distribution_column",
    "foreign_key_across_shards",
    "member_keyed_table_not_distributed",
)

DISTRIBUTED: dict[str, Distributed] = {
    "members": Distributed("id"),
    "member_profiles": Distributed("member_id"),
    "cards": Distributed("member_id"),
    "ledger_accounts": Distributed("member_id"),
    "journal_transactions": Distributed("member_id"),
    "journal_entries": Distributed("member_id"),
    "point_lots": Distributed("member_id"),
    "lot_consumptions": Distributed("member_id"),
    "redemption_holds": Distributed("member_id"),
    "redemption_codes": Distributed("member_id"),
    "purchases": Distributed("member_id"),
    "purchase_refunds": Distributed("member_id"),
    "redemption_refunds": Distributed("member_id"),
    "member_notifications": Distributed("member_id"),
    # The sender's side; the receiver's is another member, usually on another node.
    "member_transfers": Distributed("from_member_id"),
    # Written by every signed request before the member is known (the nonce and the
    # idempotency claim come first), and unique per partner, not per member: spread
    # by their own keys, each in its own group. A write therefore touches two or
    # three shards and commits with Citus's two-phase commit.
    "signature_nonces": Distributed("nonce", group="nonce"),
    "idempotency_keys": Distributed("idempotency_key", group="idempotency_key"),
    "member_tier_history": Distributed("member_id"),
    # A campaign's segment (its listed members) and what campaigns awarded, by member.
    "campaign_segment_members": Distributed("member_id"),
    "campaign_awards": Distributed("member_id"),
    # Behaviour points: an event and its awards are member-keyed, like purchases.
    "behaviour_events": Distributed("member_id"),
    "behaviour_awards": Distributed("member_id"),
    # A tier benefit paid once per member and year.
    "birthday_awards": Distributed("member_id"),
    # A member's coupons and their uses, written with the purchase or redemption they go with.
    "coupons": Distributed("member_id"),
    "coupon_uses": Distributed("member_id"),
    # A member's reward orders, written with the hold on the member's points.
    "reward_orders": Distributed("member_id"),
}

# Small, read by nearly every posting, changed by onboarding and staff only: copied to
# every node, so a member's shard joins them locally. A write to one takes a two-phase
# commit over all nodes, which their rate of change allows.
REFERENCE: dict[str, str] = {
    "partners": "every posting reads its partner's status, currency and time zone",
    "partner_prices": "every settling posting records the price in force",
    "partner_earn_rules": "every earn reads the rule in force",
    "terminals": "purchases and redemptions name the till",
    "partner_keys": "every signed request is verified against its key",
    "campaigns": "an earn reads the campaigns running at its moment",
    "campaign_funders": "an earn of a joint campaign reads its funders and their shares",
    "behaviour_rules": "every reported event reads its event type's rule; a handful of rows",
    "tier_policy_versions": "every earn's tier multiplier comes from the policy schedule; a few versions a year",
    "risk_policy_versions": "every earn, redemption and verification is decided under the policy; a few versions",
    "risk_pattern_rules": "the pattern rules' terms, one row per pattern an operator changed",
    "partner_amount_profiles": "one row per partner, recomputed daily, read by the amount-outlier pattern",
    "partner_credit": "one row per partner; every earn reads its credit state",
    "coupon_series": "a purchase or redemption presenting a coupon reads its series' terms; a few offers a month",
    "coupon_series_partners": "where each coupon series may be used; a few rows per series",
    "rewards": "every order reads its reward's terms; a stocked reward's count is written per order, as a "
               "budgeted campaign's is",
    "reward_prices": "every order reads its reward's price in force; a few prices per reward",
}

# Staff, back office, settlement and grading: low volume, and several need one total
# order or one lock over all partners (the audit log's hash chain, job leases, a
# partner's settlement lock), which one node gives for free.
COORDINATOR: dict[str, str] = {
    "staff_people": "staff identities, a few hundred rows",
    "staff_users": "console logins",
    "staff_sessions": "console sessions",
    "staff_login_throttles": "login backoff counters",
    "oauth_clients": "back-office clients",
    "oauth_tokens": "back-office tokens",
    "audit_log": "one hash chain: each entry covers the previous one, so appends are serial by design",
    "audit_checkpoints": "one signed head of the audit log a day",
    "job_leases": "one lease row per scheduler job",
    "settlement_runs": "one row per partner and cycle; closing aggregates all shards' postings into it",
    "statements": "signed documents, one per run",
    "statement_lines": "lines of the statements",
    "statement_events": "invoices and payments of statements",
    "statement_line_disputes": "disputes of statement lines",
    "adjustments": "money corrections under four eyes",
    "adjustment_applications": "which run an adjustment landed in",
    "reconciliation_reports": "partners' uploaded files and their matching",
    "grade_periods": "one grading computation a month",
    "partner_grades": "one grade per partner and period",
    "grade_overrides": "managers' overrides",
    "grade_alerts": "alerts for partner managers",
    "complaints": "customer service's cases, a few per thousand members; many name no member",
    "goodwill_requests": "customer service's goodwill credits and corrections, a few per thousand members, "
                         "decided under four eyes",
    "partner_credit_limit_changes": "finance's limit changes under four eyes",
    "partner_credit_alerts": "alerts when a partner nears or passes its credit limit",
    "partner_prepaid_blocks": "point blocks partners paid for ahead, a few per partner and year",
    "risk_decisions": "the review queue: decisions other than allow, a few per thousand operations",
    "risk_held_lots": "the lots of held purchases while their review is open",
    "verification_failures": "failed PINs and codes per till, for the card-testing limit",
    "risk_pattern_sightings": "quick-burn sightings per pair of tills",
    "reward_voucher_codes": "suppliers' voucher codes, each taken once by an order of a voucher",
    "webhook_endpoints": "partners' webhook URLs, a few per partner",
    "webhook_events": "the outbox of events for partners and member messages; written beside the change, read by "
                      "the delivery process across members",
    "webhook_deliveries": "one row per event and endpoint, leased by the delivery processes",
    "webhook_attempts": "the delivery log, one row per try",
}

_WIDEN_PRIMARY_KEY = (
    "make the primary key (member_id, id): ids stay unique from one sequence, but only a "
    "key that includes the distribution column can be enforced per shard"
)
_ADD_MEMBER_COLUMN = "add member_id (NOT NULL, filled from the parent row) so the table can live on its member's shard"
_COMPOSITE_REFERENCE = (
    "reference (member_id, {column}) to the target's (member_id, id), which needs that "
    "target's primary key widened first"
)
_ROUTE_BY_LOOKUP = (
    "keep this uniqueness in a lookup table distributed by {key} (the unique value -> member_id), "
    "written in the same transaction, and route requests through it; or make the value carry the member"
)


def _widened_primary_keys(*tables: str) -> tuple[Departure, ...]:
    return tuple(Departure(table, "unique_without_distribution_column", f"pk_{table}", _WIDEN_PRIMARY_KEY)
                 for table in tables)


def _composite_references(table: str, *references: tuple[str, str]) -> tuple[Departure, ...]:
    """Foreign keys by id alone to a co-located table: ``(column, referred table)`` pairs."""
    return tuple(
        Departure(table, "foreign_key_across_shards", f"fk_{table}_{column}_{referred}",
                  _COMPOSITE_REFERENCE.format(column=column))
        for column, referred in references
    )


DEPARTURES: tuple[Departure, ...] = (
    *_widened_primary_keys(
        "cards", "ledger_accounts", "journal_transactions", "journal_entries", "point_lots", "lot_consumptions",
        "redemption_holds", "redemption_codes", "purchases", "purchase_refunds", "redemption_refunds",
        "member_notifications", "member_transfers", "member_tier_history",
    ),
    # Tables keyed by member only through their parent row.
    Departure("journal_entries", "distribution_column_missing", "member_id", _ADD_MEMBER_COLUMN),
    Departure("purchase_refunds", "distribution_column_missing", "member_id", _ADD_MEMBER_COLUMN),
    Departure("redemption_refunds", "distribution_column_missing", "member_id", _ADD_MEMBER_COLUMN),
    # Nullable member keys.
    Departure("ledger_accounts", "distribution_column_nullable", "member_id",
              "split the table: member accounts (member_id NOT NULL) distributed by member; partner and hub "
              "accounts, which keep no balance and are never rewritten, a reference table"),
    Departure("journal_transactions", "distribution_column_nullable", "member_id",
              "make member_id NOT NULL: every posting already names its member (a transfer names the sender)"),
    # Uniqueness across all members: the natural keys requests arrive with.
    Departure("members", "unique_without_distribution_column", "uq_members_member_number",
              _ROUTE_BY_LOOKUP.format(key="member_number")),
    Departure("cards", "unique_without_distribution_column", "uq_cards_card_number",
              _ROUTE_BY_LOOKUP.format(key="card_number") + "; every till request starts from a card number"),
    Departure("ledger_accounts", "unique_without_distribution_column", "uq_ledger_accounts_code",
              "replace the account code's uniqueness by (member_id, kind) on member accounts"),
    Departure("point_lots", "unique_without_distribution_column", "uq_point_lots_earn_transaction_id",
              "make it (member_id, earn_transaction_id)"),
    Departure("member_notifications", "unique_without_distribution_column", "uq_member_notifications_kind_lot_id",
              "make it (member_id, kind, lot_id)"),
    Departure("redemption_codes", "unique_without_distribution_column", "uq_redemption_codes_code_hash",
              _ROUTE_BY_LOOKUP.format(key="code_hash") + "; a till redeems with the code alone"),
    Departure("purchases", "unique_without_distribution_column", "uq_purchases_partner_id_receipt_id",
              _ROUTE_BY_LOOKUP.format(key="(partner_id, receipt_id)")
              + "; a purchase refund arrives with the receipt id, not the card"),
    Departure("purchase_refunds", "unique_without_distribution_column", "uq_purchase_refunds_partner_id_refund_id",
              _ROUTE_BY_LOOKUP.format(key="(partner_id, refund_id)")),
    Departure("redemption_refunds", "unique_without_distribution_column",
              "uq_redemption_refunds_partner_id_refund_id", _ROUTE_BY_LOOKUP.format(key="(partner_id, refund_id)")),
    Departure("redemption_holds", "unique_without_distribution_column", "uq_redemption_holds_partner_id_reference",
              _ROUTE_BY_LOOKUP.format(key="(partner_id, reference)")
              + "; capture, void and refund arrive with the partner's reference, not the card"),
    # References by id alone between co-located tables.
    *_composite_references("journal_transactions", ("hold_id", "redemption_holds"),
                           ("reverses_transaction_id", "journal_transactions")),
    *_composite_references("journal_entries", ("transaction_id", "journal_transactions")),
    *_composite_references("point_lots", ("earn_transaction_id", "journal_transactions")),
    *_composite_references("lot_consumptions", ("lot_id", "point_lots"), ("transaction_id", "journal_transactions"),
                           ("hold_id", "redemption_holds")),
    *_composite_references("redemption_holds", ("card_id", "cards")),
    *_composite_references("purchases", ("card_id", "cards"), ("earn_transaction_id", "journal_transactions"),
                           ("bonus_transaction_id", "journal_transactions")),
    *_composite_references("purchase_refunds", ("purchase_id", "purchases")),
    *_composite_references("redemption_refunds", ("hold_id", "redemption_holds"),
                           ("transaction_id", "journal_transactions")),
    *_composite_references("member_notifications", ("lot_id", "point_lots")),
    # An entry's account is a member account (distributed) or a partner or hub account
    # (reference after the split above); one column cannot reference both.
    Departure("journal_entries", "foreign_key_across_shards", "fk_journal_entries_account_id_ledger_accounts",
              "after splitting ledger_accounts, give an entry either a member account (member_id, account_id) "
              "or a house account (reference), a CHECK requiring exactly one"),
    Departure("point_lots", "foreign_key_across_shards", "fk_point_lots_funding_account_id_ledger_accounts",
              "fund lots from house accounts only (reference): a transferred lot is funded today by the "
              "sender's available account, which lives on the sender's shard"),
    # Transfers: two members, two shards.
    Departure("journal_transactions", "foreign_key_across_shards",
              "fk_journal_transactions_transfer_id_member_transfers",
              "post a transfer as two single-member transactions through a hub transfer-clearing house account "
              "(sender: available -p, clearing +p; receiver: clearing -p, available +p), committed together; "
              "each names the transfer by (from_member_id, transfer_id) on the sender's side only"),
    Departure("member_transfers", "foreign_key_across_shards", "fk_member_transfers_to_member_id_members",
              "keep to_member_id as a plain id checked by the service, and write the receiver's side as its "
              "own row on the receiver's shard"),
    Departure("point_lots", "foreign_key_across_shards", "fk_point_lots_origin_lot_id_point_lots",
              "a transferred lot's origin is the sender's lot on another shard: keep (origin_member_id, "
              "origin_lot_id) as plain ids, checked by alliance audit instead of a foreign key"),
    # Complaints stay on the coordinator; their links to member data become plain ids.
    Departure("complaints", "member_keyed_table_not_distributed", "complaints",
              "complaints stay on the coordinator (few, and many name no member): accepted, with the foreign "
              "keys below dropped"),
    Departure("complaints", "foreign_key_across_shards", "fk_complaints_member_id_members",
              "keep member_id as a plain id checked by the complaints service"),
    Departure("complaints", "foreign_key_across_shards", "fk_complaints_purchase_id_purchases",
              "keep purchase_id as a plain id checked by the complaints service"),
    Departure("complaints", "foreign_key_across_shards", "fk_complaints_hold_id_redemption_holds",
              "keep hold_id as a plain id checked by the complaints service"),
    # Goodwill requests stay on the coordinator beside the complaints they answer.
    Departure("goodwill_requests", "member_keyed_table_not_distributed", "goodwill_requests",
              "goodwill requests stay on the coordinator (few, decided by people): accepted, with the foreign "
              "key below dropped"),
    Departure("goodwill_requests", "foreign_key_across_shards", "fk_goodwill_requests_member_id_members",
              "keep member_id as a plain id checked by the goodwill service"),
    # Behaviour points: events by member, their natural keys across members, referrals across two members.
    *_widened_primary_keys("behaviour_events", "behaviour_awards"),
    Departure("behaviour_events", "unique_without_distribution_column", "uq_behaviour_events_partner_id_event_id",
              _ROUTE_BY_LOOKUP.format(key="(partner_id, event_id)") + "; a replayed event may name another card"),
    Departure("behaviour_events", "unique_without_distribution_column", "uq_behaviour_events_referred_member_id",
              _ROUTE_BY_LOOKUP.format(key="referred_member_id") + "; a member is referred once, by whoever"),
    Departure("behaviour_events", "foreign_key_across_shards", "fk_behaviour_events_referred_member_id_members",
              "keep referred_member_id as a plain id checked by the behaviour points service"),
    Departure("behaviour_awards", "foreign_key_across_shards", "fk_behaviour_awards_event_id_behaviour_events",
              "keep event_id as a plain id: a referred member's award belongs to the referrer's event, on another "
              "shard"),
    *_composite_references("behaviour_awards", ("transaction_id", "journal_transactions")),
    # Birthday bonuses: keyed by member and year, like the member's other rows.
    *_widened_primary_keys("birthday_awards"),
    *_composite_references("birthday_awards", ("transaction_id", "journal_transactions")),
    # The risk review queue stays on the coordinator: a few decisions per thousand operations, read across
    # members, tills and partners at once.
    Departure("risk_decisions", "member_keyed_table_not_distributed", "risk_decisions",
              "risk decisions stay on the coordinator (few, grouped across members for review): accepted, with the "
              "foreign keys below replaced by plain ids"),
    Departure("risk_decisions", "foreign_key_across_shards", "fk_risk_decisions_member_id_members",
              "keep member_id as a plain id checked by the risk service"),
    Departure("risk_decisions", "foreign_key_across_shards", "fk_risk_decisions_card_id_cards",
              "keep card_id as a plain id checked by the risk service"),
    Departure("risk_held_lots", "foreign_key_across_shards", "fk_risk_held_lots_lot_id_point_lots",
              "distribute held lots by member with the lot (add member_id), or keep lot_id as a plain id that the "
              "activation job joins on its member's shard"),
    Departure("risk_pattern_sightings", "foreign_key_across_shards", "fk_risk_pattern_sightings_card_id_cards",
              "keep card_id as a plain id: a sighting counts distinct cards per pair of tills"),
    # Coupons: by member, their code unique across members (a till presents the code with the card).
    *_widened_primary_keys("coupons", "coupon_uses"),
    Departure("coupons", "unique_without_distribution_column", "uq_coupons_code",
              _ROUTE_BY_LOOKUP.format(key="code") + "; or look the coupon up by the card's member and the code"),
    *_composite_references("coupon_uses", ("coupon_id", "coupons")),
    # Reward orders: by member with their hold and postings; the channel's reference is unique across members.
    *_widened_primary_keys("reward_orders"),
    Departure("reward_orders", "unique_without_distribution_column", "uq_reward_orders_channel_reference",
              _ROUTE_BY_LOOKUP.format(key="(channel, reference)") + "; a supplier confirms an order by its reference"),
    *(Departure("reward_orders", "unique_without_distribution_column", f"uq_reward_orders_{column}",
                f"make it unique on (member_id, {column}): the {column} is already unique from its sequence")
      for column in ("hold_id", "capture_transaction_id", "return_transaction_id")),
    *_composite_references("reward_orders", ("hold_id", "redemption_holds"),
                           ("capture_transaction_id", "journal_transactions"),
                           ("return_transaction_id", "journal_transactions")),
    Departure("reward_voucher_codes", "foreign_key_across_shards", "fk_reward_voucher_codes_order_id_reward_orders",
              "keep order_id as a plain id checked by the rewards service: a code is taken by the order's transaction"),
)
