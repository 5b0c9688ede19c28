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


def production_variables(**overrides: str) -> dict[str, str]:
    """Every variable production requires, with ``overrides``; a value of "" leaves that variable out."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from alliance.domain.pii import generate_key_ring_config
    from alliance.domain.pin_hashing import generate_pin_key_ring_config
    from settlement.keys import private_key_pem

    variables = {
        "ALLIANCE_ENVIRONMENT": "production", "ALLIANCE_DATABASE_URL": "postgresql://hub@db/alliance",
        "ALLIANCE_SECRET_KEY": "k", "ALLIANCE_PII_KEYS": generate_key_ring_config(),
        "ALLIANCE_PIN_KEYS": generate_pin_key_ring_config(),
        "ALLIANCE_STATEMENT_KEY": private_key_pem(Ed25519PrivateKey.generate()),
        "ALLIANCE_WEBHOOK_KEY": private_key_pem(Ed25519PrivateKey.generate()),
    }
    variables.update(overrides)
    return {name: value for name, value in variables.items() if value}


def test_production_starts_with_every_required_secret_including_the_pin_keys():
    settings = Settings.from_env(production_variables())
    assert settings.pin_keys is not None and settings.pin_keys.startswith("active=pin-")


def test_production_refuses_to_start_without_pin_keys():
    with pytest.raises(ConfigurationError,
                       match="ALLIANCE_PIN_KEYS is required in production .*alliance pins new-key-ring"):
        Settings.from_env(production_variables(ALLIANCE_PIN_KEYS=""))


@pytest.mark.parametrize("environment", ["development", "test"])
def test_outside_production_pin_keys_may_be_left_to_the_instance_folder(environment):
    assert Settings.from_env({"ALLIANCE_ENVIRONMENT": environment}).pin_keys is None


SECRET_TEXT = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"  # base64url of bytes 0..31


@pytest.mark.parametrize(("value", "message"), [
    (" ", "the configuration is empty"),
    (f"p1:{SECRET_TEXT}", "segment 1 has no '='"),
    (f"p1={SECRET_TEXT}", "'active' is missing"),
    (f"active=p2;p1={SECRET_TEXT}", "the active key id is not one of the keys"),
    ("active=p1;p1=c2hvcnQ", "the secret of key p1 must be exactly 32 bytes"),
    ("active=p1;p1=!!!", "the secret of key p1 is not valid base64url"),
])
@pytest.mark.parametrize("environment", ["production", "development"])
def test_a_malformed_pin_key_ring_is_refused_naming_the_variable_and_the_fault(value, message, environment):
    variables = production_variables(ALLIANCE_PIN_KEYS=value) if environment == "production" else {
        "ALLIANCE_PIN_KEYS": value}
    with pytest.raises(ConfigurationError, match=f"^ALLIANCE_PIN_KEYS: PIN key ring: {message}") as refused:
        Settings.from_env(variables)
    assert SECRET_TEXT not in refused.value.detail
