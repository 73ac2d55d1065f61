"""The Open Inference Protocol over a real gunicorn: the v2 error contract (the table in
tests/v2_testkit.py) and the same answers as the test client, in JSON and binary tensors.
The routes themselves are tested through the test client in tests/service/test_v2.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from flask.testing import FlaskClient
from gunicorn_testkit import gunicorn, stop, wait_ready
from v2_testkit import (
    ERRORS,
    INFER,
    ROW,
    Case,
    assert_v2_error,
    binary_body,
    digits,
    infer,
    outputs,
    split_binary,
    tensor,
)


# --- over a real gunicorn -----------------------------------------------------------------
@pytest.fixture(scope="module")
def server(
    server_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    proc = gunicorn(server_env, log)
    try:
        yield wait_ready(proc, log)
    finally:
        assert stop(proc) == 0
        assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("case", ERRORS, ids=[c.id for c in ERRORS])
def test_error_contract_over_http(server: str, case: Case) -> None:
    response = requests.request(
        case.method, server + case.path, data=case.body, headers=case.headers, timeout=10
    )
    assert_v2_error(response.status_code, response.headers.get("Content-Type"), response.json(), case)


def test_json_and_binary_over_http(server: str, client: FlaskClient) -> None:
    pixels = digits(5)
    request = {"inputs": [tensor(pixels.ravel().tolist(), [5, 28, 28], "UINT8")]}
    assert requests.post(server + INFER, json=request, timeout=10).json() == infer(client, request)
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": [5, ROW],
                "datatype": "UINT8",
                "parameters": {"binary_data_size": pixels.nbytes},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_body(header, pixels.tobytes())
    response = requests.post(server + INFER, data=body, headers=headers, timeout=10)
    assert response.status_code == 200
    answer, arrays = split_binary(response)
    assert answer["model_name"] == "mnist"
    assert arrays["label"].tolist() == outputs(infer(client, request))["label"]["data"]
