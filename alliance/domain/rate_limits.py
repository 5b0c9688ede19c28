"""Per-partner admission: a token bucket (rate and burst) and a cap on requests in flight.

One partner flooding the hub must not starve the others. The token bucket bounds how
many requests a partner may start per second (with a burst for a till catching up after
an outage); the in-flight cap bounds how many of one partner's requests may hold a
worker thread at the same time, so a partner with slow requests cannot occupy every
thread while the others queue.

The limiter lives in the memory of one web worker process, on purpose. A bucket in the
database would cost a write on one row per partner for every request, the hot-row queue
that the ledger avoids for partner accounts (docs/design.md, "Hot accounts"), and it
would itself be a write that a refused request leaves behind. The in-flight cap protects a
process's own threads, which only that process can count. So the limits apply per
process: with N gunicorn workers a partner may reach N times the rate in total, and the
settings should be the partner-wide budget divided by the worker count.

Pure Python, no Flask and no database: the clock is injected, so tests never sleep.
Tokens and times are exact fractions (the production clock counts whole nanoseconds), so
no rounding can let a request through that the rate forbids.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Union

from alliance.domain.errors import AllianceError

Seconds = Union[int, Fraction]
# Seconds on a monotonic clock; a float from a test clock is taken at its exact value.
Clock = Callable[[], Union[Seconds, float]]
# A refusal for too many requests in flight clears as soon as one of them finishes;
# one second is the smallest whole Retry-After.
IN_FLIGHT_RETRY_AFTER_S = 1


class RateLimited(AllianceError):
    """A partner over its request rate or its requests-in-flight cap."""

    code = "rate_limited"
    http_status = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class PartnerLimits:
    """The limits each partner gets; 0 switches a limit off."""

    rate_per_s: int = 0
    burst: int = 0
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        assert self.rate_per_s >= 0 and self.burst >= 0 and self.max_in_flight >= 0, self

    @property
    def bucket_capacity(self) -> int:
        """How many requests may start at once after a quiet spell (at least one second's worth)."""
        return max(self.burst, self.rate_per_s)


def monotonic_seconds() -> Fraction:
    """The process's monotonic clock in exact seconds."""
    return Fraction(time.monotonic_ns(), 1_000_000_000)


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate_per_s``; one request takes one token."""

    def __init__(self, *, rate_per_s: int, capacity: int, now_s: Seconds | float) -> None:
        assert rate_per_s > 0 and capacity > 0, (rate_per_s, capacity)
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.tokens = Fraction(capacity)
        self.updated_s = Fraction(now_s)

    def _refill(self, now_s: Fraction) -> None:
        # A clock that steps backwards (it should not, being monotonic) refills nothing.
        elapsed_s = max(Fraction(0), now_s - self.updated_s)
        self.tokens = min(Fraction(self.capacity), self.tokens + elapsed_s * self.rate_per_s)
        self.updated_s = max(self.updated_s, now_s)

    def take(self, now_s: Seconds | float) -> Fraction:
        """Take one token and return 0, or take nothing and return the seconds until one is there."""
        self._refill(Fraction(now_s))
        if self.tokens >= 1:
            self.tokens -= 1
            return Fraction(0)
        return (1 - self.tokens) / self.rate_per_s


class Admission:
    """A partner's admitted request; ``release`` it when the request ends (exactly once)."""

    def __init__(self, limiter: "PartnerLimiter", partner_id: int) -> None:
        self._limiter = limiter
        self._partner_id = partner_id
        self._released = False

    def release(self) -> None:
        """Give the in-flight slot back; a second call does nothing."""
        if not self._released:
            self._released = True
            self._limiter._release(self._partner_id)

    def take_back(self) -> None:
        """The request turned out not to be the partner's (its key no longer stands, its nonce was spent):
        give back its token as well as its slot, so it spends none of the partner's budget."""
        if not self._released:
            self._released = True
            self._limiter._release(self._partner_id, token_too=True)


class PartnerLimiter:
    """Admits or refuses each partner request against that partner's limits, thread-safely."""

    def __init__(self, limits: PartnerLimits, *, clock: Clock) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[int, TokenBucket] = {}
        self._in_flight: dict[int, int] = {}

    def in_flight(self, partner_id: int) -> int:
        """How many of the partner's requests are admitted and not yet released."""
        with self._lock:
            return self._in_flight.get(partner_id, 0)

    def admit(self, partner_id: int) -> Admission:
        """Admit one request of ``partner_id`` or raise ``RateLimited`` (which spends nothing)."""
        limits = self.limits
        with self._lock:
            in_flight = self._in_flight.get(partner_id, 0)
            # The in-flight check comes first so that a refusal for it does not spend a token.
            if limits.max_in_flight and in_flight >= limits.max_in_flight:
                raise RateLimited(f"this partner already has {in_flight} requests in progress, the most allowed; "
                                  "retry when one has finished", retry_after_s=IN_FLIGHT_RETRY_AFTER_S)
            if limits.rate_per_s:
                wait_s = self._bucket(partner_id, limits).take(self._clock())
                if wait_s > 0:
                    raise RateLimited(f"this partner is over its limit of {limits.rate_per_s} requests per second "
                                      f"(burst {limits.bucket_capacity})", retry_after_s=max(1, math.ceil(wait_s)))
            self._in_flight[partner_id] = in_flight + 1
        return Admission(self, partner_id)

    def _bucket(self, partner_id: int, limits: PartnerLimits) -> TokenBucket:
        bucket = self._buckets.get(partner_id)
        if bucket is None:
            bucket = TokenBucket(rate_per_s=limits.rate_per_s, capacity=limits.bucket_capacity, now_s=self._clock())
            self._buckets[partner_id] = bucket
        return bucket

    def _release(self, partner_id: int, *, token_too: bool = False) -> None:
        with self._lock:
            bucket = self._buckets.get(partner_id)
            if token_too and bucket is not None:
                bucket.tokens = min(Fraction(bucket.capacity), bucket.tokens + 1)
            remaining = self._in_flight[partner_id] - 1
            assert remaining >= 0, partner_id
            if remaining:
                self._in_flight[partner_id] = remaining
            else:
                del self._in_flight[partner_id]
