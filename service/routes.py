"""Routes declared once: ``route`` registers a view's URL rules and says what the OpenAPI document
and the auth check need to know of them, in the same place.

    @route(api, "/v1/models/<name>/predict", "/predict", method="POST", tags=("inference",),
           summary="...", request=PredictRequestSchema, response=PredictResponseSchema)
    def predict(name=None): ...

``service.openapi`` walks the app's URL map and documents every rule from its view's
``Operation`` (a served route without one stops start-up), so a route cannot be served
undocumented or documented without being served. ``service.auth`` reads ``access`` from the
same declarations. Only the documents themselves (``/openapi.json``, the Swagger UI under
``/docs``) and the static files are served undocumented: ``DOCUMENT_ENDPOINTS``.

As in flask-smorest, the schemas of a route are named where it is declared; unlike it, they
only document: request bodies are loaded by the data plane's own readers (``service.inputs``),
which are several times faster on the hot path than a generic argument parser.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from flask import Blueprint, Flask
from marshmallow import Schema

#: open: anyone; token: the bearer token when the server has one; admin: always the token.
Access = Literal["open", "token", "admin"]
#: The attribute a declared view function carries its ``Operation`` in.
OPERATION = "operation"
#: The attribute that marks a view serving an API document (``document_only``).
DOCUMENT = "serves_document"
#: Blueprints and endpoints that serve API documents and static files, not the API: Swagger UI's
#: page and assets, and Flask's static files (the demo page's scripts).
DOCUMENT_BLUEPRINTS = frozenset({"swagger_ui"})
DOCUMENT_ENDPOINTS = frozenset({"static"})

View = TypeVar("View", bound=Callable[..., Any])


@dataclass(frozen=True)
class Operation:
    """What the OpenAPI document says of a view (every rule of it), and who may call it."""

    summary: str
    tags: tuple[str, ...]
    access: Access = "token"
    #: The JSON body's schema, and any other media types the body may have.
    request: type[Schema] | None = None
    request_content: Mapping[str, Any] = field(default_factory=dict)
    #: The status of a success (201 for a route that stores what it is sent).
    status: int = 200
    #: The success answer: a JSON schema, or other media types.
    response: type[Schema] | None = None
    response_content: Mapping[str, Any] = field(default_factory=dict)
    response_headers: Mapping[str, Any] = field(default_factory=dict)
    response_description: str = "OK"
    #: status -> description of the errors it may answer, in the shape of ``error``.
    errors: Mapping[str, str] = field(default_factory=dict)
    error: type[Schema] | None = None
    #: Query and header parameters (path parameters come from the rule).
    parameters: tuple[Mapping[str, Any], ...] = ()
    #: OpenAPI links from the 200 answer to other operations (by operationId).
    links: Mapping[str, Any] = field(default_factory=dict)
    #: The operationId of the rule with every path parameter; the others get a suffix.
    operation_id: str | None = None


def route(bp: Blueprint, *rules: str, method: str = "GET", **operation: Any) -> Callable[[View], View]:
    """Register ``rules`` for the decorated view on ``bp`` and declare its ``Operation``."""
    declared = Operation(**operation)

    def register(view: View) -> View:
        setattr(view, OPERATION, declared)
        for rule in rules:
            bp.add_url_rule(rule, endpoint=view.__name__, view_func=view, methods=[method])
        return view

    return register


def document_only(bp: Blueprint, rule: str) -> Callable[[View], View]:
    """Register a route that serves an API document: served, never documented, always open."""

    def register(view: View) -> View:
        setattr(view, DOCUMENT, True)
        bp.add_url_rule(rule, endpoint=view.__name__, view_func=view, methods=["GET"])
        return view

    return register


def is_document(app: Flask, endpoint: str) -> bool:
    """True for the routes that serve the API documents and static files."""
    blueprint = endpoint.rpartition(".")[0]
    view = app.view_functions.get(endpoint)
    return (
        blueprint in DOCUMENT_BLUEPRINTS or endpoint in DOCUMENT_ENDPOINTS or getattr(view, DOCUMENT, False)
    )


def operation_of(app: Flask, endpoint: str) -> Operation | None:
    """The declared ``Operation`` of ``endpoint``'s view, or None."""
    view = app.view_functions.get(endpoint)
    return getattr(view, OPERATION, None)


def access_of(app: Flask, endpoint: str) -> Access:
    """Who may call ``endpoint``: the documents are open; an undeclared route needs the token."""
    if is_document(app, endpoint):
        return "open"
    operation = operation_of(app, endpoint)
    return operation.access if operation is not None else "token"
