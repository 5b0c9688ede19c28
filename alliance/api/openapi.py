"""The OpenAPI document, built by flask-smorest from the marshmallow schemas."""

from __future__ import annotations

from flask_smorest import Api


class HubApi(Api):
    """flask-smorest's Api without its own error format: every error here is problem+json."""

    DEFAULT_ERROR_RESPONSE_NAME = None
