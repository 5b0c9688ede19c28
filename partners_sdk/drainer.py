"""A background thread that delivers the offline queue once the hub is back."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from partners_sdk.errors import AllianceError

if TYPE_CHECKING:
    from partners_sdk.client import AllianceClient

logger = logging.getLogger("partners_sdk.drainer")
MIN_INTERVAL_S = 0.01
MAX_INTERVAL_S = 3600.0
CHUNK_OPERATIONS = 100


class Drainer:
    """Flushes a client's queue every ``interval_s``; while the hub is away, waits longer each time up to a cap."""

    def __init__(self, client: "AllianceClient", *, interval_s: float, max_interval_s: float) -> None:
        if not MIN_INTERVAL_S <= interval_s <= max_interval_s <= MAX_INTERVAL_S:
            raise ValueError(f"need {MIN_INTERVAL_S} <= interval_s <= max_interval_s <= {MAX_INTERVAL_S}")
        self._client = client
        self._interval_s = interval_s
        self._max_interval_s = max_interval_s
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alliance-queue-drainer", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def wake(self) -> None:
        """Flush now instead of at the next interval (say, when the network comes back)."""
        self._wake.set()

    def stop(self, *, timeout_s: float = 30.0) -> bool:
        """Ask the thread to stop after the operation in hand; returns whether it stopped in time."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread.is_alive()

    def _run(self) -> None:
        wait_s = self._interval_s
        while not self._stopping.is_set():
            try:
                hub_away = self._drain()
            except AllianceError as error:
                hub_away = True
                logger.warning("offline queue flush failed: %s", error)
            except Exception:
                # The thread must outlive a bug in one pass; the next pass may well succeed.
                hub_away = True
                logger.exception("offline queue flush failed unexpectedly")
            wait_s = min(self._max_interval_s, wait_s * 2) if hub_away else self._interval_s
            self._wake.wait(wait_s)
            self._wake.clear()

    def _drain(self) -> bool:
        """Flush in chunks, so a stop request is seen between them; returns whether the hub stopped answering."""
        while not self._stopping.is_set():
            report = self._client.flush(limit=CHUNK_OPERATIONS)
            if report.dead_lettered:
                # Nobody waits on a background flush: the till's log is where a refusal can be seen.
                logger.warning("offline queue: the hub refused %d queued operation%s for good; see the dead letters "
                               "(client.queue.dead_letters(), alliance-pos queue)", report.dead_lettered,
                               "" if report.dead_lettered == 1 else "s")
            if report.stopped_by is not None:
                logger.info("offline queue: %d operations wait; %s", report.remaining, report.stopped_by)
                return True
            if report.remaining == 0 or report.delivered + report.dead_lettered == 0:
                return False
        return False
