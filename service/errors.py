"""One error shape for every error, and the handlers that produce it.

Every 4xx and 5xx answer has the body::

    {"error": {"status": 422, "code": "validation_error", "message": "...", "details": {...}}}

``details`` is present when there is something structured to say; for validation errors it is
marshmallow's ``err.messages`` (field name -> list of messages, nested for list items).
Domain errors carry their HTTP status; ``register_error_handlers`` turns them, marshmallow's
``ValidationError``, werkzeug's ``HTTPException`` and anything unexpected into that shape.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import orjson
from flask import Flask, Response, request
from gunicorn.http.errors import ParseException
from marshmallow import ValidationError
from werkzeug.exceptions import ClientDisconnected, HTTPException

log = logging.getLogger(__name__)

JSON_MIMETYPE = "application/json"


class StartupError(Exception):
    """A bad setting or model file: the server must not start. ``str()`` is one line."""


class APIError(Exception):
    """A client mistake (or a server fault) with its HTTP status and a stable ``code``."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidJSON(APIError):
    status = 400
    code = "invalid_json"


class ModelNotFound(APIError):
    status = 404
    code = "model_not_found"


class VersionNotFound(ModelNotFound):
    """The model exists but not that version (or that version failed validation)."""

    code = "version_not_found"


class BodyNotReceived(APIError):
    """The request's body did not arrive whole: a client error (400), never a 500.

    Raised where the body is read (``service.inputs``), so every protocol answers it in its own
    shape; logged as one warning line, without a traceback (nothing in the service failed).
    """

    status = 400
    code = "body_not_received"

    @classmethod
    def from_error(cls, exc: BaseException) -> BodyNotReceived:
        """From what the server's stream raised: gunicorn's parser errors for a chunked body (a
        bad chunk size, a chunk without its CRLF, a bad trailer), the end of the stream in
        mid-chunk, a reset or timeout of the connection, werkzeug's ``ClientDisconnected``."""
        if isinstance(exc, ParseException):
            what = f"the chunked body is malformed ({type(exc).__name__}: {exc})"
        elif isinstance(exc, ClientDisconnected | OSError):
            what = f"the client stopped sending before the end of the body ({type(exc).__name__})"
        else:
            what = f"the body could not be read ({type(exc).__name__})"
        return cls._logged(what)

    @classmethod
    def cut_short(cls, got: int, expected: int) -> BodyNotReceived:
        return cls._logged(f"the body ended after {got} of its {expected} bytes (Content-Length)")

    @classmethod
    def _logged(cls, what: str) -> BodyNotReceived:
        log.warning("request body not received: %s", what)
        return cls(f"{what}; send the whole body, framed by Content-Length or valid chunks")


#: What reading a request body can raise when the body does not arrive whole (``BodyNotReceived``):
#: gunicorn's parser errors (chunk size, terminator, extension, trailers), its ``NoMoreData`` (an
#: OSError) and the socket's own errors, werkzeug's ``ClientDisconnected`` (other servers).
BODY_ERRORS: tuple[type[BaseException], ...] = (ParseException, OSError, ClientDisconnected)


class ImageTooLarge(APIError):
    """An image whose pixel count is over the limit (a decompression bomb, or just too big)."""

    status = 413
    code = "image_too_large"


class NotAcceptable(APIError):
    """The answer cannot take the media type the client asked for (Accept)."""

    status = 406
    code = "not_acceptable"


class UnsupportedMediaType(APIError):
    status = 415
    code = "unsupported_media_type"


class NotReady(APIError):
    """The server answers, but has no valid default model to serve."""

    status = 503
    code = "not_ready"


class RequestValidationError(APIError):
    status = 422
    code = "validation_error"


#: werkzeug's exceptions -> our codes; anything else becomes its name in snake case.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal_error",
}


def error_response(status: int, code: str, message: str, details: Any = None) -> Response:
    error: dict[str, Any] = {"status": status, "code": code, "message": message}
    if details is not None:
        error["details"] = details
    # marshmallow keys list items by index: integers, which orjson writes only when told to
    try:
        body = orjson.dumps({"error": error}, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:  # a lone surrogate echoed from a body json.loads read: sent
        # as "?", since strict parsers (orjson too) refuse a lone "\ud800" escape
        body = json.dumps({"error": error}, ensure_ascii=False).encode(errors="replace")
    return Response(body, status=status, mimetype=JSON_MIMETYPE)


#: Routes under this prefix speak the Open Inference Protocol (``service/v2.py``), whose errors
#: are ``{"error": "<message>"}``. Its blueprint handles its views' errors; routing errors (404,
#: 405) reach the handlers here before any blueprint is chosen, so these check the path.
V2_PREFIX = "/v2"
#: The blueprints whose routes answer ``{"error": "<message>"}``: the Open Inference Protocol's
#: (``service/v2.py``) and TF Serving's (``service/tfserving.py``).
PLAIN_BLUEPRINTS = frozenset({"v2", "tfserving"})
#: TF Serving's routes: ``/v1/models/<name>[/versions/<v>]`` then ``:predict``, ``:explain`` or
#: ``/metadata``. Only for paths no route matched (404, 405): a matched route's blueprint decides.
_TFSERVING_PATH = re.compile(r"/v1/models/[^/]+(?:/versions/[^/]+)?(?::predict|:explain|/metadata)")


def v2_error_response(status: int, message: str) -> Response:
    """An error in the Open Inference Protocol's shape: ``{"error": "<message>"}``."""
    try:
        body = orjson.dumps({"error": message})
    except orjson.JSONEncodeError:  # a lone surrogate, as in error_response
        body = json.dumps({"error": message}, ensure_ascii=False).encode(errors="replace")
    return Response(body, status=status, mimetype=JSON_MIMETYPE)


def plain_error(exc: Exception) -> Response:
    """An error of the protocols that answer ``{"error": "<message>"}`` (Open Inference
    Protocol, TF Serving): their blueprints' error handler."""
    if isinstance(exc, APIError):
        message = exc.message
        available = exc.details.get("available") if isinstance(exc.details, dict) else None
        if available:
            message += f" (available: {', '.join(available)})"
        return v2_error_response(exc.status, message)
    if isinstance(exc, HTTPException):
        return v2_error_response(exc.code or 500, exc.description or exc.name)
    log.exception("unhandled error")
    return v2_error_response(500, "internal server error")


def describe_messages(messages: Any, path: str = "") -> str:
    """marshmallow's messages as one line: ``inputs[0].datatype: Must be one of: ...``."""
    if isinstance(messages, dict):
        parts = []
        for key, value in messages.items():
            if isinstance(key, int):
                where = f"{path}[{key}]"
            elif key == "_schema":
                where = path
            else:
                where = f"{path}.{key}" if path else str(key)
            parts.append(describe_messages(value, where))
        return "; ".join(parts)
    if isinstance(messages, list):
        text = " ".join(str(m) for m in messages)
        return f"{path}: {text}" if path else text
    return f"{path}: {messages}" if path else str(messages)


def is_v2_request() -> bool:
    """The request's route speaks the Open Inference Protocol or TF Serving's REST protocol,
    whose errors are ``{"error": "..."}``. The matched route decides: ``GET /v1/models/a:b`` is
    v1's model-info route, whatever the name holds. Without one (404, 405), the path does."""
    if request.url_rule is not None:
        return request.blueprint in PLAIN_BLUEPRINTS
    return plain_error_path(request.path)


def plain_error_path(path: str) -> bool:
    """The path is one of the routes that answer ``{"error": "..."}``: for paths no route matched."""
    if path == V2_PREFIX or path.startswith(V2_PREFIX + "/"):
        return True
    return _TFSERVING_PATH.fullmatch(path) is not None


def _api_error(exc: APIError) -> Response:
    if is_v2_request():  # e.g. GET /v1/models/mnist:predict, which the model-info route takes
        return plain_error(exc)
    return error_response(exc.status, exc.code, exc.message, exc.details)


def _validation_error(exc: ValidationError) -> Response:
    messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    return error_response(422, "validation_error", "the request is not valid", messages)


def _http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    if is_v2_request():
        response = v2_error_response(status, exc.description or exc.name)
    else:
        code = _HTTP_CODES.get(status) or (exc.name or "error").lower().replace(" ", "_")
        response = error_response(status, code, exc.description or exc.name)
    if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    return response


def _unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):  # Flask routes these here when no closer handler exists
        return _http_exception(exc)
    log.exception("unhandled error")
    if is_v2_request():
        return v2_error_response(500, "internal server error")
    return error_response(500, "internal_error", "internal server error")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(APIError, _api_error)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(HTTPException, _http_exception)
    app.register_error_handler(Exception, _unexpected)
