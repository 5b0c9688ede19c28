"""The hub's gunicorn settings: gunicorn's access log is off, its error log is kept."""

import logging

from gunicorn.config import Config

from alliance import gunicorn_conf


def _configured() -> Config:
    config = Config()
    for name in ("logger_class", "logconfig_dict"):
        config.set(name, getattr(gunicorn_conf, name))
    return config


class _Refused:
    """A response, request or environ an access line may not read."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the access log read {name!r}")


def test_gunicorn_uses_the_hub_logger() -> None:
    config = _configured()
    assert config.logger_class is gunicorn_conf.HubLogger


def test_no_access_line_is_built_or_written(caplog) -> None:  # type: ignore[no-untyped-def]
    logger = gunicorn_conf.HubLogger(_configured())
    # gunicorn would build this line's fields here: with a logconfig_dict it does so even
    # though its access logger has no handler.
    assert logger.access_log_enabled
    with caplog.at_level(logging.DEBUG, logger="gunicorn.access"):
        logger.access(_Refused(), _Refused(), _Refused(), _Refused())
    assert not [record for record in caplog.records if record.name == "gunicorn.access"]


def test_the_error_log_still_reaches_its_handler() -> None:
    logger = gunicorn_conf.HubLogger(_configured())
    assert logger.error_log.handlers, "gunicorn's error log lost its handler"
