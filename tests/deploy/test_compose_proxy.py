"""docker-compose.yml like the cluster, read from the files (no container is started here;
.ci/containers.sh runs the project with three replicas and checks it from outside): the proxy is
the only way in, caps bodies where the API does, and the API replicas publish nothing."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from deploy_testkit import DEPLOY, REPO
from flask import Flask

from service.settings import Settings

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
TEMPLATE = (DEPLOY / "proxy" / "nginx.conf.template").read_text()
ENTRYPOINT = (DEPLOY / "proxy" / "entrypoint.sh").read_text()


def _default(value: str) -> str:
    """``${VAR:-default}`` -> default."""
    match = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    return match.group(1) if match else value


def test_the_proxy_is_the_only_published_port() -> None:
    published = {name for name, service in SERVICES.items() if service.get("ports")}
    assert published == {"proxy"}
    assert SERVICES["proxy"]["ports"] == [
        "${API_BIND:-127.0.0.1}:${API_PORT:-8000}:8080",
        "${API_BIND:-127.0.0.1}:${GRPC_API_PORT:-8081}:8081",
    ]
    assert "8000" in SERVICES["api"]["expose"]


def test_the_proxy_carries_grpc_over_http2_to_the_replicas_grpc_port() -> None:
    api_grpc = SERVICES["api"]["environment"]["GRPC_PORT"]
    assert str(api_grpc) in SERVICES["api"]["expose"]
    assert SERVICES["proxy"]["environment"]["GRPC_UPSTREAM"] == f"api:{api_grpc}"
    template = (DEPLOY / "proxy" / "nginx.conf.template").read_text()
    assert re.search(r"listen 8081 http2;", template)
    assert "grpc_pass grpc://$grpc_api;" in template
    assert "set $grpc_api @GRPC_UPSTREAM@;" in template


def test_the_proxy_caps_bodies_where_the_api_does() -> None:
    api, proxy = SERVICES["api"]["environment"], SERVICES["proxy"]["environment"]
    assert api["MAX_REQUEST_BYTES"] == proxy["MAX_REQUEST_BYTES"]
    assert int(_default(api["MAX_REQUEST_BYTES"])) == Settings().max_request_bytes
    assert f"MAX_REQUEST_BYTES:-{Settings().max_request_bytes}" in ENTRYPOINT
    assert "client_max_body_size @MAX_REQUEST_BYTES@;" in TEMPLATE
    assert proxy["TIMEOUT"] == api["TIMEOUT"]


def test_the_proxy_buffers_requests_and_balances_by_name() -> None:
    for directive in (
        "proxy_request_buffering on;",
        "proxy_buffering on;",
        "client_body_timeout",
        "client_header_timeout",
    ):
        assert directive in TEMPLATE
    # resolved at request time (a variable), so replicas added or gone are seen
    assert "resolver @RESOLVER@" in TEMPLATE
    assert "set $api @UPSTREAM@;" in TEMPLATE
    assert TEMPLATE.count("proxy_pass http://$api;") == 3  # /, /v2/ and TF Serving's routes
    assert SERVICES["proxy"]["environment"]["UPSTREAM"] == "api:8000"
    assert "proxy_set_header X-Request-ID $req_id;" in TEMPLATE
    # a new connection to a replica per request: TIME_WAIT ports are reused, not searched for
    assert SERVICES["proxy"]["sysctls"]["net.ipv4.tcp_tw_reuse"] == 1


def test_both_run_read_only_with_a_tmpfs() -> None:
    for name in ("api", "proxy"):
        assert SERVICES[name]["read_only"] is True
        assert SERVICES[name]["tmpfs"] == ["/tmp"]
        assert "healthcheck" in SERVICES[name]


#: POST routes that the proxy and the Ingress may send twice (to a second replica, when the first
#: failed or went away mid-request): each is a pure function of its body, or idempotent (reload;
#: feedback: its images are stored by content hash, so a second delivery stores nothing new and
#: is recorded as a duplicate).
RETRY_SAFE_POSTS = {
    "admin.reload_models",
    "api.accuracy",
    "api.explain",
    "api.loss",
    "api.predict",
    "demo.preprocess",
    "feedback.post_feedback",
    "tfserving.explain",
    "tfserving.predict",
    "v2.infer",
}


def test_every_post_route_is_safe_to_retry(app: Flask) -> None:
    """nginx.conf.template and the Ingress retry POSTs (proxy_next_upstream non_idempotent). A new
    POST route that changes state must not be retried: give it a location (and an Ingress) with
    proxy_next_upstream off; only a route that is safe to send twice belongs in RETRY_SAFE_POSTS."""
    posts = {rule.endpoint for rule in app.url_map.iter_rules() if "POST" in (rule.methods or ())}
    assert posts <= RETRY_SAFE_POSTS, posts - RETRY_SAFE_POSTS
    assert "non_idempotent" in TEMPLATE


#: nginx's own error statuses (issue 22) and the status each is answered with: parse errors before
#: any location, and the errors of a proxied request (a client's error is never a 5xx).
PARSE_ERRORS = {"400": 400, "501": 400, "505": 400, "408": 408, "414": 414, "494": 431}
PROXY_OWN_ERRORS = {
    "400": 400,
    "501": 400,
    "505": 400,
    "408": 408,
    "413": 413,
    "502": 503,
    "503": 503,
    "504": 504,
}


def _answers() -> dict[str, tuple[int, object]]:
    """``location @name`` or ``location = /uri`` ``{ ... return STATUS 'BODY'; }`` -> (status,
    parsed body)."""
    found = re.findall(r"location (?:= )?(@\w+|/[\w/]+) \{[^}]*?return (\d+) '([^']*)';", TEMPLATE)
    return {
        name: (int(status), json.loads(body.replace("@MAX_REQUEST_BYTES@", "16777216")))
        for name, status, body in found
    }


def _error_pages(block: str) -> dict[str, tuple[int | None, str]]:
    """``error_page CODES [=STATUS] TARGET;`` -> code: (STATUS or None, TARGET)."""
    pages = {}
    for codes, status, target in re.findall(r"error_page ([\d ]+?) (?:=(\d+) )?(\S+);", block):
        pages.update(dict.fromkeys(codes.split(), (int(status) if status else None, target)))
    return pages


def _sent(code: str, page: tuple[int | None, str], answers: dict[str, tuple[int, object]]) -> tuple[int, Any]:
    """What nginx sends: the error's own status unless error_page says ``=STATUS``, and the body."""
    override, target = page
    return override or int(code), answers[target][1]


def test_the_proxys_own_errors_are_json_in_each_routes_shape() -> None:
    """Every error nginx writes itself goes through error_page to a JSON answer whose body says
    the status it is sent with: before any location (parse errors: the Error shape, from a URI:
    a bad request line has none for a named location), and in each proxied location in its
    routes' shape (the Open Inference Protocol's and TF Serving's: {"error": "..."}). A client's
    error is never a 5xx (501, 505: 400). .ci/compose_check.py hostile sends them through a live
    proxy."""
    answers = _answers()
    server_level = TEMPLATE[TEMPLATE.index("server {") : TEMPLATE.index("location / {")]
    for code, status in PARSE_ERRORS.items():
        page = _error_pages(server_level)[code]
        assert page[1].startswith("/_proxy/errors/"), code
        sent, body = _sent(code, page, answers)
        assert sent == status and body["error"]["status"] == status, code
        assert body["error"]["code"] and body["error"]["message"]
    blocks = re.findall(r"^        location ([^@={][^{]*)\{(.*?)\n        \}", TEMPLATE, flags=re.S | re.M)
    proxied = {where.strip(): block for where, block in blocks if "proxy_pass" in block}
    assert set(proxied) == {
        "/",
        "/v2/",
        '~ "^/v1/models/[^/]+(/versions/[^/]+)?(:predict|:explain|/metadata)$"',
    }
    for where, block in proxied.items():
        pages = _error_pages(block)
        for code, status in PROXY_OWN_ERRORS.items():
            sent, body = _sent(code, pages[code], answers)
            assert sent == status, (where, code)
            if where == "/":
                assert body["error"]["status"] == status and body["error"]["code"], (where, code)
            else:
                assert isinstance(body["error"], str) and body["error"], (where, code)
    assert (
        TEMPLATE.count("add_header X-Request-ID $req_id always;") == len(answers) - 1
    )  # not /_proxy/healthz


def test_the_feedback_volume_is_written_by_api_and_read_by_train() -> None:
    """The loop in compose: corrections land in the "feedback" volume through `api`, and `train`
    reads them (read-only) with --images; the images create its mount point owned by their
    user, so a new named volume there is writable by the API."""
    feedback_dir = _default(SERVICES["api"]["environment"]["FEEDBACK_DIR"])
    assert f"feedback:{feedback_dir}" in SERVICES["api"]["volumes"]
    assert f"feedback:{feedback_dir}:ro" in SERVICES["train"]["volumes"]
    assert "feedback" in COMPOSE["volumes"]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(rf"install -d -o app -g app .*{re.escape(feedback_dir)}\b", dockerfile)
    Settings(feedback_dir=feedback_dir)  # a valid setting
