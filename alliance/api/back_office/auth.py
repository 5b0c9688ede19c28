"""OAuth 2 for the back office: authlib's client-credentials token endpoint, and a role
check on every back-office route.

Tokens are bearer tokens of one hour whose scope is a set of roles. Partner signing
keys are a different mechanism altogether: a request carrying only a signature has no
bearer token and is refused here.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Any, Callable, ParamSpec, Protocol, TypeVar, cast

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from flask import Blueprint, Flask, Response, g, request

from alliance.domain.errors import AllianceError
from alliance.extensions import hub_state
from alliance.services import oauth

TOKEN_PATH = "/oauth/token"
ViewArguments = ParamSpec("ViewArguments")
ViewResult = TypeVar("ViewResult")
GuardedResult = TypeVar("GuardedResult", covariant=True)


class RoleGuardedView(Protocol[ViewArguments, GuardedResult]):
    """A view behind ``require_role``: called as the view is, and naming the roles it needs."""

    required_roles: tuple[str, ...]

    def __call__(self, *args: ViewArguments.args, **kwargs: ViewArguments.kwargs) -> GuardedResult: ...


class NotAuthenticated(AllianceError):
    """No valid bearer token."""

    code = "not_authenticated"
    http_status = 401
    title = "Not authenticated"


class RoleRefused(AllianceError):
    """A valid token whose roles do not include what the route needs."""

    code = "role_refused"
    http_status = 403
    title = "Role refused"


class _Client(ClientMixin):
    """authlib's view of a stored back-office client."""

    # ``row`` is the stored client as ``oauth.find_active_client`` returns it: a model, which
    # views do not import (tests/unit/test_layering.py), so it goes unannotated.
    def __init__(self, row) -> None:
        self.row = row
        self.client_id = row.client_id

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = self.row.roles.split()
        if not scope:
            return " ".join(allowed)
        return " ".join(role for role in allowed if role in scope.split())

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return oauth.client_secret_matches(self.row, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class _ClientCredentialsGrant(ClientCredentialsGrant):
    """The client-credentials grant, with the secret in HTTP Basic or in the form body."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _query_client(client_id: str) -> _Client | None:
    with hub_state().unit_of_work() as uow:
        row = oauth.find_active_client(uow.session, client_id)
        return _Client(row) if row is not None else None


class _TokenRequest(Protocol):
    """What ``_save_token`` reads of authlib's token request: the client it authenticated."""

    @property
    def client(self) -> _Client: ...


def _save_token(token: dict[str, Any], oauth_request: _TokenRequest) -> None:
    with hub_state().unit_of_work() as uow:
        oauth.store_token(uow.session, client=oauth_request.client.row, access_token=token["access_token"],
                          scope=token.get("scope", ""), now=_now(), expires_in_s=int(token["expires_in"]))
        uow.commit()


token_blueprint = Blueprint("oauth", __name__)


@token_blueprint.post(TOKEN_PATH)
def issue_token() -> Response:
    """RFC 6749 token endpoint, client-credentials grant only; RFC 6749 JSON errors."""
    return _server().create_token_response()


def _server() -> AuthorizationServer:
    return hub_state().extras["authorization_server"]


def require_role(*roles: str) -> Callable[[Callable[ViewArguments, ViewResult]],
                                          RoleGuardedView[ViewArguments, ViewResult]]:
    """Allow the decorated view only to bearer tokens holding one of ``roles``."""
    unknown = set(roles) - set(oauth.ROLES)
    assert not unknown, f"unknown roles {unknown}"

    def decorate(view: Callable[ViewArguments, ViewResult]) -> RoleGuardedView[ViewArguments, ViewResult]:
        @functools.wraps(view)
        def guarded(*args: ViewArguments.args, **kwargs: ViewArguments.kwargs) -> ViewResult:
            grant = current_grant()
            if not grant.roles & set(roles):
                raise RoleRefused(f"this needs the role {' or '.join(roles)}; the token has "
                                  f"{', '.join(sorted(grant.roles)) or 'none'}")
            return view(*args, **kwargs)
        # A function takes the attribute at run time; RoleGuardedView tells the type checker it has it.
        guarded_view = cast("RoleGuardedView[ViewArguments, ViewResult]", guarded)
        guarded_view.required_roles = roles
        return guarded_view
    return decorate


def current_grant() -> oauth.TokenGrant:
    """The bearer token's grant for this request, checked once and remembered."""
    if "grant" not in g:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated("back-office calls need an OAuth 2 bearer token (POST /oauth/token)")
        with hub_state().unit_of_work() as uow:
            grant = oauth.grant_for_token(uow.session, access_token=token.strip(), now=_now())
        if grant is None:
            raise NotAuthenticated("the bearer token is unknown, expired or revoked")
        g.grant = grant
    return g.grant


def actor() -> str:
    """Who is acting, for the audit log."""
    return f"client:{current_grant().client_id}"


def init_app(app: Flask) -> None:
    """Set up the authorization server and the token endpoint."""
    app.config.setdefault("OAUTH2_TOKEN_EXPIRES_IN", {"client_credentials": int(oauth.TOKEN_LIFETIME.total_seconds())})
    app.config.setdefault("OAUTH2_SCOPES_SUPPORTED", list(oauth.ROLES))
    server = AuthorizationServer(app, query_client=_query_client, save_token=_save_token)
    server.register_grant(_ClientCredentialsGrant)
    hub_state(app).extras["authorization_server"] = server
    app.register_blueprint(token_blueprint)
