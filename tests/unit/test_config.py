"""Settings from ALLIANCE_* variables."""

import pytest

from alliance.config import Settings
from alliance.domain.errors import ConfigurationError


def test_settings_read_prefixed_variables_and_ignore_others():
    settings = Settings.from_env({
        "ALLIANCE_DATABASE_URL": "postgresql://hub@db/alliance",
        "ALLIANCE_ALLIANCE_CURRENCY": "CHF",
        "ALLIANCE_ALLIANCE_TIME_ZONE": "Europe/Zurich",
        "ALLIANCE_HOLD_TTL_S": "600",
        "HOME": "/root",
        "ALLIANCE_POS_HUB": "http://127.0.0.1:5000",
    })
    assert settings.database_url == "postgresql://hub@db/alliance"
    assert settings.alliance_currency == "CHF"
    assert settings.alliance_time_zone == "Europe/Zurich"
    assert settings.hold_ttl_s == 600


def test_defaults_run_a_development_hub_on_sqlite():
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.environment == "development"
    assert settings.points_expiry_months == 24


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"ALLIANCE_ALLIANCE_CURRENCY": "euro"}, "ISO 4217"),
        ({"ALLIANCE_ALLIANCE_TIME_ZONE": "Mars/Olympus"}, "IANA"),
        ({"ALLIANCE_HOLD_TTL_S": "ten"}, "whole number"),
        ({"ALLIANCE_HOLD_TTL_S": "0"}, "positive"),
        ({"ALLIANCE_DATABSE_URL": "sqlite://"}, "unknown setting ALLIANCE_DATABSE_URL"),
        ({"ALLIANCE_ENVIRONMENT": "production", "ALLIANCE_DATABASE_URL": "postgresql://x/y"}, "SECRET_KEY"),
        ({"ALLIANCE_ENVIRONMENT": "production", "ALLIANCE_SECRET_KEY": "k"}, "DATABASE_URL"),
        ({"ALLIANCE_ENVIRONMENT": "staging"}, "ENVIRONMENT"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(variables, message):
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(variables)
