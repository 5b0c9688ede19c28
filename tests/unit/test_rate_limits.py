"""Per-partner admission: the token bucket and the in-flight cap, on an injected clock (no sleeping)."""

from __future__ import annotations

import threading

import pytest

from alliance.config import Settings
from alliance.domain.errors import ConfigurationError
from alliance.domain.rate_limits import PartnerLimiter, PartnerLimits, RateLimited, TokenBucket


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def admitted(limiter: PartnerLimiter, partner_id: int, attempts: int) -> int:
    """How many of ``attempts`` back-to-back requests are admitted (each released at once)."""
    count = 0
    for _ in range(attempts):
        try:
            limiter.admit(partner_id).release()
            count += 1
        except RateLimited:
            pass
    return count


def test_a_full_bucket_admits_its_burst_then_refuses_with_the_wait_until_the_next_token():
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=4, capacity=10, now_s=clock())
    assert [bucket.take(clock()) for _ in range(10)] == [0.0] * 10
    assert bucket.take(clock()) == pytest.approx(0.25)
    clock.advance(0.1)
    assert bucket.take(clock()) == pytest.approx(0.15)
    clock.advance(0.15)
    assert bucket.take(clock()) == 0.0


def test_the_bucket_refills_at_its_rate_and_never_beyond_its_capacity():
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=5, capacity=3, now_s=clock())
    for _ in range(3):
        bucket.take(clock())
    clock.advance(3600)
    assert [bucket.take(clock()) == 0.0 for _ in range(4)] == [True, True, True, False]


def test_a_clock_stepping_backwards_refills_nothing():
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=1, capacity=1, now_s=clock())
    assert bucket.take(clock()) == 0.0
    clock.advance(-50)
    assert bucket.take(clock()) > 0
    clock.advance(50.5)
    assert bucket.take(clock()) > 0
    clock.advance(0.5)
    assert bucket.take(clock()) == 0.0


def test_each_partner_has_its_own_bucket_so_one_flooding_partner_leaves_the_others_theirs():
    clock = FakeClock()
    limiter = PartnerLimiter(PartnerLimits(rate_per_s=10, burst=20), clock=clock)
    assert admitted(limiter, 1, 1_000) == 20
    assert admitted(limiter, 2, 20) == 20
    clock.advance(1.0)
    assert admitted(limiter, 1, 1_000) == 10
    assert admitted(limiter, 2, 5) == 5


def test_over_a_long_flood_a_partner_gets_exactly_its_rate_plus_the_burst():
    clock = FakeClock()
    limiter = PartnerLimiter(PartnerLimits(rate_per_s=7, burst=15), clock=clock)
    total = 0
    for _ in range(600):
        total += admitted(limiter, 1, 10)
        clock.advance(0.1)
    # 15 at the start, then 7 a second for the 59.9 s between the first and last tick.
    assert total == 15 + int(7 * 59.9)


def test_the_refusal_says_rate_limited_with_a_whole_second_retry_after():
    clock = FakeClock()
    limiter = PartnerLimiter(PartnerLimits(rate_per_s=1, burst=1), clock=clock)
    limiter.admit(1).release()
    with pytest.raises(RateLimited) as refusal:
        limiter.admit(1)
    assert (refusal.value.code, refusal.value.http_status, refusal.value.retry_after_s) == ("rate_limited", 429, 1)
    slow = PartnerLimiter(PartnerLimits(rate_per_s=1, burst=1), clock=clock)
    slow.admit(2).release()
    clock.advance(0.001)
    with pytest.raises(RateLimited) as refusal:
        slow.admit(2)
    assert refusal.value.retry_after_s == 1


def test_a_burst_below_the_rate_still_allows_one_seconds_worth():
    limiter = PartnerLimiter(PartnerLimits(rate_per_s=50, burst=0), clock=FakeClock())
    assert limiter.limits.bucket_capacity == 50
    assert admitted(limiter, 1, 100) == 50


def test_the_in_flight_cap_refuses_while_the_partner_has_that_many_open_and_admits_after_a_release():
    limiter = PartnerLimiter(PartnerLimits(max_in_flight=2), clock=FakeClock())
    first, second = limiter.admit(1), limiter.admit(1)
    with pytest.raises(RateLimited) as refusal:
        limiter.admit(1)
    assert refusal.value.retry_after_s == 1
    other = limiter.admit(2)
    first.release()
    first.release()  # a second release of the same admission gives back nothing more
    assert limiter.in_flight(1) == 1
    third = limiter.admit(1)
    with pytest.raises(RateLimited):
        limiter.admit(1)
    for admission in (second, third, other):
        admission.release()
    assert (limiter.in_flight(1), limiter.in_flight(2)) == (0, 0)


def test_a_refusal_for_too_many_in_flight_spends_no_token():
    clock = FakeClock()
    limiter = PartnerLimiter(PartnerLimits(rate_per_s=1, burst=2, max_in_flight=1), clock=clock)
    held = limiter.admit(1)
    for _ in range(5):
        with pytest.raises(RateLimited):
            limiter.admit(1)
    held.release()
    limiter.admit(1).release()


def test_limits_at_zero_are_off():
    limiter = PartnerLimiter(PartnerLimits(), clock=FakeClock())
    open_admissions = [limiter.admit(1) for _ in range(10_000)]
    assert limiter.in_flight(1) == 10_000
    for admission in open_admissions:
        admission.release()
    assert limiter.in_flight(1) == 0


def test_concurrent_admissions_never_exceed_the_cap_nor_the_bucket():
    limiter = PartnerLimiter(PartnerLimits(rate_per_s=1, burst=64, max_in_flight=1_000), clock=FakeClock())
    start = threading.Barrier(16)
    outcomes: list[bool] = []
    guard = threading.Lock()

    def flood() -> None:
        start.wait()
        for _ in range(50):
            try:
                limiter.admit(7)
                result = True
            except RateLimited:
                result = False
            with guard:
                outcomes.append(result)

    threads = [threading.Thread(target=flood) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(True) == 64 and len(outcomes) == 800
    assert limiter.in_flight(7) == 64


@pytest.mark.parametrize("name", ["PARTNER_RATE_PER_S", "PARTNER_BURST", "PARTNER_MAX_IN_FLIGHT"])
def test_rate_limit_settings_come_from_the_environment_and_refuse_negatives(name):
    assert getattr(Settings.from_env({f"ALLIANCE_{name}": "0"}), name.lower()) == 0
    assert getattr(Settings.from_env({f"ALLIANCE_{name}": "12"}), name.lower()) == 12
    with pytest.raises(ConfigurationError, match=f"ALLIANCE_{name}"):
        Settings.from_env({f"ALLIANCE_{name}": "-1"})
