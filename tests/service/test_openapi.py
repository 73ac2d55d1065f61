"""The OpenAPI document: generated from the schemas, covering every route."""

from __future__ import annotations

import json

from flask import Flask

from service.openapi import build_openapi
from service.registry import Registry
from service.views import EXTENSION


def test_every_api_route_is_documented(app: Flask) -> None:
    spec = json.loads(app.extensions[EXTENSION].openapi)
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    api_routes = [
        rule for rule in app.url_map.iter_rules() if rule.endpoint.partition(".")[0] in ("api", "health")
    ]
    assert len(api_routes) == 14  # 3 x 3 inference, 3 models, 2 health
    for rule in api_routes:
        path = rule.rule.replace("<name>", "{name}").replace("<version>", "{version}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)


def test_schemas_come_from_marshmallow(app: Flask) -> None:
    spec = json.loads(app.extensions[EXTENSION].openapi)
    components = spec["components"]["schemas"]
    predict = components["PredictRequest"]["properties"]
    assert predict["inputs"]["type"] == "array"  # the custom field, described for clients
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
        "Error",
    }


def test_inference_accepts_json_multipart_and_raw_images(app: Flask) -> None:
    spec = json.loads(app.extensions[EXTENSION].openapi)
    content = spec["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data", "image/png", "image/jpeg"} <= set(content)
    responses = spec["paths"]["/loss"]["post"]["responses"]
    assert {"200", "400", "404", "413", "415", "422"} <= set(responses)


def test_model_names_are_listed(app: Flask) -> None:
    registry: Registry = app.extensions[EXTENSION].registry
    spec = build_openapi(registry)
    param = spec["paths"]["/v1/models/{name}"]["get"]["parameters"][0]
    assert param["schema"]["enum"] == ["fashion-mnist", "mnist"]


def _documented_rules(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, OpenAPI path, method) for every route of the app that the document lists."""
    spec = json.loads(app.extensions[EXTENSION].openapi)
    routes = []
    for rule in app.url_map.iter_rules():
        path = rule.rule.replace("<name>", "{name}").replace("<version>", "{version}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if method.lower() in spec["paths"].get(path, {}):
                routes.append((rule.endpoint, path, method.lower()))
    return routes


def test_every_open_inference_protocol_route_is_documented(app: Flask) -> None:
    spec = json.loads(app.extensions[EXTENSION].openapi)
    v2_routes = [rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("v2.")]
    assert len(v2_routes) == 9  # server metadata, 2 health, 2 x (metadata, ready, infer)
    for rule in v2_routes:
        path = rule.rule.replace("<name>", "{name}").replace("<version>", "{version}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = spec["paths"][path][method.lower()]
            errors = {
                code: response["content"]["application/json"]["schema"]["$ref"]
                for code, response in operation["responses"].items()
                if code.startswith("4") and code != "401"
            }
            assert all(ref.endswith("/V2Error") for ref in errors.values()), (path, errors)
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert "Inference-Header-Content-Length" in [p["name"] for p in infer["parameters"]]
    schemas = spec["components"]["schemas"]
    assert schemas["V2RequestInput"]["properties"]["datatype"]["enum"][:2] == ["BOOL", "UINT8"]
    assert schemas["V2InferenceRequest"]["required"] == ["inputs"]


def test_security_in_the_document_matches_service_auth(app: Flask) -> None:
    """Operations that service.auth leaves open have no security; the others take the bearer
    token, required for admin and "if the server has one" ({} as the alternative) otherwise."""
    from service.auth import ADMIN_BLUEPRINTS, OPEN_BLUEPRINTS, OPEN_ENDPOINTS

    spec = json.loads(app.extensions[EXTENSION].openapi)
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    routes = _documented_rules(app)
    assert {path for _, path, _ in routes} >= {"/predict", "/v2/models/{name}/infer", "/healthz"}
    for endpoint, path, method in routes:
        operation = spec["paths"][path][method]
        blueprint = endpoint.partition(".")[0]
        if blueprint in ADMIN_BLUEPRINTS:
            assert operation["security"] == [{"bearerAuth": []}], path
        elif blueprint in OPEN_BLUEPRINTS or endpoint in OPEN_ENDPOINTS:
            assert "security" not in operation, path
        else:
            assert operation["security"] == [{"bearerAuth": []}, {}], path
            assert "401" in operation["responses"], path


def test_operations_routes_are_documented(app: Flask) -> None:
    spec = json.loads(app.extensions[EXTENSION].openapi)
    assert spec["paths"]["/metrics"]["get"]["tags"] == ["metrics"]
    assert spec["paths"]["/v1/admin/reload"]["post"]["tags"] == ["admin"]
    assert "version" in spec["paths"]["/v1/models/{name}/versions/{version}/predict"]["post"]["operationId"]
