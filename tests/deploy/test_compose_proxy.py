"""docker-compose.yml like the cluster, read from the files (no container is started here;
.ci/containers.sh runs the project with three replicas and checks it from outside): the proxy is
the only way in, caps bodies where the API does, and the API replicas publish nothing."""

from __future__ import annotations

import re

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
    assert SERVICES["proxy"]["ports"] == ["${API_BIND:-127.0.0.1}:${API_PORT:-8000}:8080"]
    assert "8000" in SERVICES["api"]["expose"]


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
    assert TEMPLATE.count("proxy_pass http://$api;") == 2
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
