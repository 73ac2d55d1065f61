"""Request bodies -> the plain dict a request schema loads, whatever the content type.

* ``application/json``: the body, parsed by simdjson (see ``loads_json``);
* ``multipart/form-data``: the form fields, plus every uploaded file as ``images``;
* ``image/png`` (jpeg, gif, bmp, webp): the body is the one image; options come from the query
  string (``?preprocess=false``, ``?labels=3``).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np
import simdjson
from flask import Request
from numpy.typing import NDArray
from werkzeug.exceptions import RequestEntityTooLarge

from service.errors import (
    BODY_ERRORS,
    BodyNotReceived,
    InvalidJSON,
    RequestValidationError,
    UnsupportedMediaType,
)
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


class NotNumbers(ValueError):
    """A ``JsonArray`` holds something other than numbers where numbers must be."""


class JsonArray:
    """An array of numbers as the parser left it: not yet turned into Python objects.

    The data plane (``service.dataplane``) reads it straight into numpy: ``rows`` when it must
    prove the structure is a rectangular batch (v1's ``inputs``), ``flat`` when a declared shape
    says how many numbers there must be (v2's ``data``). ``brackets`` is how many ``[`` the body
    has outside the other values: the ones in this array, plus any inside strings (which only
    makes ``rows`` step aside); -1 when that cannot be known.
    """

    __slots__ = ("_body", "_others", "array")

    def __init__(self, array: simdjson.Array) -> None:
        self.array = array
        self._body = b""  # (set by loads_json when the count is possible)
        self._others = -1

    @property
    def brackets(self) -> int:
        """Counted when asked (only ``rows`` needs it): the ``[`` in the whole body, less the
        lists in the other values of the payload this array sits in."""
        return _count_brackets(self._body) - self._others if self._others >= 0 else -1

    def __len__(self) -> int:
        return len(self.array)

    def to_list(self) -> list[Any]:
        return _plain(self.array, in_array=False)  # type: ignore[no-any-return]

    def flat(self) -> NDArray[np.float64] | None:
        """Every number in row-major order, however the array nests them; None if anything
        but numbers is in it (a string, boolean, null or object)."""
        try:
            return np.frombuffer(self.array.as_buffer(of_type="d"), dtype=np.float64)
        except TypeError:
            return None

    def rows(self) -> NDArray[np.float64] | None:
        """The numbers (N, D) or (N, H, W) when the array is provably a batch of equal inputs,
        each a list of numbers or a grid of equal rows (``NotNumbers`` if anything but numbers is
        among them). None when the structure is not that simple (or cannot be proved so); the
        caller then reads ``to_list()`` instead.

        Proof: every input has the first one's length (of arrays of equal length), and the body
        has no ``[`` beyond those arrays, so every leaf is a scalar.
        """
        rows: Any = self.array  # (simdjson's type hints do not narrow on isinstance)
        array = simdjson.Array
        if not len(rows):
            return None
        first = rows[0]
        if not isinstance(first, array) or not len(first):
            return None
        if isinstance(first[0], array):  # inputs as grids of rows
            height, width = len(first), len(first[0])
            if any(
                not isinstance(row, array)
                or len(row) != height
                or any(not isinstance(line, array) or len(line) != width for line in row)
                for row in rows
            ):
                return None
            shape: tuple[int, ...] = (len(rows), height, width)
            brackets = 1 + len(rows) * (1 + height)
        else:
            width = len(first)
            if any(not isinstance(row, array) or len(row) != width for row in rows):
                return None
            shape = (len(rows), width)
            brackets = 1 + len(rows)
        if brackets != self.brackets:
            return None
        flat = self.flat()
        if flat is None:
            raise NotNumbers
        return flat.reshape(shape)


#: Where each protocol's numbers are, as paths into the body ("*": every item of an array;
#: "a|b": the key a or b): v1's top-level ``inputs``, the Open Inference Protocol's ``data`` of
#: each of ``inputs``, TF Serving's ``instances`` (rows) or ``inputs`` (columns).
V1_NUMBERS = ("inputs",)
V2_NUMBERS = ("inputs", "*", "data")
TFSERVING_NUMBERS = ("instances|inputs",)


def request_payload(request: Request) -> Any:
    """The request's options and data as one mapping (not yet validated)."""
    request = _unproxied(request)
    mimetype = request.mimetype
    if mimetype == JSON_MIMETYPE:
        _no_query_options(request)
        return loads_json(read_body(request))
    if mimetype == FORM_MIMETYPE:
        _no_query_options(request)
        # read whole first, as every body is (a multipart parser takes a body cut short for a
        # form with fewer parts: a 422 instead of the 400 it is), then parsed from memory
        body = read_body(request)
        parser = request.make_form_data_parser()
        _, form, uploads = parser.parse(io.BytesIO(body), mimetype, len(body), request.mimetype_params)
        payload: dict[str, Any] = form.to_dict()
        files = []
        for upload in (f for key in uploads for f in uploads.getlist(key)):
            try:
                files.append(upload.read())
            finally:
                upload.close()  # (spooled to a temporary file when large)
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


def _unproxied(request: Request) -> Request:
    """The request itself for Flask's ``request`` proxy: each attribute read through the proxy
    costs about a microsecond, and a request reads a dozen."""
    get: Any = getattr(request, "_get_current_object", None)
    return get() if get is not None else request


def _no_query_options(request: Request) -> None:
    """Options in the query string are for raw image bodies, which have nowhere else to put
    them; beside a JSON or form body they would be silently ignored, so they are refused (422)."""
    if request.environ.get("QUERY_STRING") and request.args:
        raise RequestValidationError(
            "query parameters are only for raw image bodies; send options in the body",
            {name: ["Send this in the body, not in the query string."] for name in sorted(request.args)},
        )


def read_body(request: Request) -> bytes:
    """The whole body, or 413 if it is over ``MAX_CONTENT_LENGTH`` however it is sent, or 400
    (``BodyNotReceived``) if it did not arrive whole.

    werkzeug refuses a ``Content-Length`` over the limit before reading anything, but a body
    without one (``Transfer-Encoding: chunked``) it reads up to the limit and returns as if that
    were all of it. One more byte from the server's stream tells whether there was more.

    Under gunicorn (which ends the stream at ``Content-Length`` itself:
    ``wsgi.input_terminated``), a body with a ``Content-Length`` within the limit is read from
    the server's stream in one call, as werkzeug would, without its stream wrappers, which
    cost a tenth of a single-image request. gunicorn returns what it got when the client stops
    early, so the length is compared.
    """
    request = _unproxied(request)
    environ = request.environ
    limit = request.max_content_length
    length = environ.get("CONTENT_LENGTH")
    try:
        if (
            length
            and length.isascii()
            and length.isdigit()
            and limit is not None
            and int(length) <= limit
            and "wsgi.input_terminated" in environ
            and "HTTP_TRANSFER_ENCODING" not in environ
        ):
            body: bytes = environ["wsgi.input"].read()
            if len(body) != int(length):
                raise BodyNotReceived.cut_short(len(body), int(length))
            return body
        body = request.get_data(cache=False)
        expected = request.content_length
        if expected is not None and len(body) != expected:  # (a server that returns what came)
            raise BodyNotReceived.cut_short(len(body), expected)
        if limit is not None and len(body) >= limit and expected is None and environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge(f"the body is over the limit of {limit} bytes")
    except BODY_ERRORS as exc:
        raise BodyNotReceived.from_error(exc) from None
    return body


def loads_json(body: bytes, numbers: tuple[str, ...] = V1_NUMBERS) -> Any:
    """Parse a JSON body: the arrays at the path ``numbers`` stay ``JsonArray``, everything else
    becomes Python. The one JSON reader of every protocol.

    simdjson parses a batch of 100 digits 2-3x faster than orjson plus ``np.asarray``, and a
    ``JsonArray`` is read into numpy without making 78,400 Python floats. What JSON parsers hide
    is made visible to the validators:

    * ``NaN``, ``Infinity`` and numbers like ``1e999`` (Python's ``json.dumps`` writes them) are
      not JSON; such a body is re-read with the json module, so the client gets the precise
      "must be finite" instead of 400 "not JSON" (the arrays are then plain lists);
    * numpy reads ``true`` as 1 in a list of numbers, so booleans inside arrays become ``None``,
      which the number checks refuse (``JsonArray`` refuses booleans by itself);
    * a key given twice in one object is refused (400): simdjson's lookup finds the first value,
      Python's json and most others keep the last, so a proxy or logger in front could read
      another request than the one served;
    * nesting deeper than ``MAX_JSON_DEPTH`` is refused (400) before anything recurses into it.
    """
    try:
        doc = _parse(body)
    except (ValueError, RuntimeError):  # UnicodeDecodeError too; BIGINT_ERROR, DEPTH_ERROR
        return _loads_lenient(body)
    found: list[JsonArray] = []
    try:
        payload = _convert(doc, numbers, found, 0)
    except KeyError:  # a key simdjson cannot look up: one holding "\u0000"
        return _loads_lenient(body)
    if len(found) == 1:  # the proof of structure (JsonArray.rows) can count brackets
        try:
            found[0]._others = _count_lists(payload)
            found[0]._body = body  # (not the payload: it holds the array, a reference cycle
            # that would keep the parser's document alive, and the next parse would need a
            # new parser)
        except _BracketInString:  # the count proves nothing: rows() steps aside
            pass
    return payload


def _convert(value: Any, path: tuple[str, ...], found: list[JsonArray], depth: int) -> Any:
    """``_plain`` except along ``path``, whose end stays a ``JsonArray``."""
    if not path:
        if isinstance(value, simdjson.Array):
            found.append(JsonArray(value))
            return found[-1]
        return _plain(value, in_array=False, depth=depth)
    if depth == MAX_JSON_DEPTH:
        raise _too_deep()
    step, rest = path[0], path[1:]
    if step == "*" and isinstance(value, simdjson.Array):
        return [_convert(item, rest, found, depth + 1) for item in value]
    if step != "*" and isinstance(value, simdjson.Object):
        result: dict[str, Any] = {}
        keys = step.split("|") if "|" in step else (step,)
        for key in value:  # (not items(): it would convert everything to Python)
            if key in result:
                raise duplicate_key(value)
            item = value[key]
            if key not in keys:
                result[key] = _plain(item, in_array=False, depth=depth + 1)
            elif not rest and isinstance(item, simdjson.Array):
                found.append(JsonArray(item))
                result[key] = found[-1]
            else:
                result[key] = _convert(item, rest, found, depth + 1)
        return result
    return _plain(value, in_array=False, depth=depth)


def parse_floor(body: bytes) -> NDArray[np.float64]:
    """The numbers of a v1 body's ``inputs`` by simdjson alone, nothing checked: the floor that
    ``loads_json`` is measured against (``POST /_bench/stages/parse``, ``BENCH_NOOP=1``).
    A body that is not JSON with ``inputs`` holding only numbers: ``InvalidJSON`` (400)."""
    try:
        return np.frombuffer(_parse(body)["inputs"].as_buffer(of_type="d"), dtype=np.float64)
    except (ValueError, RuntimeError, KeyError, TypeError, AttributeError):
        raise InvalidJSON('the body is not JSON of the form {"inputs": [numbers, ...]}') from None


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


#: Types a parsed scalar has, returned as they are (bool is not among them: see ``_plain``).
_SCALARS = frozenset({str, int, float, type(None)})


def _plain(value: Any, in_array: bool, depth: int = 0) -> Any:
    """Python objects for a parsed value, with ``None`` for booleans inside arrays."""
    if type(value) in _SCALARS:  # most values: one set lookup instead of five isinstance calls
        return value
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
    """How many lists a plain value holds (``JsonArray`` ones aside); raises
    ``_BracketInString`` if a string has a ``[``."""
    if isinstance(value, list):
        return 1 + sum(_count_lists(v) for v in value)
    if isinstance(value, dict):
        return sum(_count_lists(k) + _count_lists(v) for k, v in value.items())
    if isinstance(value, str) and "[" in value:
        raise _BracketInString
    return 0
