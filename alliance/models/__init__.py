"""SQLAlchemy models of the hub; importing this package registers every table."""

from alliance.models.audit_checkpoints import AuditCheckpoint
from alliance.models.back_office import (
    AuditLogEntry,
    Complaint,
    JobLease,
    MemberNotification,
    MemberProfile,
    MemberTransfer,
    OAuthClient,
    OAuthToken,
)
from alliance.models.base import Base
from alliance.models.behaviour import BehaviourAward, BehaviourEvent, BehaviourRule
from alliance.models.birthday import BirthdayAward
from alliance.models.campaigns import CampaignAward, CampaignFunder, CampaignSegmentMember
from alliance.models.coupons import Coupon, CouponSeries, CouponSeriesPartner, CouponUse
from alliance.models.credit import PartnerCredit, PartnerCreditAlert, PartnerCreditLimitChange
from alliance.models.finance import Adjustment, AdjustmentApplication, StatementEvent, StatementLineDispute
from alliance.models.goodwill import GoodwillRequest
from alliance.models.grading import GradeAlert, GradeOverride, GradePeriod, PartnerGrade
from alliance.models.ledger import (
    JournalEntry,
    JournalTransaction,
    LedgerAccount,
    LotConsumption,
    PointLot,
    RedemptionHold,
)
from alliance.models.members import Card, Member
from alliance.models.partner_api import (
    Campaign,
    IdempotencyRecord,
    Purchase,
    PurchaseRefund,
    RedemptionCode,
    RedemptionRefund,
    SeenNonce,
)
from alliance.models.partners import Partner, PartnerEarnRule, PartnerKey, PartnerPrice, Terminal
from alliance.models.reconciliation import ReconciliationReport
from alliance.models.rewards import Reward, RewardOrder, RewardPrice, RewardVoucherCode
from alliance.models.risk import RiskDecision, RiskHeldLot, RiskPolicyVersion, VerificationFailure
from alliance.models.risk_patterns import PartnerAmountProfile, RiskPatternRule, RiskPatternSighting
from alliance.models.settlement import SettlementRun, SettlementStatement, SettlementStatementLine
from alliance.models.staff import StaffSession, StaffUser
from alliance.models.tiers import MemberTierChange, TierPolicyVersion
from alliance.models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

__all__ = [
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "Reward",
    "RewardOrder",
    "RewardPrice",
    "RewardVoucherCode",
    "RiskDecision",
    "RiskHeldLot",
    "RiskPolicyVersion",
    "VerificationFailure",
    "PartnerAmountProfile",
    "RiskPatternRule",
    "RiskPatternSighting",
    "BehaviourAward",
    "BehaviourEvent",
    "BehaviourRule",
    "BirthdayAward",
    "GoodwillRequest",
    "Coupon",
    "CouponSeries",
    "CouponSeriesPartner",
    "CouponUse",
    "PartnerCredit",
    "PartnerCreditAlert",
    "PartnerCreditLimitChange",
    "MemberTierChange",
    "TierPolicyVersion",
    "GradeAlert",
    "GradeOverride",
    "GradePeriod",
    "PartnerGrade",
    "Adjustment",
    "AdjustmentApplication",
    "StatementEvent",
    "StatementLineDispute",
    "AuditCheckpoint",
    "AuditLogEntry",
    "Complaint",
    "JobLease",
    "MemberNotification",
    "MemberProfile",
    "MemberTransfer",
    "OAuthClient",
    "OAuthToken",
    "Base",
    "Campaign",
    "CampaignAward",
    "CampaignFunder",
    "CampaignSegmentMember",
    "IdempotencyRecord",
    "Purchase",
    "PurchaseRefund",
    "ReconciliationReport",
    "RedemptionCode",
    "RedemptionRefund",
    "SeenNonce",
    "Card",
    "JournalEntry",
    "JournalTransaction",
    "LedgerAccount",
    "LotConsumption",
    "Member",
    "Partner",
    "PartnerEarnRule",
    "PartnerKey",
    "PartnerPrice",
    "PointLot",
    "RedemptionHold",
    "SettlementRun",
    "SettlementStatement",
    "SettlementStatementLine",
    "StaffSession",
    "StaffUser",
    "Terminal",
]
