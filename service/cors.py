"""CORS, so that pages on other origins can call the API from a browser: off unless
``CORS_ORIGINS`` lists origins (or ``*``).

Every answer to a listed origin carries ``Access-Control-Allow-Origin`` (errors too, so a page
can read them) and exposes the headers a client reads; a preflight (OPTIONS with
``Access-Control-Request-Method``) also gets the route's methods, the request headers the API
takes and how long to cache all that. No credentials (cookies): the API's only credential is
the bearer token, which a page sends as a header. Preflights pass ``service.auth`` unchecked.

A small ``after_request`` rather than flask-cors: the behaviour needed is fixed and short, it
costs nothing while off (the default), and none of the general machinery (resource patterns,
origin regexes) is there to misconfigure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flask import Flask, Response, request

#: Request headers a page may send: the token, JSON bodies, request ids, binary tensors.
ALLOW_HEADERS = "Authorization, Content-Type, Content-Encoding, X-Request-ID, Inference-Header-Content-Length"
#: Response headers a page may read beyond the simple ones.
EXPOSE_HEADERS = "X-Request-ID, Inference-Header-Content-Length, WWW-Authenticate, Allow"
#: Seconds a browser may cache a preflight's answer.
MAX_AGE = 600


def register_cors(app: Flask, origins: Iterable[str]) -> None:
    origins = frozenset(origins)
    if origins:
        app.after_request(_cors(origins))


def _cors(origins: frozenset[str]) -> Callable[[Response], Response]:
    any_origin = "*" in origins

    def add_headers(response: Response) -> Response:
        if not any_origin:
            response.vary.add("Origin")  # the answer differs by origin: caches must know
        origin = request.headers.get("Origin")
        if origin is None or not (any_origin or origin in origins):
            return response
        headers = response.headers
        headers["Access-Control-Allow-Origin"] = "*" if any_origin else origin
        headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            headers["Access-Control-Allow-Methods"] = headers.get("Allow", "")
            headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            headers["Access-Control-Max-Age"] = str(MAX_AGE)
        return response

    return add_headers
