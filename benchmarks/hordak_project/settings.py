"""Django settings for the hordak peer: only what its models and migrations need.

The database comes from ``BENCH_HORDAK_DATABASE`` (name), ``BENCH_HORDAK_PORT`` and
``BENCH_HORDAK_USER``, set by ``benchmarks.ledger_vs_hordak`` for the run's PostgreSQL.
"""

import os

SECRET_KEY = "benchmark-only"  # no request is ever served; Django refuses to start without one
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "mptt", "djmoney", "hordak"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("BENCH_HORDAK_DATABASE", "bench_hordak"),
        "USER": os.environ.get("BENCH_HORDAK_USER", "postgres"),
        "HOST": "127.0.0.1",
        "PORT": os.environ.get("BENCH_HORDAK_PORT", "5432"),
        # One connection per writer process, kept for the whole run, as our side's pool does.
        "CONN_MAX_AGE": None,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DEFAULT_CURRENCY = "EUR"
HORDAK_CURRENCIES = ["EUR"]
CURRENCIES = ["EUR"]
