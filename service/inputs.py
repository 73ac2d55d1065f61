"""Request bodies -> the plain dict a request schema loads, whatever the content type.

* ``application/json``: the body, parsed by simdjson (see ``loads_json``);
* ``multipart/form-data``: the form fields, plus every uploaded file as ``images``;
* ``image/png`` (jpeg, gif, bmp, webp): the body is the one image; options come from the query
  string (``?preprocess=false``, ``?labels=3``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np
import simdjson
from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from service.errors import InvalidJSON, UnsupportedMediaType
from service.images import IMAGE_MIMETYPES

JSON_MIMETYPE = "application/json"
FORM_MIMETYPE = "multipart/form-data"
_SUPPORTED = f"{JSON_MIMETYPE}, {FORM_MIMETYPE} or image/png|jpeg|gif|bmp|webp"
#: One simdjson parser per thread, kept between requests: a new one allocates buffers the size
#: of the body every time, which cost more than the parse itself for a 100-digit batch.
_local = threading.local()
#: JSON nested deeper than this is refused (400) before anything recurses into it: a request
#: needs 4 levels (object, batch, rows, pixels) and numpy arrays have at most 64 dimensions.
MAX_JSON_DEPTH = 64


class JsonArray:
    """The ``inputs`` array as the parser left it: numbers not yet turned into Python objects.

    ``PixelBatch`` copies the numbers straight into numpy when the structure is provably a
    rectangular batch of numbers, else falls back to ``to_list()`` and numpy's own checks.
    ``brackets`` is how many ``[`` the body has outside the other values: the ones in this
    array, plus any inside strings (which only makes the fast path step aside).
    """

    __slots__ = ("array", "brackets")

    def __init__(self, array: simdjson.Array, brackets: int) -> None:
        self.array = array
        self.brackets = brackets

    def __len__(self) -> int:
        return len(self.array)

    def to_list(self) -> list[Any]:
        return _plain(self.array, in_array=False)  # type: ignore[no-any-return]


def request_payload(request: Request) -> Any:
    """The request's options and data as one mapping (not yet validated)."""
    mimetype = request.mimetype
    if mimetype == JSON_MIMETYPE:
        return loads_json(read_body(request))
    if mimetype == FORM_MIMETYPE:
        payload: dict[str, Any] = request.form.to_dict()
        files = [f.read() for key in request.files for f in request.files.getlist(key)]
        if files:
            payload["images"] = files
        return payload
    if mimetype in IMAGE_MIMETYPES:
        options: dict[str, Any] = request.args.to_dict()
        options["images"] = [read_body(request)]
        return options
    if not mimetype:
        raise UnsupportedMediaType(f"the request has no Content-Type; send {_SUPPORTED}")
    raise UnsupportedMediaType(f"Content-Type {mimetype!r} is not supported; send {_SUPPORTED}")


def read_body(request: Request) -> bytes:
    """The whole body, or 413 if it is over ``MAX_CONTENT_LENGTH`` however it is sent.

    werkzeug refuses a ``Content-Length`` over the limit before reading anything, but a body
    without one (``Transfer-Encoding: chunked``) it reads up to the limit and returns as if that
    were all of it. One more byte from the server's stream tells whether there was more.
    """
    body = request.get_data(cache=False)
    limit = request.max_content_length
    if (
        limit is not None
        and len(body) >= limit
        and request.content_length is None
        and request.environ["wsgi.input"].read(1)
    ):
        raise RequestEntityTooLarge(f"the body is over the limit of {limit} bytes")
    return body


def loads_json(body: bytes) -> Any:
    """Parse a JSON body; ``inputs`` stays a ``JsonArray``, everything else becomes Python.

    simdjson parses a batch of 100 digits 2-3x faster than orjson plus ``np.asarray``, and
    ``PixelBatch`` reads the numbers without making 78,400 Python floats. Two things are made
    visible to the validators that JSON parsers hide:

    * ``NaN``, ``Infinity`` and numbers like ``1e999`` (Python's ``json.dumps`` writes them) are
      not JSON; such a body is re-read with the json module, so the client gets the precise
      422 "must be finite" instead of 400 "not JSON";
    * numpy reads ``true`` as 1 in a list of numbers, so booleans inside arrays become ``None``,
      which the number fields refuse (the fast path refuses booleans by itself).

    A key given twice in one object is refused (400): simdjson's lookup finds the first value,
    Python's json and most others keep the last, so a proxy or logger in front could read
    another request than the one served.
    """
    try:
        doc = _parse(body)
    except (ValueError, RuntimeError):  # UnicodeDecodeError too; BIGINT_ERROR, DEPTH_ERROR
        return _loads_lenient(body)
    if not isinstance(doc, simdjson.Object):
        return _plain(doc, in_array=False)
    payload: dict[str, Any] = {}
    inputs = None
    for key in doc:  # (not items(): it would convert everything to Python)
        try:
            value = doc[key]
        except KeyError:  # a key simdjson cannot look up: one holding "\u0000"
            return _loads_lenient(body)
        if key in payload or (key == "inputs" and inputs is not None):
            raise duplicate_key(doc)
        if key == "inputs" and isinstance(value, simdjson.Array):
            inputs = value
        else:
            payload[key] = _plain(value, in_array=False)
    if inputs is not None:
        try:
            others = _count_lists(payload)  # lists in the other values; keys checked too
            brackets = _count_brackets(body) - others
        except _BracketInString:
            brackets = -1  # the count proves nothing: PixelBatch takes the exact path
        payload["inputs"] = JsonArray(inputs, brackets)
    return payload


def _parse(body: bytes) -> Any:
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    try:
        return parser.parse(body)
    except RuntimeError:  # a document of an earlier request is still referenced somewhere
        _local.parser = simdjson.Parser()
        return _local.parser.parse(body)


def _loads_lenient(body: bytes) -> Any:
    try:
        payload = json.loads(body.decode(), object_pairs_hook=unique_keys)  # UTF-8 only (RFC 8259)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _too_deep() from None
    return _plain(payload, in_array=False)


def _plain(value: Any, in_array: bool, depth: int = 0) -> Any:
    """Python objects for a parsed value, with ``None`` for booleans inside arrays."""
    if isinstance(value, simdjson.Array):
        value = value.as_list()
    elif isinstance(value, simdjson.Object):
        value = unique_dict(value)
    if isinstance(value, bool):
        return None if in_array else value
    if isinstance(value, list):
        if depth == MAX_JSON_DEPTH:
            raise _too_deep()
        return [_plain(v, True, depth + 1) for v in value]
    if isinstance(value, dict):
        if depth == MAX_JSON_DEPTH:
            raise _too_deep()
        return {k: _plain(v, False, depth + 1) for k, v in value.items()}
    return value


def duplicate_key(keys: Iterable[str]) -> InvalidJSON:
    """The 400 for an object that gives a key twice; ``keys`` are its keys in order."""
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            break
        seen.add(key)
    return InvalidJSON(f"the key {key!r} is given twice in one object; send it once")


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for ``json.loads``: the object as a dict, refusing a key given twice."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise duplicate_key(key for key, _ in pairs)
    return result


def unique_dict(value: simdjson.Object) -> dict[str, Any]:
    """A parsed object as a dict, refusing a key given twice in it (not in objects nested in it:
    no request has those, so they are refused for their place anyway)."""
    result = value.as_dict()
    if len(result) != len(value):
        raise duplicate_key(value)
    return result


def _too_deep() -> InvalidJSON:
    return InvalidJSON(f"the body is nested more than {MAX_JSON_DEPTH} levels deep")


def _count_brackets(body: bytes) -> int:
    if len(body) < 64 * 1024:
        return body.count(b"[")
    return int(np.count_nonzero(np.frombuffer(body, np.uint8) == ord("[")))  # 3x faster


class _BracketInString(Exception):
    pass


def _count_lists(value: Any) -> int:
    """How many lists a plain value holds; raises ``_BracketInString`` if a string has a ``[``."""
    if isinstance(value, list):
        return 1 + sum(_count_lists(v) for v in value)
    if isinstance(value, dict):
        return sum(_count_lists(k) + _count_lists(v) for k, v in value.items())
    if isinstance(value, str) and "[" in value:
        raise _BracketInString
    return 0
