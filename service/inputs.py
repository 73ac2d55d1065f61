"""Request bodies -> the plain dict a request schema loads, whatever the content type.

* ``application/json``: the body, parsed with orjson;
* ``multipart/form-data``: the form fields, plus every uploaded file as ``images``;
* ``image/png`` (jpeg, gif, bmp, webp): the body is the one image; options come from the query
  string (``?preprocess=false``, ``?labels=3``).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask import Request

from service.errors import InvalidJSON, UnsupportedMediaType
from service.images import IMAGE_MIMETYPES

JSON_MIMETYPE = "application/json"
FORM_MIMETYPE = "multipart/form-data"
_SUPPORTED = f"{JSON_MIMETYPE}, {FORM_MIMETYPE} or image/png|jpeg|gif|bmp|webp"


def request_payload(request: Request) -> Any:
    """The request's options and data as one mapping (not yet validated)."""
    mimetype = request.mimetype
    if mimetype == JSON_MIMETYPE:
        return loads_json(request.get_data(cache=False))
    if mimetype == FORM_MIMETYPE:
        payload: dict[str, Any] = request.form.to_dict()
        files = [f.read() for key in request.files for f in request.files.getlist(key)]
        if files:
            payload["images"] = files
        return payload
    if mimetype in IMAGE_MIMETYPES:
        payload = request.args.to_dict()
        payload["images"] = [request.get_data(cache=False)]
        return payload
    if not mimetype:
        raise UnsupportedMediaType(f"the request has no Content-Type; send {_SUPPORTED}")
    raise UnsupportedMediaType(f"Content-Type {mimetype!r} is not supported; send {_SUPPORTED}")


def loads_json(body: bytes) -> Any:
    """Parse a JSON body with orjson, keeping the validators strict about two things it can't see.

    * ``NaN``, ``Infinity`` and numbers like ``1e999`` (Python's ``json.dumps`` writes them) are
      not JSON, so orjson refuses them; they are re-read with the json module so the client gets
      the precise 422 "must be finite" instead of 400 "not JSON".
    * numpy reads ``true`` as 1 in a list of numbers, so booleans inside arrays become ``None``,
      which the number fields refuse. The scan only runs when the body has a ``true``/``false``.
    """
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise InvalidJSON(f"the body is not valid JSON: {exc}") from None
    if b"true" in body or b"false" in body:
        payload = _nulls_for_bools(payload, in_array=False)
    return payload


def _nulls_for_bools(value: Any, in_array: bool) -> Any:
    if isinstance(value, bool):
        return None if in_array else value
    if isinstance(value, list):
        return [_nulls_for_bools(v, True) for v in value]
    if isinstance(value, dict):
        return {k: _nulls_for_bools(v, False) for k, v in value.items()}
    return value
