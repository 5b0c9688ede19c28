"""SQLAlchemy models of the hub; importing this package registers every table."""

from alliance.models.base import Base
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

__all__ = [
    "Base",
    "Campaign",
    "IdempotencyRecord",
    "Purchase",
    "PurchaseRefund",
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
    "Terminal",
]
