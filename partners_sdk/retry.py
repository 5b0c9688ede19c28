"""When and how long to wait before sending the same operation again.

The caller makes one idempotency key per logical operation before the first attempt;
this loop only repeats attempts (each re-signed by the caller with a new nonce). It
retries what may succeed later — no reply at all, a 5xx, 429, and 409
``idempotency_key_in_flight`` — with capped exponential backoff and jitter, obeying
``Retry-After`` up to a ceiling. Any other reply is final.

Everything, attempts and waits alike, fits inside one deadline per call (8 s by
default): each attempt is given only the time left, and no attempt starts, nor wait
begins, that could not end before it. A hub that accepts connections but never
answers therefore holds a checkout for the deadline, not for retries times timeouts.
"""

from __future__ import annotations

import json
import random as random_module
import time
from dataclasses import dataclass
from typing import Callable

from partners_sdk.errors import IN_FLIGHT_CODE, HubUnreachable, parse_retry_after_s
from partners_sdk.transport import Reply, TransportError

# Hard ceilings, whatever a caller asks for: a till must never hang on the hub.
MAX_RETRIES_LIMIT = 10
MAX_BACKOFF_LIMIT_S = 60.0
MAX_DEADLINE_LIMIT_S = 600.0
# A checkout cannot keep a member waiting much longer than this for the hub.
DEFAULT_DEADLINE_S = 8.0
# An attempt with less time than this left could hardly get a reply; the loop stops instead.
MIN_ATTEMPT_TIME_S = 0.25
# A 409 body names its code in a few hundred bytes; do not parse more to decide a retry.
MAX_PROBLEM_PEEK_BYTES = 64 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry, and how long to wait in between."""

    max_retries: int = 3
    initial_backoff_s: float = 0.25
    max_backoff_s: float = 4.0
    max_retry_after_s: float = 30.0
    deadline_s: float = DEFAULT_DEADLINE_S

    def __post_init__(self) -> None:
        if not 0 <= self.max_retries <= MAX_RETRIES_LIMIT:
            raise ValueError(f"max_retries must be between 0 and {MAX_RETRIES_LIMIT}")
        if not 0 < self.initial_backoff_s <= self.max_backoff_s <= MAX_BACKOFF_LIMIT_S:
            raise ValueError(f"need 0 < initial_backoff_s <= max_backoff_s <= {MAX_BACKOFF_LIMIT_S}")
        if not 0 <= self.max_retry_after_s <= MAX_DEADLINE_LIMIT_S:
            raise ValueError(f"max_retry_after_s must be between 0 and {MAX_DEADLINE_LIMIT_S}")
        if not 0 < self.deadline_s <= MAX_DEADLINE_LIMIT_S:
            raise ValueError(f"deadline_s must be above 0 and at most {MAX_DEADLINE_LIMIT_S}")

    def backoff_s(self, retry_number: int, random: Callable[[], float]) -> float:
        """The wait before retry ``retry_number`` (0 for the first): doubled each time, capped, jittered."""
        doubling: float = 2 ** min(retry_number, 30)
        ceiling_s = min(self.max_backoff_s, self.initial_backoff_s * doubling)
        # Half fixed, half random ("equal jitter"): tills that lost the hub together spread out
        # when it comes back, yet none retries almost at once.
        return ceiling_s / 2 + ceiling_s / 2 * random()

    def delay_s(self, retry_number: int, retry_after_s: float | None, random: Callable[[], float]) -> float | None:
        """The wait before the next retry, or None to give up because the hub asks for too long a pause."""
        if retry_after_s is None:
            return self.backoff_s(retry_number, random)
        if retry_after_s > self.max_retry_after_s:
            return None
        return retry_after_s


def is_retryable_reply(status: int, body: bytes) -> bool:
    """Whether a reply says "try the same request again later"."""
    if status >= 500 or status == 429:
        return True
    return status == 409 and problem_code(body) == IN_FLIGHT_CODE


def problem_code(body: bytes) -> str | None:
    """The ``code`` of a problem+json body, or None if there is none."""
    if len(body) > MAX_PROBLEM_PEEK_BYTES:
        return None
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    code = document.get("code") if isinstance(document, dict) else None
    return code if isinstance(code, str) else None


@dataclass
class Pacing:
    """The waiting primitives, injectable so tests run without real time passing."""

    sleep: Callable[[float], None] = time.sleep
    random: Callable[[], float] = random_module.random
    monotonic: Callable[[], float] = time.monotonic


def send_with_retries(attempt: Callable[[float], Reply], *, policy: RetryPolicy, pacing: Pacing,
                      deadline_at_s: float | None = None) -> Reply:
    """Call ``attempt(time_left_s)`` until it gives a final reply; a retryable one is returned once retries run out.

    ``deadline_at_s`` (on ``pacing.monotonic``'s clock) lets a caller share one deadline
    between several operations; by default the call has ``policy.deadline_s`` from now.
    Raises ``HubUnreachable`` when the last attempt got no reply at all.
    """
    started_s = pacing.monotonic()
    if deadline_at_s is None:
        deadline_at_s = started_s + policy.deadline_s
    last_error: BaseException | None = None
    reply: Reply | None = None
    attempts = 0
    for retry_number in range(policy.max_retries + 1):
        time_left_s = deadline_at_s - pacing.monotonic()
        if time_left_s < MIN_ATTEMPT_TIME_S:
            break
        attempts += 1
        retry_after_s = None
        try:
            reply = attempt(time_left_s)
        except (TransportError, OSError) as error:
            reply, last_error = None, error
        else:
            status, headers, body = reply
            if not is_retryable_reply(status, body):
                return reply
            retry_after_s = parse_retry_after_s(headers.get("retry-after"))
        if retry_number == policy.max_retries:
            break
        delay_s = policy.delay_s(retry_number, retry_after_s, pacing.random)
        if delay_s is None or pacing.monotonic() + delay_s + MIN_ATTEMPT_TIME_S > deadline_at_s:
            break
        pacing.sleep(delay_s)
    if reply is not None:
        return reply
    elapsed_s = pacing.monotonic() - started_s
    if attempts == 0:
        raise HubUnreachable("no time was left before the call's deadline to send the request", retry_safe=True)
    raise HubUnreachable(
        f"no reply from the hub after {attempts} attempt{'s' if attempts > 1 else ''} in {elapsed_s:.1f} s: "
        f"{last_error}",
        retry_safe=True,
    ) from last_error
