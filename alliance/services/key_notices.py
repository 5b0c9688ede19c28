"""Key expiry notices: each partner hears once that one of its signing keys expires soon (``key.expiring``).

A key is announced when its notice moment (its expiry less the notice period) falls in
the window since the job's last successful run, or when it was created after that run
already inside the notice period. So each key is announced once for its expiry without
a marker, and a key whose expiry is moved later is announced again for the new one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from alliance.models import PartnerKey
from alliance.services import webhooks

JOB_NAME = "announce-expiring-keys"
DEFAULT_NOTICE_DAYS = 14


def announce_expiring_keys(session: Session, *, now: datetime, notice_days: int = DEFAULT_NOTICE_DAYS,
                           since: datetime | None = None, limit: int = 1000) -> int:
    """Emit ``key.expiring`` for active keys expiring within ``notice_days`` not announced since ``since``.

    Without ``since`` (the first run), every active key expiring within the period is
    announced. Returns how many were.
    """
    notice = timedelta(days=notice_days)
    keys = session.execute(
        select(PartnerKey.partner_id, PartnerKey.key_id, PartnerKey.expires_at, PartnerKey.created_at)
        .where(PartnerKey.status == "active", PartnerKey.expires_at > now, PartnerKey.expires_at <= now + notice)
        .order_by(PartnerKey.expires_at, PartnerKey.id)
    ).all()
    announced = 0
    for key in keys:
        if announced >= limit:
            break
        if since is not None and key.expires_at - notice <= since and key.created_at <= since:
            continue  # announced by an earlier run
        webhooks.emit(session, event_type="key.expiring", partner_id=key.partner_id, now=now,
                      data={"key_id": key.key_id, "expires_at": key.expires_at.isoformat()})
        announced += 1
    return announced
