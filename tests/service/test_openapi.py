"""The OpenAPI document: generated from the routes the app serves, and only those."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest
from flask import Blueprint, Flask
from flask.testing import FlaskClient
from service_testkit import TEST_MAX_BATCH

from service import create_app
from service.openapi import SERVER_ERRORS, UndocumentedRoute, build_openapi
from service.routes import access_of, is_document, route
from service.settings import Settings
from service.state import EXTENSION, ServiceState

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
ERROR = "#/components/schemas/Error"


def document(app: Flask) -> dict[str, Any]:
    return json.loads(app.extensions[EXTENSION].openapi)  # type: ignore[no-any-return]


def served(app: Flask) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every route the app serves but the documents themselves."""
    return {
        (re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if not is_document(app, rule.endpoint)
        for method in rule.methods & METHODS  # type: ignore[operator]
    }


def documented(app: Flask) -> set[tuple[str, str]]:
    return {(path, method) for path, ops in document(app)["paths"].items() for method in ops}


def test_the_served_routes_are_exactly_the_documented_ones(app: Flask, settings: Settings) -> None:
    assert served(app) == documented(app)
    assert ("/v1/models/{name}/versions/{version}/preprocess", "post") not in documented(app)  # not served
    bench = create_app(replace(settings, bench_noop=True))  # a route that only some servers have
    assert ("/_bench/noop", "post") in served(bench) == documented(bench)
    assert ("/_bench/noop", "post") not in documented(app)


def test_the_documents_themselves_are_served_undocumented(client: FlaskClient, app: Flask) -> None:
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs/").status_code == 200
    assert not {path for path, _ in documented(app)} & {"/openapi.json", "/docs/", "/static/{filename}"}


def test_a_route_served_without_a_declaration_stops_start_up(settings: Settings) -> None:
    app = create_app(settings)
    extra = Blueprint("extra", __name__)
    extra.add_url_rule("/undeclared", view_func=lambda: "", endpoint="undeclared")
    app.register_blueprint(extra)
    with pytest.raises(UndocumentedRoute, match=r"route /undeclared \(extra.undeclared\) is not declared"):
        build_openapi(app, app.extensions[EXTENSION])


def test_a_declared_route_is_documented_with_its_access(settings: Settings) -> None:
    app = create_app(settings)
    extra = Blueprint("extra", __name__)

    @route(extra, "/v1/models/<name>/extra", method="POST", summary="An extra.", tags=("x",), access="admin")
    def extra_view(name: str) -> str:
        return name

    app.register_blueprint(extra)
    spec = build_openapi(app, app.extensions[EXTENSION])
    operation = spec["paths"]["/v1/models/{name}/extra"]["post"]
    assert (operation["operationId"], operation["security"]) == ("extra_view", [{"bearerAuth": []}])
    assert operation["parameters"][0]["schema"]["enum"] == ["fashion-mnist", "mnist"]
    assert access_of(app, "extra.extra_view") == "admin"


def test_schemas_come_from_marshmallow(app: Flask) -> None:
    components = document(app)["components"]["schemas"]
    predict = components["PredictRequest"]["properties"]
    assert predict["images"]["items"]["format"] == "byte"
    assert predict["pixel_range"]["enum"] == ["0-1", "0-255"]
    assert components["LossRequest"]["required"] == ["labels"]
    assert components["LossRequest"]["properties"]["loss"]["enum"] == ["cross_entropy", "mean_squared_error"]
    assert components["Error"]["properties"]["error"]["$ref"].endswith("ErrorBody")
    assert set(components) >= {
        "PredictResponse",
        "LossResponse",
        "AccuracyResponse",
        "ModelInfo",
        "ModelList",
        "Status",
        "ReloadReport",
        "Error",
    }


def test_the_schemas_carry_the_models_real_limits(app: Flask) -> None:
    """So that a client or fuzzer generating from the document reaches the network."""
    components = document(app)["components"]["schemas"]
    inputs = components["PredictRequest"]["properties"]["inputs"]
    assert (inputs["minItems"], inputs["maxItems"]) == (1, TEST_MAX_BATCH)
    grid, flat = sorted(inputs["items"]["oneOf"], key=lambda shape: shape["minItems"])
    assert (flat["minItems"], flat["maxItems"], flat["items"]) == (
        784,
        784,
        {"type": "number", "minimum": 0, "maximum": 1},
    )
    assert (grid["minItems"], grid["items"]["minItems"]) == (28, 28)
    assert components["PredictRequest"]["oneOf"] == [{"required": ["inputs"]}, {"required": ["images"]}]
    labels = components["LossRequest"]["properties"]["labels"]["oneOf"]
    assert labels[0]["items"] == {"type": "integer", "minimum": 0, "maximum": 9}
    data = components["V2RequestInput"]["properties"]["data"]
    assert (data["minItems"], data["maxItems"]) == (784, 784 * TEST_MAX_BATCH)


def test_model_names_and_versions_are_listed(app: Flask) -> None:
    state: ServiceState = app.extensions[EXTENSION]
    spec = build_openapi(app, state)
    name, version = spec["paths"]["/v1/models/{name}/versions/{version}"]["get"]["parameters"]
    assert name["schema"]["enum"] == ["fashion-mnist", "mnist"]
    assert version["schema"]["enum"] == sorted(v for by_version in state.models.values() for v in by_version)


def test_the_model_list_links_to_the_operations_that_take_a_name(app: Flask) -> None:
    spec = document(app)
    links = spec["paths"]["/v1/models"]["get"]["responses"]["200"]["links"]
    operation_ids = {op["operationId"] for ops in spec["paths"].values() for op in ops.values()}
    assert {"predict", "loss", "accuracy", "model_info"} <= set(links)
    for link in links.values():
        assert link["operationId"] in operation_ids
        assert link["parameters"] == {"name": "$response.body#/models/0/name"}


def test_inference_accepts_json_multipart_and_raw_images(app: Flask) -> None:
    spec = document(app)
    content = spec["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data", "image/png", "image/jpeg"} <= set(content)
    responses = spec["paths"]["/loss"]["post"]["responses"]
    assert {"200", "400", "413", "415", "422"} <= set(responses)
    assert "404" in spec["paths"]["/v1/models/{name}/loss"]["post"]["responses"]
    assert "default model: mnist" in spec["paths"]["/loss"]["post"]["summary"]


def test_every_open_inference_protocol_route_is_documented_with_its_errors(app: Flask) -> None:
    spec = document(app)
    v2_paths = [(path, method) for path, method in served(app) if path.startswith("/v2")]
    assert len(v2_paths) == 9  # server metadata, 2 health, 2 x (metadata, ready, infer)
    for path, method in v2_paths:
        operation = spec["paths"][path][method]
        errors = {
            code: response["content"]["application/json"]["schema"]
            for code, response in operation["responses"].items()
            if code.startswith("4") and code != "401" and path != "/v2/health/ready"
        }
        for code, schema in errors.items():
            if code in SERVER_ERRORS:  # the app's, or the HTTP server's own in the Error shape
                refs = [one["$ref"] for one in schema["oneOf"]] if "oneOf" in schema else [schema["$ref"]]
                assert refs in (["#/components/schemas/V2Error", ERROR], [ERROR]), (path, code, schema)
            else:
                assert schema["$ref"].endswith("/V2Error"), (path, code, schema)
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert "Inference-Header-Content-Length" in [p["name"] for p in infer["parameters"]]
    schemas = spec["components"]["schemas"]
    assert schemas["V2RequestInput"]["properties"]["datatype"]["enum"][:2] == ["BOOL", "UINT8"]
    assert schemas["V2InferenceRequest"]["required"] == ["inputs"]


def test_every_operation_lists_the_http_servers_own_refusals(app: Flask) -> None:
    """gunicorn answers 400, 414, 417, 431 and 501 itself, before any route, in the Error shape
    (service/workers.py): every operation can get them, and says so."""
    spec = document(app)
    for path, method in served(app):
        responses = spec["paths"][path][method]["responses"]
        for code in SERVER_ERRORS:
            schema = responses[code]["content"]["application/json"]["schema"]
            assert ERROR in [schema.get("$ref"), *(one["$ref"] for one in schema.get("oneOf", ()))], (
                path,
                method,
                code,
            )
    tfserving = spec["paths"]["/v1/models/{name}:predict"]["post"]["responses"]["400"]["content"]
    assert [one["$ref"] for one in tfserving["application/json"]["schema"]["oneOf"]] == [
        "#/components/schemas/TFError",
        ERROR,
    ]


def test_security_in_the_document_is_the_routes_declared_access(app: Flask) -> None:
    """The auth check and the document read the same declarations: open routes have no security;
    admin ones always need the token; the others need it "if the server has one" ({})."""
    spec = document(app)
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    seen = set()
    for rule in app.url_map.iter_rules():
        if is_document(app, rule.endpoint):
            assert access_of(app, rule.endpoint) == "open"
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)  # (a converter: <noverb:name>)
        for method in rule.methods & METHODS:  # type: ignore[operator]
            operation = spec["paths"][path][method.lower()]
            access = access_of(app, rule.endpoint)
            seen.add(access)
            if access == "admin":
                assert operation["security"] == [{"bearerAuth": []}], path
            elif access == "open":
                assert "security" not in operation, path
            else:
                assert operation["security"] == [{"bearerAuth": []}, {}], path
                assert "401" in operation["responses"], path
    assert seen == {"open", "token", "admin"}
    assert access_of(app, "health.healthz") == "open" and access_of(app, "api.predict") == "token"


def test_operations_routes_are_documented(app: Flask) -> None:
    spec = document(app)
    assert spec["paths"]["/metrics"]["get"]["tags"] == ["metrics"]
    assert spec["paths"]["/v1/admin/reload"]["post"]["tags"] == ["admin"]
    assert spec["paths"]["/v1/models/{name}/versions/{version}/predict"]["post"]["operationId"] == (
        "predict_version"
    )
