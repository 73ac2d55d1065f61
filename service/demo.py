"""The browser demo: ``GET /`` is a page to draw a digit (or drop an image) and see the prediction.

The page is plain HTML, CSS and JavaScript in ``service/static/demo/`` (no build step, nothing
from a CDN: its Content-Security-Policy allows this server only), its assets served by the app's
``/static/`` route. Every URL in it is relative to the page, so it works at ``/`` and under a path
prefix, whether a WSGI server sets the prefix as ``SCRIPT_NAME`` or a proxy strips it.

The page shows what the model sees, so this module also adds ``POST /v1/models/<name>/preprocess``
(and ``/preprocess`` for the default model): it takes exactly what predict takes and answers with
the model's inputs as predict computes them, e.g. the 28x28 field an uploaded image becomes.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from flask import Blueprint, Response, redirect, request
from flask.typing import ResponseReturnValue
from marshmallow import Schema, fields

from service.inputs import request_payload
from service.routes import route
from service.schemas import PixelBatch, PredictRequestSchema
from service.state import lookup
from service.views import inference, json_response

demo = Blueprint("demo", __name__)

PAGE = "static/demo/index.html"
#: Scripts, styles and requests from this server only; images also from the page's own blobs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


class PreprocessResponseSchema(Schema):
    model = fields.String(required=True)
    version = fields.String(required=True, metadata={"description": "Hash of the model file."})
    shape = fields.List(
        fields.Integer(),
        required=True,
        metadata={
            "description": "The shape of each input: the model's image grid (28x28 for MNIST), "
            "else its input shape.",
        },
    )
    inputs = PixelBatch(
        required=True,
        metadata={
            "description": "Per request input, what the network is given: numbers in [0, 1], white "
            "ink on black, in the form predict's 'inputs' accepts.",
        },
    )


@route(
    demo,
    "/",
    summary="The browser demo: draw a digit, see the prediction.",
    tags=("demo",),
    access="open",
    response_content={"text/html": {"schema": {"type": "string"}}},
    response_description="An HTML page",
)
def page() -> ResponseReturnValue:
    if not request.environ.get("PATH_INFO"):
        # Mounted at /prefix and asked for /prefix: the page's relative URLs need /prefix/.
        return redirect(request.script_root + "/", code=308)
    response = Response(_page(), mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@cache
def _page() -> bytes:
    return resources.files("service").joinpath(PAGE).read_bytes()


@route(
    demo,
    "/v1/models/<name>/preprocess",
    "/preprocess",
    **inference(
        "preprocess",
        "The model's inputs as predict computes them, e.g. the 28x28 field of an image.",
        PredictRequestSchema,
        PreprocessResponseSchema,
    ),
)
def preprocess(name: str | None = None) -> Response:
    endpoint = lookup(name)
    data = endpoint.schemas.predict.load(request_payload(request))
    model = endpoint.model
    shape = model.image_size or model.input_shape
    x = data["x"]
    return json_response(
        {
            "model": model.name,
            "version": model.version,
            "shape": list(shape),
            "inputs": x.reshape(len(x), *shape).tolist(),
        }
    )
