"""gunicorn's settings for the hub's web processes: ``gunicorn -c python:alliance.gunicorn_conf ...``.

Only what the metrics need of gunicorn, the rest stays on the command line (see
``deploy/templates/systemd/alliance-hub.service.j2``). With ``PROMETHEUS_MULTIPROC_DIR``
set (the web processes only), the directory is emptied when the master starts, so a
restart does not add up a previous run's counters, and a worker that exits has its
live gauges retired, as the Prometheus client library's multiprocess mode requires.
gunicorn's own error log goes out as the hub's JSON lines; gunicorn's access log is off
(``logger_class``): the hub writes one line per request itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from gunicorn.glogging import Logger  # type: ignore[import-untyped]  # gunicorn ships no type information

from alliance.observability.logs import formatter

_DIRECTORY = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"hub": {"()": formatter, "log_format": os.environ.get("ALLIANCE_LOG_FORMAT", "json")}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "hub", "stream": "ext://sys.stderr"}},
    # The hub adds its own handler to the root logger when the application loads.
    "root": {"level": "INFO", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
    },
}


class HubLogger(Logger):
    """gunicorn's logger without its access log.

    The hub writes its own line per request (``alliance.request``: request id, partner,
    key, route, status, problem, duration), so gunicorn's line would only repeat it. With
    a ``logconfig_dict`` gunicorn builds every access line's fields even when its access
    logger has no handler, about 2% of a saturated worker's time
    (``python -m benchmarks.worker_profile production``).
    """

    def access(self, resp: object, req: object, environ: object, request_time: object) -> None:
        return None


logger_class = HubLogger


class _Worker(Protocol):
    """What the hooks read of a gunicorn worker (gunicorn ships no type information)."""

    pid: int


def on_starting(server: object) -> None:
    """Start from a multiprocess directory without an earlier run's files (created if missing).

    Only the client library's own files (``*.db``) are removed, whatever else the
    directory holds.
    """
    if _DIRECTORY:
        directory = Path(_DIRECTORY)
        directory.mkdir(parents=True, mode=0o700, exist_ok=True)
        for leftover in directory.glob("*.db"):
            leftover.unlink(missing_ok=True)


def child_exit(server: object, worker: _Worker) -> None:
    """Retire an exited worker's live gauges (its counters and histograms keep counting in the sum)."""
    if _DIRECTORY:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, _DIRECTORY)
