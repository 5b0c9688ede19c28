"""Five months of the demo alliance's life, played forward through the real services.

Members enrol over time; they buy at the three partners and pay with points; tills
refund a few purchases and redemptions; the settlement cycles close as the closing job
would close them; finance invoices, collects (one partner pays late, then stops) and
reconciles two statements against the partners' own files; an adjustment is requested
and approved by two people and another waits for its second pair of eyes; a statement
line is disputed; complaints are filed about purchases and worked through; each ended
month is graded, and a partner manager acknowledges an alert. The operator runs three
campaigns inside the history (Café Aurora's double points weekend; a joint, tier-targeted
bonus Café Aurora and FuelStop fund by shares, whose budget runs out before its end; a
Book Nook campaign stopped early with a reason), and proposes tier policy version 2 (lower
thresholds), which the nightly tiers job applies a month later. A partner manager proposes a rewards
catalog (a Café Aurora mug, a Book Nook voucher with its pool of codes, bill credit at the operator,
Nova Mobile) and a second person lists it; members order with points earned at the other partners, and
the suppliers fulfil, fail or take back their orders (the operator through its weekly file of bill credit
applied); FuelStop and the hub issue coupons that members present with purchases at tills.

Every change goes through the service that makes it on a live hub, dated when it
happened, in the order it happened (one timeline), so the audit log reads forward and
``alliance audit`` finds books that add up. The same ``seed`` gives the same history.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from functools import partial
from itertools import count
from typing import Callable
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from alliance.domain.earning import TierLevel
from alliance.domain.errors import AllianceError
from alliance.domain.grading import GradingConfig, Period
from alliance.domain.pii import KeyRing
from alliance.domain.risk import RiskDeclined
from alliance.models import GradeAlert, Purchase, SettlementStatement
from alliance.services import (
    accounts,
    behaviour_points,
    campaigns,
    complaints,
    coupons,
    goodwill,
    grading,
    jobs,
    ledger,
    member_admin,
    member_verification,
    purchases,
    redemptions,
    rewards,
    risk,
    tier_policy,
)
from alliance.services.member_verification import active_card_holder, set_pin
from alliance.services.members import Enrolment, enrol_member
from alliance.storage.unit_of_work import keep_record
from settlement.api import (
    DEFAULT_CLOSING_GRACE,
    StatementSigner,
    close_cycle,
    decide_adjustment,
    due_by_partner,
    mark_invoiced,
    open_dispute,
    reconcile_statement,
    record_payment,
    request_adjustment,
    statement_by_id,
)

# How far back the demo's history starts, and how many members join over it.
HISTORY_DAYS = 150
MEMBER_COUNT = 48
# The first members join on the first day (the first one's card is the one the guides use).
FOUNDING_MEMBERS = 5
DEMO_PIN = "1234"
# Purchases per day at each partner (a range), what they cost in minor units, and how
# often one is later refunded.
SHOPPING = {
    "cafe-aurora": ((1, 3), (350, 2_400)),
    "book-nook": ((0, 2), (1_200, 6_500)),
    "fuel-stop": ((1, 3), (2_500, 9_000)),
}
REFUND_CHANCE = 0.012
# Complaints per purchase, and the Book Nook's bad month (the third), when a new till
# lost points and its complaint rate (and a grade alert) jumped.
COMPLAINT_CHANCE = 0.015
BAD_MONTH_COMPLAINT_CHANCE = 0.30
# FuelStop pays its statements on time for the first months, then late, then a part, then nothing.
FUEL_LATE_FROM_DAY = 70
FUEL_UNPAID_FROM_DAY = 110
# Book Nook purchases of the last two weeks are still inside their 14-day return window.
RECENT_BOOK_NOOK_DAYS = (12, 9, 6, 4, 1)
SERVICE_DESK = "console:demo-service"
MANAGER = "console:demo-manager"
# The points a resolved complaint about missing points is made good with.
GOODWILL_CREDIT_POINTS = 150
FINANCE = "console:demo-finance"
ADMIN = "console:demo-admin"
TILL_TTL_S = 900
# The demo partners' currency, which the tiers job reads spend in.
DEMO_CURRENCY = "EUR"
# When the operator adds each campaign of the history (days from its start), and when
# Book Nook's is stopped; when tier policy version 2 is proposed, and how long after it applies.
DOUBLE_POINTS_FROM_DAY = 20
JOINT_CAMPAIGN_DAY = 50
JOINT_CAMPAIGN_DAYS = 30
JOINT_BONUS_POINTS = 40
JOINT_BUDGET_POINTS = 800
READING_CAMPAIGN_DAY = 92
READING_STOPPED_DAY = 108
TIER_VERSION_DAY = 90
TIER_VERSION_LEAD = timedelta(days=30)
# Version 2 of the tier policy: lower spend thresholds than the built-in version 1.
TIERS_V2 = (TierLevel("standard", 0, Decimal("1")), TierLevel("silver", 300, Decimal("1.25")),
            TierLevel("gold", 900, Decimal("1.5")), TierLevel("diamond", 2_000, Decimal("2")))
# The operator partner (a mobile network), which supplies bill credit and issues no points itself.
OPERATOR = "nova-mobile"
# The rewards catalog: proposed by a partner manager on this day, approved by a second person the next; what
# each reward costs in points and what the hub reimburses its supplier per item (minor units).
CATALOG_DAY = 28
MUG, VOUCHER, BILL_CREDIT = "aurora-mug", "book-nook-voucher-3", "nova-bill-credit"
CATALOG = (
    (MUG, "cafe-aurora", "goods", "Café Aurora travel mug", 250, 200),
    (VOUCHER, "book-nook", "voucher", "The Book Nook 3 EUR voucher", 300, 240),
    (BILL_CREDIT, OPERATOR, "bill_credit", "0.80 EUR off your Nova Mobile bill", 100, 80),
)
MUG_STOCK, MUG_RESTOCK, MUG_RESTOCK_DAY = 12, 6, 95
VOUCHER_POOL = 20
# How many orders of each reward members place over the history, and from which day.
ORDERS_FROM_DAY = 32
MUG_ORDERS, VOUCHER_ORDERS, BILL_CREDIT_ORDERS = 9, 6, 8
# An order is placed by one of this many members with the most points to spare.
ORDERING_MEMBERS = 6
# Which mug orders (counted from 1, in the order they were placed) end otherwise than fulfilled, and which bill
# credit order the operator's file fails.
MUG_FAILED, MUG_RETURNED, MUG_EXPIRED = 2, 4, 6
BILL_CREDIT_FAILED = 3
# Every week the operator answers with a file of the bill credit it applied (it has longer than a week to).
OPERATOR_FILE_EVERY = 7
BILL_CREDIT_FULFILMENT_DAYS = 10
OPERATOR_FILE = "cli:demo-manager"
# Coupon series: FuelStop's double points on a fill-up for members of a month or more, and the hub's
# thank-you bonus for gold members and up at any partner, issued once tier policy version 2 has made some gold
# (it runs on past the history's end).
FUEL_COUPON_DAY = 58
FUEL_COUPON_DAYS = 40
HUB_COUPON_DAY = 124
HUB_COUPON_DAYS = 28
HUB_COUPON_BONUS = 100
COUPON_USE_CHANCE = 0.5


@dataclass
class DemoParty:
    """A demo partner as the history needs it."""

    partner_id: int
    code: str
    terminal_id: int
    time_zone: str


@dataclass
class _Member:
    enrolment: Enrolment
    # Points the member could spend for sure (immediately available ones, less redemptions and refunds).
    spendable: int = 0


@dataclass
class _HeldCoupon:
    """A coupon a member holds, as the history needs it to present it at a till."""

    code: str
    # The partners where it may be used (None: every partner), and when.
    valid_at: frozenset[str] | None
    valid_from: datetime
    valid_until: datetime
    used: bool = False


@dataclass
class Seeded:
    """How many of each kind the history made, for the printed summary and the tests."""

    counts: Counter[str] = field(default_factory=Counter)
    members: list[Enrolment] = field(default_factory=list)


Action = Callable[[datetime], object]


class _Timeline:
    """Actions at moments, run in time order (ties in the order they were planned), none after ``end``."""

    def __init__(self, end: datetime) -> None:
        self.end = end
        self._queue: list[tuple[datetime, int, Action]] = []
        self._order = count()

    def at(self, moment: datetime, action: Action) -> None:
        if moment <= self.end:
            heapq.heappush(self._queue, (moment, next(self._order), action))

    def run(self) -> None:
        while self._queue:
            moment, _, action = heapq.heappop(self._queue)
            action(moment)


class DemoHistory:
    """The timeline of the demo alliance from ``start`` to ``end``; ``play`` writes it."""

    def __init__(self, session: Session, *, parties: list[DemoParty], start: datetime, end: datetime,
                 expiry_months: int, key_ring: KeyRing | None, signer: StatementSigner | None,
                 grading_config: GradingConfig | None, time_zone: str, seed: int = 23,
                 goodwill_policy: goodwill.GoodwillPolicy | None = None) -> None:
        self.session = session
        self.parties = {party.code: party for party in parties}
        self.start, self.end = start, end
        self.expiry_months = expiry_months
        self.key_ring = key_ring
        self.signer = signer
        self.grading_config = grading_config
        self.goodwill_policy = goodwill_policy
        self.time_zone = time_zone
        self.random = random.Random(seed)
        self.timeline = _Timeline(end)
        self.members: list[_Member] = []
        self.seeded = Seeded()
        self.receipts = count(1)
        self.references = count(1)
        self.first_owed_statement_left = False
        self.statements_closed: list[tuple[str, int]] = []
        self.recent_purchases: list[tuple[str, _Member, str]] = []
        self.tiers_job = next(job for job in jobs.standard_jobs(DEMO_CURRENCY) if job.name == "recompute-tiers")
        self.history_campaigns: list[int] = []
        self.reading_campaign: int | None = None
        # Rewards and coupons draw from their own stream, so the rest of the history plays as it would without them.
        self.extra = random.Random(seed + 1)
        self.order_numbers = count(1)
        self.mug_orders = 0
        self.mugs_held: Counter[int] = Counter()
        self.bill_credit_orders = 0
        self.failing_bill_credit: str | None = None
        self.order_points: dict[str, tuple[_Member, int]] = {}
        self.wallets: dict[str, list[_HeldCoupon]] = {}

    # -- the plan ------------------------------------------------------------------

    def play(self) -> Seeded:
        """Plan every day of the history, run it in time order, and say what it made."""
        days = (self.end.date() - self.start.date()).days
        joining = sorted(self.random.sample(range(1, 110), MEMBER_COUNT - FOUNDING_MEMBERS))
        for _ in range(FOUNDING_MEMBERS):
            self.timeline.at(self.start + timedelta(minutes=5), self._enrol)
        for day in joining:
            self.timeline.at(self._day(day) + timedelta(hours=self.random.randint(8, 19)), self._enrol)
        for day in range(days):
            self.timeline.at(self._day(day) + timedelta(hours=7), self._plan_day)
            self.timeline.at(self._day(day + 1) - timedelta(minutes=5), self._nightly_jobs)
            if self.signer is not None:
                self.timeline.at(self._day(day + 1) + timedelta(hours=2), self._close_due)
            if self.grading_config is not None and self._day(day + 1).day == 1 and day > 0:
                self.timeline.at(self._day(day + 1) + timedelta(hours=4), self._grade_last_month)
        if self.signer is not None:
            self._plan_finance()
        self._plan_behaviour()
        self._plan_campaigns()
        if self.key_ring is not None and OPERATOR in self.parties:
            self._plan_rewards()
        self._plan_coupons()
        self.timeline.at(self._day(TIER_VERSION_DAY) + timedelta(hours=10), self._propose_tier_version)
        self.timeline.at(self.end - timedelta(minutes=5), self._count_campaigns)
        self.timeline.at(self.end - timedelta(minutes=5), self._count_reward_orders)
        self.timeline.at(self.end - timedelta(minutes=4), self._plan_ahead)
        self.timeline.at(self.end - timedelta(minutes=3), self._nightly_jobs)
        if self.signer is not None:
            self.timeline.at(self.end - timedelta(minutes=2), self._close_due)
        self.timeline.at(self._day(self._days() - 2) + timedelta(hours=21), self._latest_complaints)
        self.timeline.at(self._day(self._days() - 3) + timedelta(hours=22), self._scripted_till)
        self.timeline.at(self._day(self._days() - 2) + timedelta(hours=22, minutes=30), self._card_testing)
        self.timeline.at(self.end - timedelta(minutes=1), self._leave_a_hold_open)
        self.timeline.run()
        return self.seeded

    def _day(self, day: int) -> datetime:
        return datetime.combine(self.start.date() + timedelta(days=day), time(0), tzinfo=timezone.utc)

    def _day_number(self, moment: datetime) -> int:
        return (moment.date() - self.start.date()).days

    def _last_day(self, moment: datetime) -> bool:
        return moment.date() >= self.end.date()

    # -- members -------------------------------------------------------------------

    def _enrol(self, moment: datetime) -> None:
        number = len(self.members) + 1
        if self.key_ring is not None:
            enrolment = member_admin.enrol_with_profile(self.session, key_ring=self.key_ring,
                                                        profile=demo_profile(number), now=moment, actor=SERVICE_DESK)
        else:
            enrolment = enrol_member(self.session, now=moment)
        set_pin(self.session, card_number=enrolment.card_number, pin=DEMO_PIN)
        self.members.append(_Member(enrolment))
        self.seeded.members.append(enrolment)
        self.seeded.counts["members"] += 1

    # -- a day's shopping ----------------------------------------------------------

    def _plan_day(self, moment: datetime) -> None:
        """Plan the day's purchases and redemptions at random times between 8:00 and 20:00 UTC."""
        if self._last_day(moment) or not self.members:
            return
        day = self._day_number(moment)
        for code, ((fewest, most), _) in SHOPPING.items():
            purchases_today = self.random.randint(fewest, most)
            if code == "book-nook" and day >= self._days() - 14:
                # The last two weeks hold exactly the recent Book Nook purchases, still returnable.
                purchases_today = int(self._days() - day in RECENT_BOOK_NOOK_DAYS)
            for _ in range(purchases_today):
                self.timeline.at(self._daytime(moment), partial(self._purchase, code))
            if self.random.random() < 0.45:
                self.timeline.at(self._daytime(moment), partial(self._redeem, code))

    def _days(self) -> int:
        return (self.end.date() - self.start.date()).days

    def _daytime(self, moment: datetime) -> datetime:
        return moment.replace(hour=8) + timedelta(seconds=self.random.randint(0, 12 * 3600 - 1))

    def _purchase(self, code: str, moment: datetime) -> None:
        party = self.parties[code]
        member = self.random.choice(self.members)
        low, high = SHOPPING[code][1]
        amount = self.random.randint(low, high) // 10 * 10
        receipt = f"{code[:4].upper()}-{next(self.receipts):05d}"
        coupon = self._coupon_to_present(member, code, moment)
        reported = purchases.report_purchase(self.session, partner_id=party.partner_id, now=moment,
                                             expiry_months=self.expiry_months, report=purchases.PurchaseReport(
                                                 receipt_id=receipt, card_number=member.enrolment.card_number,
                                                 amount_minor=amount, currency="EUR", purchased_at=moment,
                                                 terminal_id=party.terminal_id,
                                                 coupon_code=coupon.code if coupon is not None else None))
        self.seeded.counts["purchases"] += 1
        if coupon is not None:
            coupon.used = True
            self.seeded.counts["coupons used at tills"] += 1
            self.seeded.counts["coupon points"] += reported.breakdown["coupon"]["points"]
        self.recent_purchases.append((code, member, receipt))
        points = reported.points_partner + reported.points_hub
        if reported.pending_until is None and not reported.held_for_review:
            member.spendable += points
        day = self._day_number(moment)
        recent = day >= self._days() - 16
        if not recent and self.random.random() < REFUND_CHANCE:
            refund_amount = amount if self.random.random() < 0.5 else amount // 2 // 10 * 10
            self.timeline.at(moment + timedelta(days=self.random.randint(1, 4), hours=1), lambda at: self._refund(
                party, member, receipt, refund_amount, points, at))
        chance = BAD_MONTH_COMPLAINT_CHANCE if code == "book-nook" and self._in_bad_month(moment) \
            else COMPLAINT_CHANCE
        if self.random.random() < chance:
            self.timeline.at(moment + timedelta(days=self.random.randint(1, 3), hours=2),
                             lambda at: self._complain(code, member, receipt, at))

    # -- what the risk controls stop ------------------------------------------------

    def _scripted_till(self, moment: datetime) -> None:
        """Late one evening a FuelStop till reports 24 purchases on one card within the hour: the default policy
        holds the points of those past the twentieth for a risk reviewer."""
        party, member = self.parties["fuel-stop"], self.members[5]
        for index in range(24):
            at = moment + timedelta(minutes=2 * index)
            reported = purchases.report_purchase(
                self.session, partner_id=party.partner_id, now=at, expiry_months=self.expiry_months,
                report=purchases.PurchaseReport(receipt_id=f"FUEL-X{index:03d}",
                                                card_number=member.enrolment.card_number, amount_minor=2_000,
                                                currency="EUR", purchased_at=at, terminal_id=party.terminal_id))
            self.seeded.counts["purchases"] += 1
            if reported.held_for_review:
                self.seeded.counts["purchases held for review"] += 1
            elif reported.pending_until is None:
                member.spendable += reported.points_partner + reported.points_hub

    def _card_testing(self, moment: datetime) -> None:
        """A Book Nook till tries a PIN on one card after another: after five cards have failed, the next
        attempts are refused before their PIN is tried, and each refusal waits in the risk review queue."""
        party = self.parties["book-nook"]
        till = risk.Subject(partner_id=party.partner_id, terminal_id=party.terminal_id)
        for index, member in enumerate(self.members[10:17]):
            try:
                member_verification.verify_pin_at_till(self.session, card_number=member.enrolment.card_number,
                                                       pin=f"{1000 + 7 * index:04d}", till=till,
                                                       now=moment + timedelta(seconds=40 * index))
            except RiskDeclined as refusal:
                keep_record(self.session, refusal)
                self.seeded.counts["card-testing attempts refused"] += 1
            except AllianceError as refusal:
                keep_record(self.session, refusal)  # the failed PIN, counted against the till
        # The members whose cards were tried get their PIN failures cleared, as customer service would.
        for member in self.members[10:17]:
            set_pin(self.session, card_number=member.enrolment.card_number, pin=DEMO_PIN)

    def _in_bad_month(self, moment: datetime) -> bool:
        first = self.start.date().replace(day=1)
        bad_month = (first.month - 1 + 2) % 12 + 1
        return moment.month == bad_month and self._day_number(moment) < 100

    def _refund(self, party: DemoParty, member: _Member, receipt: str, amount: int, points: int,
                moment: datetime) -> None:
        purchases.refund_purchase(self.session, partner_id=party.partner_id, receipt_id=receipt,
                                  refund_id=f"RF-{receipt}", amount_minor=amount, now=moment)
        member.spendable = max(0, member.spendable - points)
        self.seeded.counts["purchase refunds"] += 1

    def _redeem(self, code: str, moment: datetime) -> None:
        """A member pays with points: most redemptions are captured, some voided, a few left to expire."""
        party = self.parties[code]
        able = [member for member in self.members if member.spendable >= 300]
        if not able:
            return
        member = self.random.choice(able)
        points = self.random.randint(2, min(member.spendable, 2_000) // 50) * 50
        reference = f"RD-{next(self.references):05d}"
        holder = active_card_holder(self.session, member.enrolment.card_number)
        redemptions.authorize(self.session, partner_id=party.partner_id, holder=holder, reference=reference,
                              points=points, ttl_s=TILL_TTL_S, terminal_id=party.terminal_id, now=moment)
        member.spendable -= points
        self.seeded.counts["redemptions"] += 1
        roll = self.random.random()
        later = moment + timedelta(seconds=self.random.randint(20, 240))
        if roll < 0.08:
            self.timeline.at(later, lambda at: self._void(party, member, reference, points, at))
        elif roll < 0.14:
            self.seeded.counts["redemptions left to expire"] += 1
            self.timeline.at(moment + timedelta(days=1), lambda at: self._expired(member, points))
        else:
            captured = points if roll < 0.9 else points // 2
            member.spendable += points - captured
            self.timeline.at(later, lambda at: self._capture(party, member, reference, captured, at))

    def _capture(self, party: DemoParty, member: _Member, reference: str, points: int, moment: datetime) -> None:
        redemptions.capture(self.session, partner_id=party.partner_id, reference=reference, points=points, now=moment)
        if self.random.random() < 0.03 and not self._last_day(moment + timedelta(days=2)):
            back = max(50, points // 2 // 50 * 50)
            self.timeline.at(moment + timedelta(days=2), lambda at: self._refund_redemption(
                party, member, reference, back, at))

    def _expired(self, member: _Member, points: int) -> None:
        """The nightly job has released the lapsed hold: its points are spendable again."""
        member.spendable += points

    def _void(self, party: DemoParty, member: _Member, reference: str, points: int, moment: datetime) -> None:
        redemptions.void(self.session, partner_id=party.partner_id, reference=reference, now=moment)
        member.spendable += points
        self.seeded.counts["redemptions voided"] += 1

    def _refund_redemption(self, party: DemoParty, member: _Member, reference: str, points: int,
                           moment: datetime) -> None:
        redemptions.refund(self.session, partner_id=party.partner_id, reference=reference,
                           refund_id=f"RF-{reference}", points=points, now=moment)
        member.spendable += points
        self.seeded.counts["redemption refunds"] += 1

    def _nightly_jobs(self, moment: datetime) -> None:
        """What the scheduler does every night: expire lapsed holds, activate lots past their return window,
        and recompute every member's tier under the tier policy version in force (the ``recompute-tiers`` job)."""
        # The expire-reward-orders job runs every 15 minutes on a live hub: it records an order past its time
        # before the holds' sweep would release the order's hold by itself.
        rewards.expire_orders(self.session, now=moment)
        ledger.expire_holds(self.session, now=moment)
        ledger.activate_due_lots(self.session, now=moment)
        self.seeded.counts["tier changes"] += self.tiers_job.run(self.session, now=moment, limit=jobs.BATCH_LIMIT)

    def _leave_a_hold_open(self, moment: datetime) -> None:
        """A till has just held points for a sale still at the counter (of the third member, or the next one on
        who surely has the points)."""
        member = next((member for member in self.members[2:] + self.members[:2] if member.spendable >= 100), None)
        if member is None:
            return
        holder = active_card_holder(self.session, member.enrolment.card_number)
        redemptions.authorize(self.session, partner_id=self.parties["cafe-aurora"].partner_id, holder=holder,
                              reference=f"RD-{next(self.references):05d}", points=100, ttl_s=TILL_TTL_S,
                              terminal_id=self.parties["cafe-aurora"].terminal_id, now=moment)
        self.seeded.counts["redemptions"] += 1
        self.seeded.counts["redemptions still held"] += 1

    # -- campaigns and the tier policy inside the history -----------------------------

    def _plan_campaigns(self) -> None:
        """The campaigns the operator runs during the history, each added a few days before it starts."""
        friday = next(day for day in range(DOUBLE_POINTS_FROM_DAY, DOUBLE_POINTS_FROM_DAY + 7)
                      if self._day(day).weekday() == 4)
        self.timeline.at(self._day(friday - 3) + timedelta(hours=11), partial(self._double_points_weekend, friday))
        self.timeline.at(self._day(JOINT_CAMPAIGN_DAY - 4) + timedelta(hours=11), self._joint_campaign)
        self.timeline.at(self._day(READING_CAMPAIGN_DAY - 2) + timedelta(hours=11), self._reading_campaign)
        self.timeline.at(self._day(READING_STOPPED_DAY) + timedelta(hours=14), self._stop_reading_campaign)

    def _double_points_weekend(self, friday: int, moment: datetime) -> None:
        """Café Aurora pays for double points on every purchase there from Friday to Sunday."""
        self.history_campaigns.append(campaigns.add_campaign(
            self.session, code="cafe-aurora", name="Double points weekend", funded_by="partner",
            multiplier=Decimal("2"), bonus_points=0, min_amount_minor=0, starts_at=self._day(friday),
            ends_at=self._day(friday + 3), now=moment, actor=MANAGER))
        self.seeded.counts["campaigns run"] += 1

    def _joint_campaign(self, moment: datetime) -> None:
        """Café Aurora (60 %) and FuelStop (40 %) give tiered members a bonus on 20 EUR or more at any partner,
        for a month, within a points budget that runs out before the month does."""
        self.history_campaigns.append(campaigns.add_campaign(
            self.session, code=None, name=f"Autumn fill-up: {JOINT_BONUS_POINTS} bonus points on 20 EUR or more",
            funded_by="joint", multiplier=Decimal("1"), bonus_points=JOINT_BONUS_POINTS, min_amount_minor=2_000,
            starts_at=self._day(JOINT_CAMPAIGN_DAY), ends_at=self._day(JOINT_CAMPAIGN_DAY + JOINT_CAMPAIGN_DAYS),
            now=moment, actor=MANAGER, funders=(("cafe-aurora", 6_000), ("fuel-stop", 4_000)),
            budget_points=JOINT_BUDGET_POINTS, target_tiers=("silver", "gold", "diamond")))
        self.seeded.counts["campaigns run"] += 1

    def _reading_campaign(self, moment: datetime) -> None:
        """The Book Nook pays for half as many points again on its purchases, for a month."""
        self.reading_campaign = campaigns.add_campaign(
            self.session, code="book-nook", name="Reading month: 1.5x points", funded_by="partner",
            multiplier=Decimal("1.5"), bonus_points=0, min_amount_minor=0, starts_at=self._day(READING_CAMPAIGN_DAY),
            ends_at=self._day(READING_CAMPAIGN_DAY + 30), now=moment, actor=MANAGER)
        self.history_campaigns.append(self.reading_campaign)
        self.seeded.counts["campaigns run"] += 1

    def _stop_reading_campaign(self, moment: datetime) -> None:
        """The operator stops the Book Nook's campaign two weeks early, saying why."""
        if self.reading_campaign is None:
            return
        campaigns.stop_campaign(self.session, campaign_id=self.reading_campaign, now=moment, actor=MANAGER,
                                reason="The Book Nook asked to end it early: the featured titles sold out")
        self.seeded.counts["campaigns stopped"] += 1

    def _propose_tier_version(self, moment: datetime) -> None:
        """The operator lowers the spend thresholds (version 2) from a month later; the nightly tiers job then
        moves members up under it."""
        tier_policy.propose_version(
            self.session, basis="spend", window_months=12, downgrade="to_earned", period_months=None,
            levels=list(TIERS_V2), effective_from=moment + TIER_VERSION_LEAD, now=moment, actor=ADMIN)
        self.seeded.counts["tier policy versions proposed"] += 1

    def _count_campaigns(self, moment: datetime) -> None:
        """What the history's campaigns awarded, and which of them spent their whole budget."""
        for campaign_id in self.history_campaigns:
            view = campaigns.campaign_view(self.session, campaign_id=campaign_id, now=moment)
            self.seeded.counts["campaign awards"] += view["awarded"]["awards"]
            self.seeded.counts["campaign points"] += view["awarded"]["points"]
            if view["budget_points"] is not None and view["budget_used_points"] == view["budget_points"]:
                self.seeded.counts["campaign budgets spent"] += 1

    # -- what the operator has scheduled -------------------------------------------

    def _plan_ahead(self, moment: datetime) -> None:
        """A joint campaign Café Aurora and FuelStop will run for tiered members from next week, with a budget, and
        the next version of the tier policy (version 3: one step down a half-year, birthday bonuses) from next
        month: both start after the history ends, so nothing played changes."""
        campaigns.add_campaign(
            self.session, code=None, name="Winter warmer: 50 bonus points on 20 EUR or more", funded_by="joint",
            multiplier=Decimal("1"), bonus_points=50, min_amount_minor=2_000, starts_at=moment + timedelta(days=7),
            ends_at=moment + timedelta(days=37), now=moment, actor=MANAGER,
            funders=(("cafe-aurora", 6_000), ("fuel-stop", 4_000)), budget_points=5_000,
            target_tiers=("silver", "gold", "diamond"))
        self.seeded.counts["campaigns scheduled"] += 1
        tier_policy.propose_version(
            self.session, basis="spend", window_months=12, downgrade="one_step", period_months=6,
            levels=[TierLevel("standard", 0, Decimal("1")), TierLevel("silver", 300, Decimal("1.25"), 50),
                    TierLevel("gold", 900, Decimal("1.5"), 100), TierLevel("diamond", 2_000, Decimal("2"), 200)],
            effective_from=moment + timedelta(days=30), now=moment, actor=ADMIN)
        self.seeded.counts["tier policy versions scheduled"] += 1

    # -- behaviour points ----------------------------------------------------------

    def _plan_behaviour(self) -> None:
        """Rules for daily sign-in (the hub pays, a streak bonus every 7th day) and surveys (the Book Nook pays);
        over the last fortnight a few members sign in most days through Café Aurora's app and some answer a
        survey at the Book Nook."""
        self.timeline.at(self._day(self._days() - 15), self._behaviour_rules)
        for day in range(self._days() - 14, self._days()):
            self.timeline.at(self._day(day) + timedelta(hours=8), self._behaviour_day)

    def _behaviour_rules(self, moment: datetime) -> None:
        behaviour_points.set_rule(self.session, event_type="sign_in", now=moment, actor=ADMIN, mode="create",
                                  points=5, streak_days=7, streak_bonus_points=20, funded_by="hub", cap_per_day=5,
                                  starts_at=moment)
        behaviour_points.set_rule(self.session, event_type="survey", now=moment, actor=ADMIN, mode="create",
                                  points=40, funded_by="book-nook", cap_per_month=40, starts_at=moment)

    def _behaviour_day(self, moment: datetime) -> None:
        policy = behaviour_points.Policy(time_zone=self.time_zone, expiry_months=self.expiry_months)
        for index, member in enumerate(self.members[:8]):
            if self.random.random() < 0.8:
                self._event("cafe-aurora", member, "sign_in", moment + timedelta(minutes=index), policy)
            if self.random.random() < 0.05:
                self._event("book-nook", member, "survey", moment + timedelta(hours=3, minutes=index), policy)

    def _event(self, code: str, member: _Member, event_type: str, moment: datetime,
               policy: behaviour_points.Policy) -> None:
        event_id = f"{event_type.upper()}-{next(self.references):05d}"
        made = behaviour_points.report_event(
            self.session, partner_id=self.parties[code].partner_id, policy=policy, now=moment,
            report=behaviour_points.EventReport(event_id=event_id, event_type=event_type, occurred_at=moment,
                                                member_number=member.enrolment.member_number))
        self.seeded.counts["behaviour events"] += 1
        self.seeded.counts["behaviour points"] += made.points_awarded

    # -- the rewards catalog and members' orders -----------------------------------

    def _plan_rewards(self) -> None:
        """The catalog (proposed by a partner manager, listed by a second person the next morning, the voucher
        pool uploaded, the mugs restocked), members' orders of each reward on days of their own, and the
        operator's answer to its bill credit every week, as its file would give it."""
        self.timeline.at(self._day(CATALOG_DAY) + timedelta(hours=10), self._propose_catalog)
        self.timeline.at(self._day(CATALOG_DAY + 1) + timedelta(hours=9, minutes=30), self._approve_catalog)
        self.timeline.at(self._day(MUG_RESTOCK_DAY) + timedelta(hours=9), self._restock_mugs)
        last = self._days() - 1
        file_days = range(ORDERS_FROM_DAY + OPERATOR_FILE_EVERY, last, OPERATOR_FILE_EVERY)
        # Mugs stop a fortnight before the end, so the returned one and the one left to expire have played out;
        # bill credit is ordered before the operator's last file, but for one order placed the day before the
        # seeding, which waits for the next file.
        for reward, orders, until in ((MUG, MUG_ORDERS, last - 14), (VOUCHER, VOUCHER_ORDERS, last),
                                      (BILL_CREDIT, BILL_CREDIT_ORDERS - 1, file_days[-1])):
            for day in sorted(self.extra.sample(range(ORDERS_FROM_DAY, until), orders)):
                self.timeline.at(self._day(day) + timedelta(seconds=self.extra.randint(9 * 3600, 19 * 3600)),
                                 partial(self._order, reward))
        self.timeline.at(self._day(last) + timedelta(hours=11), partial(self._order, BILL_CREDIT))
        for day in file_days:
            self.timeline.at(self._day(day) + timedelta(hours=6), self._operator_file)

    def _propose_catalog(self, moment: datetime) -> None:
        """A partner manager proposes the mug, the voucher and the bill credit, and uploads the Book Nook's codes."""
        for code, supplier, kind, title, points_price, unit_price_minor in CATALOG:
            rewards.propose_reward(
                self.session, supplier=supplier, code=code, kind=kind, title=title, points_price=points_price,
                unit_price_minor=unit_price_minor, actor=MANAGER, now=moment,
                stock=MUG_STOCK if kind == "goods" else None, per_member_limit=2 if kind == "goods" else None,
                fulfilment_days=BILL_CREDIT_FULFILMENT_DAYS if kind == "bill_credit" else 7,
                return_days=14 if kind == "goods" else 0)
        assert self.key_ring is not None
        codes = [f"BN3-{self.extra.getrandbits(40):010X}" for _ in range(VOUCHER_POOL)]
        self.seeded.counts["voucher codes uploaded"] += rewards.upload_voucher_codes(
            self.session, code=VOUCHER, codes=codes, key_ring=self.key_ring, actor=MANAGER,
            now=moment + timedelta(minutes=20))

    def _approve_catalog(self, moment: datetime) -> None:
        """A second person (the administrator; the proposer may not) lists what was proposed."""
        for index, (code, *_) in enumerate(CATALOG):
            rewards.approve_reward(self.session, code=code, actor=ADMIN, now=moment + timedelta(minutes=index))
            self.seeded.counts["rewards listed"] += 1

    def _restock_mugs(self, moment: datetime) -> None:
        rewards.add_stock(self.session, code=MUG, items=MUG_RESTOCK, actor=MANAGER, now=moment)

    def _order(self, reward: str, moment: datetime) -> None:
        """A member spends points earned at the other partners: a mug at Café Aurora's desk, a voucher or bill
        credit through customer service. The mug is handed over, fails, comes back or is never fulfilled."""
        price = next(points_price for code, _, _, _, points_price, _ in CATALOG if code == reward)
        items = self.extra.randint(1, 3) if reward == BILL_CREDIT else 1
        points = items * price
        # One of the members with the most points available (the tills' redemptions spend most members' points).
        available = {member.enrolment.member_id: accounts.member_balances(
            self.session, member.enrolment.member_id)["available"] for member in self.members}
        able = sorted((member for member in self.members if available[member.enrolment.member_id] >= points
                       and (reward != MUG or self.mugs_held[member.enrolment.member_id] < 2)),
                      key=lambda member: -available[member.enrolment.member_id])[:ORDERING_MEMBERS]
        if not able:
            return
        member = self.extra.choice(able)
        reference = f"ORD-{next(self.order_numbers):05d}"
        cafe = self.parties["cafe-aurora"].partner_id
        desk = "partner-key:cafe-aurora-key-1"
        assert self.key_ring is not None
        placed = rewards.place_order(
            self.session, reward_code=reward, member_id=member.enrolment.member_id, items=items,
            channel="cafe-aurora" if reward == MUG else rewards.BACK_OFFICE_CHANNEL, reference=reference,
            actor=desk if reward == MUG else SERVICE_DESK, key_ring=self.key_ring, now=moment)
        # What the tills may still spend stays within what the member holds.
        member.spendable = min(member.spendable, available[member.enrolment.member_id]) - points
        self.order_points[reference] = (member, points)
        self.seeded.counts["reward orders"] += 1
        if reward == VOUCHER:
            self.seeded.counts["voucher orders"] += 1
            self.seeded.counts["voucher codes given"] += len(placed.voucher_codes or ())
            return
        if reward == BILL_CREDIT:
            self.seeded.counts["bill credit orders"] += 1
            self.bill_credit_orders += 1
            if self.bill_credit_orders == BILL_CREDIT_FAILED:
                self.failing_bill_credit = reference
            return
        self.mug_orders += 1
        self.mugs_held[member.enrolment.member_id] += 1
        if self.mug_orders == MUG_EXPIRED:
            # Café Aurora never hands it over: the expiry job ends the order and its points come back.
            self.timeline.at(moment + timedelta(days=8), lambda at: self._order_ended(reference))
        elif self.mug_orders == MUG_FAILED:
            self.timeline.at(moment + timedelta(days=1), lambda at: self._order_failed(
                "cafe-aurora", reference, "The mugs of this delivery arrived broken", desk, at))
        else:
            handed_over = moment + timedelta(days=self.extra.randint(1, 3))
            self.timeline.at(handed_over, lambda at: rewards.fulfil_order(
                self.session, channel="cafe-aurora", reference=reference, supplier_id=cafe,
                note="Handed over at the counter", actor=desk, now=at))
            if self.mug_orders == MUG_RETURNED:
                self.timeline.at(handed_over + timedelta(days=5), lambda at: self._order_returned(reference, at))

    def _order_failed(self, supplier: str, reference: str, reason: str, actor: str, moment: datetime) -> None:
        """The supplier cannot fulfil: the hold is released, the points are the member's again."""
        channel = "cafe-aurora" if supplier == "cafe-aurora" else rewards.BACK_OFFICE_CHANNEL
        rewards.fail_order(self.session, channel=channel, reference=reference,
                           supplier_id=self.parties[supplier].partner_id, reason=reason, actor=actor, now=moment)
        self._order_ended(reference)

    def _order_returned(self, reference: str, moment: datetime) -> None:
        """The member brings the mug back inside the return window: every point comes back."""
        rewards.return_order(self.session, channel="cafe-aurora", reference=reference,
                             supplier_id=self.parties["cafe-aurora"].partner_id,
                             reason="The lid does not close; the member brought it back",
                             actor="partner-key:cafe-aurora-key-1", now=moment)
        self._order_ended(reference)

    def _order_ended(self, reference: str) -> None:
        """An order failed, returned or expired: its points (and its place under the mug limit) are back."""
        member, points = self.order_points[reference]
        member.spendable += points
        self.mugs_held[member.enrolment.member_id] = max(0, self.mugs_held[member.enrolment.member_id] - 1)

    def _operator_file(self, moment: datetime) -> None:
        """The operator's weekly file: the bill credit it applied (a note naming the bill), and an order it could
        not apply, as ``alliance rewards confirm`` would apply the file line by line."""
        operator = self.parties[OPERATOR].partner_id
        waiting = [view for view in rewards.orders(self.session, now=moment, supplier_id=operator, status="placed")
                   if view.status == "placed"]
        for view in sorted(waiting, key=lambda view: (view.placed_at, view.reference)):
            if view.reference == self.failing_bill_credit:
                self._order_failed(OPERATOR, view.reference, "The account was closed before the bill was issued",
                                   OPERATOR_FILE, moment)
                continue
            rewards.fulfil_order(self.session, channel=view.channel, reference=view.reference, supplier_id=operator,
                                 note=f"bill {moment:%Y-%m}, account {view.member_number[-6:]}",
                                 actor=OPERATOR_FILE, now=moment)

    def _count_reward_orders(self, moment: datetime) -> None:
        """How the history's orders ended (or wait for their supplier)."""
        ended = Counter(view.status for view in rewards.orders(self.session, now=moment, limit=1000))
        for status in ("fulfilled", "failed", "returned", "expired", "placed"):
            label = "awaiting fulfilment" if status == "placed" else status
            self.seeded.counts[f"reward orders {label}"] += ended[status]

    # -- coupons -------------------------------------------------------------------

    def _plan_coupons(self) -> None:
        """FuelStop's double points for members of a month or more, and later the hub's thank-you bonus for gold
        members and up; members present them at tills with their purchases."""
        self.timeline.at(self._day(FUEL_COUPON_DAY) + timedelta(hours=10), self._fuel_coupons)
        self.timeline.at(self._day(HUB_COUPON_DAY) + timedelta(hours=10), self._hub_coupons)

    def _fuel_coupons(self, moment: datetime) -> None:
        starts = self._day(FUEL_COUPON_DAY + 2)
        until = starts + timedelta(days=FUEL_COUPON_DAYS)
        coupons.create_series(self.session, code="fuelstop-double-fill", title="Double points on your next fill-up",
                              funder="fuel-stop", kind="multiplier", multiplier=Decimal("2"), valid_from=starts,
                              valid_until=until, now=moment, actor=MANAGER)
        self._issue("fuelstop-double-fill", frozenset({"fuel-stop"}), starts, until, moment,
                    tiers=None, min_tenure_months=1)

    def _hub_coupons(self, moment: datetime) -> None:
        starts = self._day(HUB_COUPON_DAY)
        until = starts + timedelta(days=HUB_COUPON_DAYS)
        coupons.create_series(self.session, code="gold-thank-you",
                              title=f"Thank you: {HUB_COUPON_BONUS} bonus points on your next purchase", funder="hub",
                              kind="bonus", bonus_points=HUB_COUPON_BONUS, valid_from=starts, valid_until=until,
                              now=moment, actor=MANAGER)
        self._issue("gold-thank-you", None, starts, until, moment, tiers=("gold", "diamond"), min_tenure_months=None)

    def _issue(self, series: str, valid_at: frozenset[str] | None, valid_from: datetime, valid_until: datetime,
               moment: datetime, *, tiers: tuple[str, ...] | None, min_tenure_months: int | None) -> None:
        """Issue a series to its target and keep each member's code for the tills."""
        issued = coupons.issue(self.session, code=series, tiers=tiers, min_tenure_months=min_tenure_months,
                               now=moment + timedelta(minutes=10), actor=MANAGER)
        self.seeded.counts["coupon series"] += 1
        self.seeded.counts["coupons issued"] += issued.issued
        page = coupons.coupon_codes(self.session, code=series, per_page=coupons.MAX_PAGE)
        for row in page["coupons"]:
            self.wallets.setdefault(row["member_number"], []).append(
                _HeldCoupon(row["code"], valid_at, valid_from, valid_until))

    def _coupon_to_present(self, member: _Member, partner: str, moment: datetime) -> _HeldCoupon | None:
        """An unused coupon of the member's valid at this till now, which the member remembers half the time."""
        for coupon in self.wallets.get(member.enrolment.member_number, ()):
            if (not coupon.used and (coupon.valid_at is None or partner in coupon.valid_at)
                    and coupon.valid_from <= moment < coupon.valid_until):
                return coupon if self.extra.random() < COUPON_USE_CHANCE else None
        return None

    # -- complaints ----------------------------------------------------------------

    def _latest_complaints(self, moment: datetime) -> None:
        """Two members complain about their latest purchases: one complaint is being looked into, one is new and
        has a goodwill credit above the four-eyes threshold waiting for a second person."""
        latest = {code: (member, receipt) for code, member, receipt in self.recent_purchases}
        for offset, (code, stage) in enumerate((("fuel-stop", "investigating"), ("cafe-aurora", "open"))):
            if code in latest:
                member, receipt = latest[code]
                complaint_id = self._complain(code, member, receipt, moment + timedelta(minutes=offset), stage=stage)
                if stage == "open" and self.goodwill_policy is not None:
                    self._goodwill(code, member, complaint_id, self.goodwill_policy.approval_threshold_points + 500,
                                   moment + timedelta(minutes=offset + 30))

    def _complain(self, code: str, member: _Member, receipt: str, moment: datetime, *, stage: str = "closed") -> int:
        """File a complaint about a purchase; then investigate it and close it (``stage`` says how far it gets).

        A resolved complaint about missing or wrong points ends with a goodwill credit. Answers the complaint's id.
        """
        category = self.random.choice(("points_missing", "wrong_points", "staff_conduct", "product_or_service"))
        if code == "book-nook" and self._in_bad_month(moment):
            category = "points_missing"
        complaint = complaints.file_complaint(
            self.session, partner_code=code, category=category,
            description=f"About receipt {receipt}: {COMPLAINT_WORDS[category]}",
            member_number=member.enrolment.member_number, receipt_id=receipt, redemption_reference=None,
            now=moment, actor=SERVICE_DESK)
        self.seeded.counts["complaints"] += 1
        if stage == "open":
            return complaint.id
        investigating = moment + timedelta(hours=self.random.randint(4, 20))
        self.timeline.at(investigating, lambda at: complaints.transition(
            self.session, complaint_id=complaint.id, status="investigating", note=None, now=at, actor=SERVICE_DESK))
        if stage == "investigating":
            return complaint.id
        outcome = "resolved" if self.random.random() < 0.7 else "rejected"
        note = ("Points credited after checking the till's journal." if outcome == "resolved"
                else "The receipt shows the points were earned as the rules say.")

        def close(at: datetime) -> None:
            complaints.transition(self.session, complaint_id=complaint.id, status=outcome, note=note, now=at,
                                  actor=SERVICE_DESK)
            if outcome == "resolved" and category in ("points_missing", "wrong_points"):
                self._goodwill(code, member, complaint.id, GOODWILL_CREDIT_POINTS, at)

        self.timeline.at(investigating + timedelta(days=self.random.randint(2, 9)), close)
        return complaint.id

    def _goodwill(self, code: str, member: _Member, complaint_id: int, points: int, moment: datetime) -> None:
        """Credit goodwill for a resolved complaint: the partner at fault pays (the hub for the Book Nook, whose
        lots would start pending); above the threshold it waits for a second person."""
        if self.goodwill_policy is None:
            return
        made = goodwill.request_goodwill(
            self.session, member_number=member.enrolment.member_number, direction="credit", points=points,
            reason="Points the till failed to credit, as the complaint showed", policy=self.goodwill_policy,
            now=moment, actor=SERVICE_DESK, complaint_id=complaint_id,
            funded_by="hub" if code == "book-nook" else code)
        self.seeded.counts["goodwill credits" if made.status == "posted" else "goodwill credits awaiting approval"] += 1

    # -- settlement ----------------------------------------------------------------

    def _close_due(self, moment: datetime) -> None:
        """Close every ended cycle, as the closing job does, then plan each statement's invoice and payments."""
        assert self.signer is not None
        for due in due_by_partner(self.session, now=moment - DEFAULT_CLOSING_GRACE):
            for cycle in due.cycles:
                closed = close_cycle(self.session, partner_id=due.partner.id, cycle=cycle, now=moment,
                                     signing_key=self.signer.signing_key, key_id=self.signer.key_id,
                                     payment_terms_days=self.signer.payment_terms_days)
                self.seeded.counts["statements"] += 1
                self.statements_closed.append((due.partner.code, closed.statement_id))
                self._plan_collection(due.partner.code, closed.statement_id, closed.net_minor, moment)

    def _plan_collection(self, code: str, statement_id: int, net_minor: int, closed_at: datetime) -> None:
        """Invoice the next morning; each partner then pays in its own way (FuelStop, late and then not at all)."""
        if net_minor == 0:
            return
        if net_minor > 0 and not self.first_owed_statement_left:
            # Finance missed the first statement with money owed: it shows closed, awaiting an invoice, overdue.
            self.first_owed_statement_left = True
            return
        invoiced_at = closed_at.replace(hour=9) + timedelta(days=1)
        self.timeline.at(invoiced_at, lambda at: self._invoice(statement_id, at))
        due_day = self.session.get_one(SettlementStatement, statement_id).due_date
        owed = abs(net_minor)
        day = self._day_number(closed_at)
        if net_minor < 0:
            self._plan_payment(statement_id, owed, due_day, "hub")
        elif code in ("cafe-aurora", OPERATOR):
            self._plan_payment(statement_id, owed, due_day - timedelta(days=1), "SEPA")
        elif code == "book-nook":
            first = owed // 2
            self._plan_payment(statement_id, first, due_day - timedelta(days=3), "SEPA-1")
            self._plan_payment(statement_id, owed - first, due_day + timedelta(days=2), "SEPA-2")
        elif day < FUEL_LATE_FROM_DAY:
            self._plan_payment(statement_id, owed, due_day, "WIRE")
        elif day < FUEL_UNPAID_FROM_DAY:
            self._plan_payment(statement_id, owed // 3, due_day + timedelta(days=4), "WIRE-1")
            self._plan_payment(statement_id, owed - owed // 3, due_day + timedelta(days=19), "WIRE-2")
        elif day < FUEL_UNPAID_FROM_DAY + 10:
            self._plan_payment(statement_id, owed // 4, due_day + timedelta(days=6), "WIRE-1")

    def _invoice(self, statement_id: int, moment: datetime) -> None:
        mark_invoiced(self.session, statement_id=statement_id, reference=f"INV-{statement_id:05d}", actor=FINANCE,
                      now=moment)
        self.seeded.counts["statements invoiced"] += 1

    def _plan_payment(self, statement_id: int, amount: int, paid_on: date, label: str) -> None:
        moment = datetime.combine(paid_on, time(10), tzinfo=timezone.utc) + timedelta(days=1)
        self.timeline.at(moment, lambda at: self._pay(statement_id, amount, paid_on, label, at))

    def _pay(self, statement_id: int, amount: int, paid_on: date, label: str, moment: datetime) -> None:
        if amount <= 0:
            return
        record_payment(self.session, statement_id=statement_id, amount_minor=amount, paid_on=paid_on,
                       reference=f"{label}-{statement_id:05d}", actor=FINANCE, now=moment)
        self.seeded.counts["payments"] += 1

    def _plan_finance(self) -> None:
        """The month's one-off finance work: adjustments, a dispute and two reconciliations."""
        self.timeline.at(self._day(40) + timedelta(hours=11), self._adjust)
        self.timeline.at(self._day(self._days() - 3) + timedelta(hours=15), self._request_pending_adjustment)
        self.timeline.at(self._day(self._days() - 20) + timedelta(hours=14), self._dispute)
        self.timeline.at(self._day(self._days() - 6) + timedelta(hours=10), self._reconcile)

    def _adjust(self, moment: datetime) -> None:
        """A goodwill credit, requested by one person and approved by another (four eyes)."""
        requested = request_adjustment(
            self.session, partner_code="cafe-aurora", amount_minor=-2_500, reference="ADJ-0001",
            reason="Goodwill credit for the till outage of the first week", actor=ADMIN, now=moment)
        decide_adjustment(self.session, adjustment_id=requested.id, decision="approve", actor=FINANCE,
                          now=moment + timedelta(hours=3))
        self.seeded.counts["adjustments"] += 1

    def _request_pending_adjustment(self, moment: datetime) -> None:
        request_adjustment(self.session, partner_code="book-nook", amount_minor=-4_000, reference="ADJ-0002",
                           reason="Points missing after the till change, as the complaints show", actor=ADMIN,
                           now=moment)
        self.seeded.counts["adjustments"] += 1

    def _dispute(self, moment: datetime) -> None:
        """The Book Nook disputes the first line of its latest statement."""
        statement_id = self._latest_statement("book-nook")
        if statement_id is None:
            return
        open_dispute(self.session, statement_id=statement_id, line_number=1,
                     reason="Our till counts fewer points issued than this line", actor=FINANCE, now=moment)
        self.seeded.counts["disputes"] += 1

    def _latest_statement(self, code: str) -> int | None:
        found = [statement_id for partner, statement_id in self.statements_closed if partner == code]
        return found[-1] if found else None

    def _reconcile(self, moment: datetime) -> None:
        """Two partners send their receipts: Café Aurora's match; the Book Nook's lack one and differ on another."""
        for code, tamper in (("cafe-aurora", False), ("book-nook", True)):
            statement_id = self._latest_statement(code)
            if statement_id is None:
                continue
            rows = self._receipts_of(statement_id)
            if tamper and len(rows) >= 2:
                receipt, amount, currency, day = rows[1]
                rows = [rows[0], (receipt, amount + 500, currency, day), *rows[3:]]
            document = "receipt_id,amount_minor,currency,occurred_on\r\n" + "".join(
                f"{receipt},{amount},{currency},{day.isoformat()}\r\n" for receipt, amount, currency, day in rows)
            reconcile_statement(self.session, statement_id=statement_id, document=document.encode(),
                                source="back_office", actor=FINANCE, now=moment)
            self.seeded.counts["reconciliations"] += 1

    def _receipts_of(self, statement_id: int) -> list[tuple[str, int, str, date]]:
        """The partner's own file for a statement's cycle: its receipts, dated on its local calendar."""
        statement = statement_by_id(self.session, statement_id=statement_id)
        party = next(party for party in self.parties.values() if party.partner_id == statement.partner_id)
        zone = ZoneInfo(party.time_zone)
        rows = self.session.execute(
            select(Purchase.receipt_id, Purchase.amount_minor, Purchase.currency, Purchase.purchased_at)
            .where(Purchase.partner_id == statement.partner_id, Purchase.reported_at >= statement.cycle_starts_at,
                   Purchase.reported_at < statement.cycle_ends_at).order_by(Purchase.receipt_id)).all()
        return [(receipt, amount, currency, at.astimezone(zone).date()) for receipt, amount, currency, at in rows]

    # -- grading -------------------------------------------------------------------

    def _grade_last_month(self, moment: datetime) -> None:
        """Grade the month just ended, as the monthly job does; a partner manager acknowledges the first alert."""
        assert self.grading_config is not None
        period = Period.month_before(moment, self.time_zone)
        _, ends_at = period.bounds(self.time_zone)
        if ends_at > moment:
            return
        computed = grading.compute(self.session, period=period, config=self.grading_config,
                                   time_zone=self.time_zone, now=moment, actor="scheduler")
        self.seeded.counts["graded periods"] += 1
        self.seeded.counts["grade alerts"] += computed.alerts_raised
        if not self.seeded.counts["alerts acknowledged"]:
            self.timeline.at(moment + timedelta(days=1, hours=5), self._acknowledge_first_alert)

    def _acknowledge_first_alert(self, moment: datetime) -> None:
        alert_id = self.session.scalar(select(GradeAlert.id).where(GradeAlert.acknowledged_at.is_(None))
                                       .order_by(GradeAlert.id).limit(1))
        if alert_id is None or self.seeded.counts["alerts acknowledged"]:
            return
        grading.acknowledge_alert(self.session, alert_id=alert_id, now=moment, actor=MANAGER)
        self.seeded.counts["alerts acknowledged"] += 1


COMPLAINT_WORDS = {
    "points_missing": "the points for this purchase never reached my account.",
    "wrong_points": "I received fewer points than the receipt says.",
    "staff_conduct": "the cashier refused to take my card.",
    "product_or_service": "the order was wrong and the points were not corrected.",
}

FIRST_NAMES = ("Amélie", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Inès", "Jonas", "Karin",
               "Luca", "Marta", "Nils", "Olga", "Pablo")
LAST_NAMES = ("Moreau", "Schulz", "García", "Rossi", "Novak", "Lindqvist", "Dubois", "Weber", "Navarro")


def demo_profile(number: int) -> dict[str, str]:
    """The made-up name, phone and e-mail of demo member ``number`` (1 onwards), the same every time."""
    first = FIRST_NAMES[(number - 1) % len(FIRST_NAMES)]
    last = LAST_NAMES[(number * 7) % len(LAST_NAMES)]
    handle = f"{first}.{last}".lower().translate(str.maketrans("éèí", "eei"))
    return {"name": f"{first} {last}", "phone": f"+3361000{number:04d}", "email": f"{handle}.{number}@example.com"}
