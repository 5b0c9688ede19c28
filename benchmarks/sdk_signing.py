"""SDK signing cost: partners_sdk's RequestSigner on a typical purchase POST, in process.

Each iteration signs one purchase report as the SDK sends it: JSON body, Content-Digest,
a fresh nonce and created time, RFC 9421 base, Ed25519. The floor is the bare Ed25519
signature of a base of the same size, which no signer can avoid.
"""

from __future__ import annotations

import json
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks import common

BENCHMARK = "SDK signing"
ITERATIONS = {"full": 20_000, "quick": 2_000}
WARM_UP = 200


def _timed(action, iterations: int) -> list[float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


def run(context: dict) -> list[dict]:  # type: ignore[type-arg]
    """Median and p99 microseconds per signed purchase, against a bare Ed25519 signature."""
    from partners_sdk.signing import RequestSigner

    iterations = ITERATIONS[context["scale"]]
    private_key = Ed25519PrivateKey.generate()
    signer = RequestSigner("bench-till-1", private_key)
    payload = common.purchase_payload("R-2026-000123", "6390000000000013", 15_000, common.recent())
    body = json.dumps(payload, separators=(",", ":")).encode()
    counter = iter(range(10**9))

    def sign_purchase() -> None:
        signer.sign("POST", "https://hub.example/partner/v1/purchases", body=body,
                    idempotency_key=f"purchase-{next(counter)}")

    base = signer.sign("POST", "https://hub.example/partner/v1/purchases", body=body,
                       idempotency_key="size-probe").signature_base
    _timed(sign_purchase, WARM_UP)
    signing = _timed(sign_purchase, iterations)
    bare = _timed(lambda: private_key.sign(base), iterations)
    signing_median, signing_p99 = common.median(signing), common.percentile(signing, 0.99)
    bare_median = common.median(bare)
    note = f"{iterations} iterations; base {len(base)} bytes"
    return [
        common.figure(BENCHMARK, "sign a purchase POST, median", signing_median, "us", floor="bare Ed25519 sign",
                      floor_value=bare_median, ratio=signing_median / bare_median, ratio_unit="x",
                      target="<= 150 us", met=signing_median <= 150, note=note),
        common.figure(BENCHMARK, "sign a purchase POST, p99", signing_p99, "us", floor="bare Ed25519 sign p99",
                      floor_value=common.percentile(bare, 0.99), target="<= 150 us (median; p99 shown)",
                      met=None, note=""),
    ]


if __name__ == "__main__":
    common.standalone(run)
