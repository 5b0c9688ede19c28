"""What customer service reads about a member in the console: search results, the member page's tables.

Every figure is counted or summed by SQL; nothing here changes anything (the changes are
``member_admin``'s and ``complaints``'). Card numbers leave this module masked, except
where a page must show the number itself once (a replacement card).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from alliance.domain.errors import ValidationFailed
from alliance.domain.pii import KeyRing
from alliance.models import (
    Campaign,
    CampaignAward,
    CampaignFunder,
    Card,
    Complaint,
    JournalEntry,
    JournalTransaction,
    LedgerAccount,
    Member,
    MemberProfile,
    Partner,
    PointLot,
    Purchase,
    RedemptionHold,
)
from alliance.models.base import integer_sum
from alliance.services import birthday_bonus, goodwill, member_admin
from alliance.services.accounts import member_balances
from alliance.services.console_reports import Page, Sort, paged
from alliance.services.member_verification import MAX_PIN_FAILURES

SEARCH_KINDS = ("member_number", "card_number", "phone", "email")
SEARCH_KIND_WORDS = {"member_number": "member number", "card_number": "card number", "phone": "phone number",
                     "email": "e-mail address"}
MAX_SEARCH_RESULTS = 50
RECENT_PURCHASES = 50
HISTORY_SORTS = ("date", "points")
LOT_SORTS = ("expires", "points_left", "earned")
TRANSACTION_KIND_WORDS = {
    "earn": "points earned", "activation": "pending points became available", "clawback": "points taken back (refund)",
    "hold": "points held for a redemption", "capture": "redemption completed", "release": "held points released",
    "redemption_refund": "redemption refunded", "expiry": "points expired", "transfer": "points transferred",
    "campaign_share": "campaign points (joint share)", "behaviour_award": "points for an activity",
    "goodwill_credit": "goodwill credit", "correction": "correction",
}
MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
               "November", "December")


def masked(card_number: str) -> str:
    """A card number as staff see it: only its last four digits."""
    return "•" * 12 + card_number[-4:]


def birthday_words(birth_date: str | None) -> str | None:
    """A birth date (ISO 8601 text) as customer service reads the birthday: day and month, no year ("12 March")."""
    if not birth_date:
        return None
    day = date.fromisoformat(birth_date)
    return f"{day.day} {MONTH_NAMES[day.month - 1]}"


@dataclass(frozen=True, slots=True)
class MemberMatch:
    """One member found by a search, as the results list shows them."""

    member_number: str
    status: str
    tier: str
    card: str
    available_points: int


@dataclass(frozen=True, slots=True)
class CardView:
    """One of a member's cards, masked, with its place among the member's cards (1 is the first issued)."""

    position: int
    masked_number: str
    status: str
    issued_at: datetime
    blocked_at: datetime | None
    locked: bool


@dataclass(frozen=True, slots=True)
class MemberOverview:
    """The top of the member page: who, which cards, how many points where."""

    member_id: int
    member_number: str
    status: str
    tier: str
    enrolled_at: datetime
    profile: dict[str, str | None]
    profile_erased_at: datetime | None
    cards: list[CardView]
    balances: dict[str, int]

    @property
    def birthday(self) -> str | None:
        """The member's birthday without the year ("12 March"), or None when no birth date is held."""
        return birthday_words(self.profile.get("birth_date"))


@dataclass(frozen=True, slots=True)
class LotView:
    """A lot of points still held by the member: where earned, how many left, until when."""

    partner: str
    state: str
    points_earned: int
    points_left: int
    earned_at: datetime
    pending_until: datetime | None
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class HoldView:
    """An open redemption hold."""

    reference: str | None
    partner: str
    points_held: int
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """One ledger transaction as it moved the member's points."""

    transaction_id: int
    kind: str
    posted_at: datetime
    partner: str | None
    points: int
    available: int
    pending: int
    held: int
    # What the posting says about itself: ``goodwill:<request id>``, a campaign's or a bonus's name.
    memo: str | None = None
    # The campaign awards a purchase's earn included, in words (``campaign_lines``).
    campaigns: tuple[str, ...] = ()

    @property
    def kind_words(self) -> str:
        """What happened, in words (a goodwill credit or correction named as such, with its request;
        a birthday bonus with its year)."""
        if self.memo and self.memo.startswith(goodwill.MEMO_PREFIX):
            request = self.memo[len(goodwill.MEMO_PREFIX):]
            # Goodwill credits were posted as earns before they had a kind of their own.
            return (f"goodwill credit (request #{request})" if self.kind in ("earn", "goodwill_credit")
                    else f"correction (goodwill request #{request})")
        if self.memo and self.memo.startswith(birthday_bonus.MEMO_PREFIX) and self.kind == "earn":
            return f"birthday bonus {self.memo[len(birthday_bonus.MEMO_PREFIX):]}"
        words = TRANSACTION_KIND_WORDS.get(self.kind, self.kind.replace("_", " "))
        return f"{words} ({self.memo})" if self.memo else words

    @property
    def movements(self) -> list[tuple[str, int]]:
        """Which of the member's balances moved and by how much (only those that did)."""
        return [(name, value) for name, value in (("available", self.available), ("pending", self.pending),
                                                  ("held", self.held)) if value]


@dataclass(frozen=True, slots=True)
class PurchaseChoice:
    """A purchase of the member, for choosing which one a complaint is about."""

    purchase_id: int
    receipt_id: str
    partner: str
    purchased_at: datetime
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class MemberComplaint:
    """A complaint the member is named in."""

    complaint_id: int
    partner: str
    category: str
    status: str
    opened_at: datetime
    receipt_id: str | None
    redemption_reference: str | None


def search(session: Session, *, key_ring: KeyRing, kind: str, value: str) -> list[MemberMatch]:
    """Members matching one detail: a member number, a card number (any of their cards), a phone or an e-mail."""
    value = value.strip()
    if kind not in SEARCH_KINDS:
        raise ValidationFailed(f"search by one of {', '.join(SEARCH_KIND_WORDS.values())}",
                               fields={"kind": ["unknown"]})
    if kind == "member_number":
        members = list(session.scalars(select(Member).where(Member.member_number == value.lower())))
    elif kind == "card_number":
        digits = "".join(value.split()).replace("-", "")
        if not digits.isdigit():
            raise ValidationFailed("a card number is digits only (spaces and dashes are ignored)",
                                   fields={"card_number": ["not digits"]})
        members = list(session.scalars(select(Member).join(Card, Card.member_id == Member.id)
                                       .where(Card.card_number == digits)))
    else:
        members = member_admin.find_by_contact(session, key_ring=key_ring, phone=value if kind == "phone" else None,
                                               email=value if kind == "email" else None)
    return [_match(session, member) for member in members[:MAX_SEARCH_RESULTS]]


def _match(session: Session, member: Member) -> MemberMatch:
    cards = member_admin.cards_of(session, member.id)
    active = [number for number, status in cards if status == "active"]
    shown = active[-1] if active else (cards[-1][0] if cards else "")
    return MemberMatch(member.member_number, member.status, member.tier, masked(shown) if shown else "",
                       member_balances(session, member.id).get("available", 0))


def overview(session: Session, *, key_ring: KeyRing, member_number: str) -> MemberOverview:
    """The member with profile, cards (masked) and balances."""
    member = member_admin.member_by_number(session, member_number)
    cards = session.execute(select(Card.card_number, Card.status, Card.issued_at, Card.blocked_at,
                                   Card.failed_pin_attempts).where(Card.member_id == member.id).order_by(Card.id))
    erased_at = session.scalar(select(MemberProfile.erased_at).where(MemberProfile.member_id == member.id))
    return MemberOverview(
        member_id=member.id, member_number=member.member_number, status=member.status, tier=member.tier,
        enrolled_at=member.enrolled_at, profile=member_admin.read_profile(session, key_ring=key_ring,
                                                                          member_id=member.id),
        profile_erased_at=erased_at,
        cards=[CardView(position, masked(number), status, issued_at, blocked_at, failures >= MAX_PIN_FAILURES)
               for position, (number, status, issued_at, blocked_at, failures) in enumerate(cards, start=1)],
        balances=member_balances(session, member.id),
    )


def lots(session: Session, *, member_id: int, sort: Sort) -> list[LotView]:
    """The member's lots that still hold points, in ``sort``'s order (expires, points_left or earned)."""
    columns: dict[str, Any] = {"expires": PointLot.expires_at, "points_left": PointLot.points_remaining,
                               "earned": PointLot.earned_at}
    rows = session.execute(
        select(func.coalesce(Partner.code, "the hub"), PointLot.state, PointLot.points_earned,
               PointLot.points_remaining, PointLot.earned_at, PointLot.activates_at, PointLot.expires_at)
        .outerjoin(Partner, Partner.id == PointLot.partner_id)
        .where(PointLot.member_id == member_id, PointLot.points_remaining > 0)
        .order_by(*sort.order(columns, PointLot.id)))
    return [LotView(partner, state, earned, left, earned_at, activates_at if state == "pending" else None, expires_at)
            for partner, state, earned, left, earned_at, activates_at, expires_at in rows]


def open_holds(session: Session, *, member_id: int) -> list[HoldView]:
    """The member's redemption holds still open, oldest first."""
    rows = session.execute(
        select(RedemptionHold.reference, Partner.code, RedemptionHold.points_held, RedemptionHold.created_at,
               RedemptionHold.expires_at).join(Partner, Partner.id == RedemptionHold.partner_id)
        .where(RedemptionHold.member_id == member_id, RedemptionHold.status == "open")
        .order_by(RedemptionHold.created_at, RedemptionHold.id))
    return [HoldView(*row) for row in rows]


def history(session: Session, *, member_id: int, sort: Sort, page: int, page_size: int) -> Page[HistoryItem]:
    """The member's ledger transactions a page at a time, with the points each moved in each of their accounts."""
    def moved(kind: str | None) -> Any:
        amount = JournalEntry.amount_points if kind is None else case(
            (LedgerAccount.kind == kind, JournalEntry.amount_points), else_=0)
        return integer_sum(amount)

    net = moved(None)
    query = (
        select(JournalTransaction.id, JournalTransaction.kind, JournalTransaction.posted_at, Partner.code, net,
               moved("member_available"), moved("member_pending"), moved("member_held"), JournalTransaction.memo)
        .join(JournalEntry, JournalEntry.transaction_id == JournalTransaction.id)
        .join(LedgerAccount, LedgerAccount.id == JournalEntry.account_id)
        .outerjoin(Partner, Partner.id == JournalTransaction.partner_id)
        .where(LedgerAccount.member_id == member_id)
        .group_by(JournalTransaction.id, JournalTransaction.kind, JournalTransaction.posted_at, Partner.code,
                  JournalTransaction.memo)
    )
    columns: dict[str, Any] = {"date": JournalTransaction.posted_at, "points": net}
    tie = JournalTransaction.id.desc() if sort.descending else JournalTransaction.id.asc()
    rows, total = paged(session, query, page, page_size, *sort.order(columns, tie))
    items = [HistoryItem(*row) for row in rows]
    lines = campaign_lines(session, member_id=member_id, transaction_ids=[item.transaction_id for item in items])
    return Page([replace(item, campaigns=tuple(lines.get(item.transaction_id, ()))) for item in items], total, page,
                page_size)


def campaign_lines(session: Session, *, member_id: int, transaction_ids: list[int]) -> dict[int, list[str]]:
    """The campaign awards each of these history rows included, in words, by transaction id (one query).

    A campaign paid by the purchase's partner or by the hub is carried inside that earn
    (``campaign_awards.transaction_id``): "includes 50 points from campaign 'Summer double'
    (paid by aurora)" or "(paid by the hub)". A joint campaign's award is split into one
    posting per funder (each its own row, a joint share); the whole award is named once, on
    the purchase's earn, with each paying funder's share of the campaign: "(paid by aurora 60%, fuel 40%)".
    """
    if not transaction_ids:
        return {}
    rows = session.execute(
        select(CampaignAward.purchase_id, CampaignAward.campaign_id, Campaign.name, Campaign.funded_by,
               CampaignAward.points, Partner.code, CampaignFunder.share_bp, CampaignAward.transaction_id,
               Purchase.earn_transaction_id, Purchase.bonus_transaction_id)
        .join(Campaign, Campaign.id == CampaignAward.campaign_id)
        .join(Purchase, Purchase.id == CampaignAward.purchase_id)
        .outerjoin(Partner, Partner.id == CampaignAward.funder_partner_id)
        .outerjoin(CampaignFunder, (CampaignFunder.campaign_id == CampaignAward.campaign_id)
                   & (CampaignFunder.partner_id == CampaignAward.funder_partner_id))
        .where(CampaignAward.member_id == member_id,
               CampaignAward.transaction_id.in_(transaction_ids) | Purchase.earn_transaction_id.in_(transaction_ids))
        .order_by(CampaignAward.purchase_id, CampaignAward.campaign_id, CampaignAward.position)).all()
    shown = set(transaction_ids)
    joint: dict[tuple[int, int], list[Any]] = defaultdict(list)
    lines: dict[int, list[str]] = defaultdict(list)
    for row in rows:
        if row.funded_by == "joint":
            joint[(row.purchase_id, row.campaign_id)].append(row)
        elif row.transaction_id in shown:
            payer = row.code if row.code else "the hub"
            lines[row.transaction_id].append(_campaign_line(row.points, row.name, payer))
    for shares in joint.values():
        first = shares[0]
        anchor = (first.earn_transaction_id or first.bonus_transaction_id
                  or min((share.transaction_id for share in shares if share.transaction_id is not None), default=None))
        if anchor not in shown:
            continue
        payers = ", ".join(f"{share.code} {_percent(share.share_bp)}" for share in shares)
        lines[anchor].append(_campaign_line(sum(share.points for share in shares), first.name, payers))
    return lines


def _campaign_line(points: int, campaign: str, payer: str) -> str:
    return f"includes {points:,} point{'' if points == 1 else 's'} from campaign '{campaign}' (paid by {payer})"


def _percent(share_bp: int) -> str:
    """A share in basis points as a percentage: 6000 is "60%", 3333 is "33.33%"."""
    value = Decimal(share_bp) / 100
    return f"{value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()}%"


def recent_purchases(session: Session, *, member_id: int, limit: int = RECENT_PURCHASES) -> list[PurchaseChoice]:
    """The member's latest purchases, newest first, for the complaint form."""
    rows = session.execute(
        select(Purchase.id, Purchase.receipt_id, Partner.code, Purchase.purchased_at, Purchase.amount_minor,
               Purchase.currency).join(Partner, Partner.id == Purchase.partner_id)
        .where(Purchase.member_id == member_id)
        .order_by(Purchase.purchased_at.desc(), Purchase.id.desc()).limit(limit))
    return [PurchaseChoice(*row) for row in rows]


def complaints_of(session: Session, *, member_id: int) -> list[MemberComplaint]:
    """The complaints naming the member, newest first, with the purchase or redemption each concerns."""
    rows = session.execute(
        select(Complaint.id, Partner.code, Complaint.category, Complaint.status, Complaint.opened_at,
               Purchase.receipt_id, RedemptionHold.reference)
        .join(Partner, Partner.id == Complaint.partner_id)
        .outerjoin(Purchase, Purchase.id == Complaint.purchase_id)
        .outerjoin(RedemptionHold, RedemptionHold.id == Complaint.hold_id)
        .where(Complaint.member_id == member_id)
        .order_by(Complaint.opened_at.desc(), Complaint.id.desc()))
    return [MemberComplaint(*row) for row in rows]


