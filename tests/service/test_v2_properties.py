"""v2's plain-form reader (``plain_request``) against the schema it stands in for.

The schema (``InferenceRequestSchema``) is the reference: whatever the plain-form reader
accepts, the schema accepts and loads to the same value; whatever the schema refuses, the
plain-form reader leaves to it. Requests are generated near the plain form: each part right or
wrong in one of the ways a client gets it wrong.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis_profiles import examples
from marshmallow import ValidationError

from service.v2 import DATATYPES, INFERENCE_REQUEST, OUTPUT_NAMES, load_request, plain_request

#: Mostly True: which branch, right or wrong, a part takes (the right one first, where
#: Hypothesis's bias to the first choice keeps it).
RIGHT = st.sampled_from([True] * 9 + [False])
ODD = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.floats(allow_nan=False), st.text(max_size=3))


def either(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right value, sometimes a value of another type."""
    return RIGHT.flatmap(lambda right: good if right else st.one_of(ODD, st.lists(ODD, max_size=2)))


parameters = either(st.dictionaries(st.sampled_from(["binary_data_size", "x"]), ODD, max_size=2))
dimension = RIGHT.flatmap(lambda right: st.integers(0, 900) if right else st.one_of(st.just(-1), ODD))
shape = either(st.lists(dimension, max_size=3))


@st.composite
def tensors(draw: st.DrawFn) -> Any:
    """A tensor with data, or with binary_data_size, or (rarely) both or neither."""
    tensor: dict[str, Any] = {}
    for key, value in (
        ("name", either(st.sampled_from(["input", "INPUT__0"]))),
        ("shape", shape),
        ("datatype", either(st.sampled_from([*DATATYPES, "FLOAT"]))),
    ):
        if draw(RIGHT):
            tensor[key] = draw(value)
    mode = draw(st.sampled_from(["data"] * 4 + ["binary"] * 4 + ["both", "neither"]))
    if mode in ("data", "both"):
        tensor["data"] = draw(either(st.lists(st.floats(0, 1), min_size=1, max_size=3)))
    if mode in ("binary", "both"):
        size = st.integers(0, 11).flatmap(
            lambda i: st.integers(0, 3136) if i else st.one_of(st.just(-1), ODD)
        )
        tensor["parameters"] = draw(either(st.fixed_dictionaries({"binary_data_size": size})))
    elif draw(st.integers(0, 5)) == 0:
        tensor["parameters"] = draw(parameters)
    if draw(st.integers(0, 9)) == 0:
        tensor["extra"] = draw(ODD)
    return tensor if draw(RIGHT) else draw(ODD)


outputs = st.fixed_dictionaries(
    {"name": either(st.sampled_from([*OUTPUT_NAMES, "logits"]))}, optional={"parameters": parameters}
)


@st.composite
def requests(draw: st.DrawFn) -> Any:
    doc: dict[str, Any] = {"inputs": draw(either(st.lists(tensors(), min_size=1, max_size=2)))}
    if draw(st.booleans()):
        doc["outputs"] = draw(either(st.lists(outputs, max_size=2)))
    if draw(st.integers(0, 3)) == 0:
        doc["id"] = draw(either(st.text(max_size=4)))
    if draw(st.integers(0, 3)) == 0:
        doc["parameters"] = draw(parameters)
    if draw(st.integers(0, 5)) == 0:
        doc["unknown"] = draw(ODD)
    return doc if draw(RIGHT) else draw(ODD)


@settings(max_examples=examples(300))
@given(requests())
def test_the_plain_form_reader_agrees_with_the_schema(doc: Any) -> None:
    plain = plain_request(doc)
    try:
        reference = INFERENCE_REQUEST.load(doc)
    except ValidationError:
        assert plain is None  # refused: left to the schema, which words the error
        event("refused")
        return
    if plain is not None:
        assert plain == reference
        event("plain form")
    else:
        event("schema only")
    assert load_request(doc) == reference


def test_what_clients_send_takes_the_plain_form() -> None:
    for doc in (
        {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}]},
        {
            "id": "42",
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 784],
                    "datatype": "UINT8",
                    "parameters": {"binary_data_size": 784},
                }
            ],
            "outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "probabilities"}],
        },
    ):
        assert plain_request(doc) is doc == INFERENCE_REQUEST.load(doc)


PLAIN = {"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}
BINARY = {"name": "input", "shape": [1, 784], "datatype": "UINT8"}


@pytest.mark.parametrize(
    "doc",
    [
        {"id": None, "inputs": [PLAIN]},
        {"id": "é", "inputs": [PLAIN]},
        {"inputs": [PLAIN], "outputs": None},
        {"inputs": [PLAIN], "parameters": None},
        {"inputs": [PLAIN], "unknown": 1},
        {"inputs": [{**PLAIN, "data": None}]},
        {"inputs": [{**PLAIN, "shape": [True, 784]}]},
        {"inputs": [{**PLAIN, "extra": 1}]},
        {"inputs": [{**PLAIN, "parameters": {"binary_data_size": 3136}}]},
        {
            "inputs": [
                {k: v for k, v in PLAIN.items() if k != "data"} | {"parameters": {"binary_data_size": -1}}
            ]
        },
        {
            "inputs": [
                {k: v for k, v in PLAIN.items() if k != "data"} | {"parameters": {"binary_data_size": True}}
            ]
        },
        {"inputs": [PLAIN], "outputs": [{"name": "label", "parameters": None}]},
    ],
    ids=[
        "id-null",
        "id-not-ascii",
        "outputs-null",
        "parameters-null",
        "unknown-key",
        "data-null",
        "shape-boolean",
        "input-unknown-key",
        "data-and-binary",
        "binary-size-negative",
        "binary-size-boolean",
        "output-parameters-null",
    ],
)
def test_what_is_not_plain_is_left_to_the_schema(doc: dict[str, Any]) -> None:
    assert plain_request(doc) is None
    try:
        reference = INFERENCE_REQUEST.load(doc)
    except ValidationError:
        return
    assert load_request(doc) == reference
