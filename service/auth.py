"""Bearer-token auth, decided in one place for the whole app by the route a request matched.

With a token set (``AUTH_TOKEN`` or ``AUTH_TOKEN_FILE``), every route needs
``Authorization: Bearer <token>`` except the open ones: health (``/healthz``, ``/readyz`` and the
protocol's ``/v2/health/*`` and ``/v2/models/<name>/ready``), metrics, the API documents and the
demo page with its files. Admin routes always need the token, and answer 403 while none is set.
Who may call a route is part of its declaration (``service.routes.route``, ``access``), which the
OpenAPI document reads too; a route declared without ``access`` needs the token.

A missing or wrong token gets 401 with ``WWW-Authenticate: Bearer`` in the route's own error
shape (``{"error": "..."}`` under ``/v2``). Preflight requests (OPTIONS) pass: browsers send them
without credentials (see ``service.cors``). The token is compared in constant time, as SHA-256
digests so that not even its length shows.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from flask import Flask, Response, request

from service.errors import error_response, is_v2_request, v2_error_response
from service.routes import access_of

REALM = "digits-serving"


def register_auth(app: Flask, token: str | None) -> None:
    """Check every request against ``token``; without one, refuse only the admin routes (and
    cost the other routes nothing: the check is registered for the admin routes' blueprints
    alone). Call once every route is registered: access is read from their declarations."""
    access = {endpoint: access_of(app, endpoint) for endpoint in app.view_functions}
    if token is not None:
        app.before_request(_require(token, frozenset(e for e, a in access.items() if a == "open")))
        return
    admin = frozenset(e for e, a in access.items() if a == "admin")
    for blueprint in {endpoint.rpartition(".")[0] for endpoint in admin}:
        app.before_request_funcs.setdefault(blueprint or None, []).append(_admin_disabled(admin))


def _admin_disabled(admin: frozenset[str]) -> Callable[[], Response | None]:
    def refuse() -> Response | None:
        if request.method == "OPTIONS" or request.endpoint not in admin:
            return None
        return _refused(403, "admin endpoints are disabled: set AUTH_TOKEN (or AUTH_TOKEN_FILE)")

    return refuse


def _require(token: str, open_endpoints: frozenset[str]) -> Callable[[], Response | None]:
    expected = token_digest(token)

    def check() -> Response | None:
        if request.method == "OPTIONS" or request.routing_exception is not None:
            return None  # a preflight; or no such route, which the 404/405 says
        if request.endpoint in open_endpoints:
            return None
        problem = bearer_problem(request.headers.get("Authorization"), expected)
        if problem is not None:
            return _refused(401, problem, invalid=problem == INVALID_TOKEN)
        return None

    return check


#: What a caller hears when it sends no bearer token, or a wrong one (HTTP and gRPC alike).
NO_TOKEN = "this endpoint needs a bearer token: send the header 'Authorization: Bearer <token>'"
INVALID_TOKEN = "the bearer token is not valid"


def bearer_problem(authorization: str | None, expected: bytes) -> str | None:
    """None if ``authorization`` (the header, or gRPC's metadata) is ``Bearer <token>`` with
    the token whose ``token_digest`` is ``expected``; else what is wrong, for the caller."""
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return NO_TOKEN
    if not hmac.compare_digest(token_digest(credentials.strip()), expected):
        return INVALID_TOKEN
    return None


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _refused(status: int, message: str, invalid: bool = False) -> Response:
    if is_v2_request():
        response = v2_error_response(status, message)
    else:
        code = "unauthorized" if status == 401 else "forbidden"
        response = error_response(status, code, message)
    if status == 401:
        challenge = f'Bearer realm="{REALM}"'
        if invalid:
            challenge += ', error="invalid_token"'
        response.headers["WWW-Authenticate"] = challenge
    return response
