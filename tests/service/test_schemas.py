"""Request schemas on their own: the custom fields and the cross-field rules."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError
from service_testkit import drawn_digit, png_bytes

from service.errors import ImageTooLarge
from service.schemas import (
    AccuracyRequestSchema,
    InputSpec,
    LossRequestSchema,
    PredictRequestSchema,
    RequestSchemas,
)

MNIST = InputSpec(input_shape=(28, 28), image_size=(28, 28), num_classes=10, max_batch_size=4)
FLAT = InputSpec(input_shape=(6,), image_size=None, num_classes=3, max_batch_size=4)


def messages(schema: PredictRequestSchema, payload: object) -> dict:
    with pytest.raises(ValidationError) as info:
        schema.load(payload)
    return info.value.messages  # type: ignore[return-value]


# --- PixelBatch ---------------------------------------------------------------------------
def test_inputs_become_one_float32_batch_of_flat_rows() -> None:
    schema = PredictRequestSchema(spec=MNIST)
    grid = np.arange(2 * 784).reshape(2, 28, 28) / (2 * 784)
    data = schema.load({"inputs": grid.tolist()})
    assert data["x"].dtype == np.float32 and data["x"].shape == (2, 784)
    np.testing.assert_array_equal(data["x"], grid.reshape(2, 784).astype(np.float32))
    assert data["preprocess"] is True


def test_integers_are_accepted_in_the_0_1_range() -> None:
    data = PredictRequestSchema(spec=FLAT).load({"inputs": [[0, 1, 0, 1, 0, 1]]})
    np.testing.assert_array_equal(data["x"], [[0, 1, 0, 1, 0, 1]])


def test_pixel_range_0_255_divides_by_255() -> None:
    data = PredictRequestSchema(spec=FLAT).load({"inputs": [[0, 51, 255, 0, 0, 0]], "pixel_range": "0-255"})
    np.testing.assert_array_equal(data["x"], np.float32([[0, 51, 255, 0, 0, 0]]) / 255)
    assert "pixel_range" not in data


@pytest.mark.parametrize(
    "inputs,expected",
    [
        ([[0.0] * 6, [0.0] * 5], "Rows have different lengths"),
        ([[[0.0, 0.0], [0.0]]], "Rows have different lengths"),
        ([[0.0] * 5], "Each input must be 6 numbers; got 5 numbers."),
        ([[[0.0] * 3] * 2], "Each input must be 6 numbers; got 2x3 nested lists."),
        ([[True] * 6], "Must contain only numbers"),
        ([["0.5"] * 6], "Must contain only numbers"),
        ([[None] * 6], "Must contain only numbers"),
        ([[float("nan")] * 6], "Must not contain NaN"),
        ([[float("-inf")] * 6], "Must not contain NaN"),
        ([[1.0000001] * 6], "Values must be in [0, 1]"),
        ([[-1e-9] * 6], "Values must be in [0, 1]"),
        ([], "Must hold at least one input."),
        ([[0.0] * 6] * 5, "At most 4 inputs per request, got 5."),
        ([0.0] * 6, "Must be a batch"),
        ({"a": 1}, "Must be a list of inputs"),
    ],
)
def test_bad_inputs(inputs: object, expected: str) -> None:
    msgs = messages(PredictRequestSchema(spec=FLAT), {"inputs": inputs})
    assert list(msgs) == ["inputs"]
    assert expected in msgs["inputs"][0]


def test_integer_overflow_is_not_a_500() -> None:
    msgs = messages(PredictRequestSchema(spec=FLAT), {"inputs": [[10**30] * 6]})
    assert "inputs" in msgs


def test_without_a_spec_any_rectangular_batch_passes() -> None:
    """The schemas apispec instantiates have no model: only the generic checks apply."""
    data = PredictRequestSchema().load({"inputs": [[0.5] * 3]})
    assert data["x"].shape == (1, 3)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=6, max_size=6),
        min_size=1,
        max_size=4,
    )
)
def test_any_float_rows_load_or_fail_cleanly(rows: list[list[float]]) -> None:
    """Valid iff all values are finite and in [0, 1]; never another exception."""
    arr = np.array(rows, dtype=np.float32)
    valid = bool(np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1)
    schema = PredictRequestSchema(spec=FLAT)
    if valid:
        np.testing.assert_array_equal(schema.load({"inputs": rows})["x"], arr)
    else:
        assert "inputs" in messages(schema, {"inputs": rows})


# --- Labels -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "labels,expected",
    [
        ([2, 0], [2, 0]),
        ("2,0", [2, 0]),
        (" 2, 0 ", [2, 0]),
        ("[2, 0]", [2, 0]),
        ([2.0, 0.0], [2, 0]),
        ([[0, 0, 1], [1, 0, 0]], [[0, 0, 1], [1, 0, 0]]),
        ("[[0, 0, 1], [1, 0, 0]]", [[0, 0, 1], [1, 0, 0]]),
    ],
)
def test_labels_integers_one_hot_and_form_strings(labels: object, expected: list) -> None:
    data = AccuracyRequestSchema(spec=FLAT).load({"inputs": [[0.0] * 6] * 2, "labels": labels})
    np.testing.assert_array_equal(data["labels"], expected)


def test_labels_keep_the_dtype_numpy_gives_the_list() -> None:
    """So the service hands TwoLayerNet exactly what np.asarray(labels) would."""
    data = LossRequestSchema(spec=FLAT).load({"inputs": [[0.0] * 6], "labels": [[0, 1, 0]]})
    assert data["labels"].dtype == np.asarray([[0, 1, 0]]).dtype


@pytest.mark.parametrize(
    "labels",
    [
        [3],
        [-1],
        [0.5],
        ["a"],
        [None],
        [True],
        [[0, 1]],
        [[0, 1, 1]],
        [[0.5, 0.5, 0]],
        [[[0, 0, 1]]],
        "x,y",
        "[1,",
        [],
        {"0": 1},
        7,
        [float("nan")],
    ],
)
def test_bad_labels(labels: object) -> None:
    msgs = messages(LossRequestSchema(spec=FLAT), {"inputs": [[0.0] * 6], "labels": labels})
    assert list(msgs) == ["labels"]


def test_label_count_must_match_the_batch() -> None:
    msgs = messages(AccuracyRequestSchema(spec=FLAT), {"inputs": [[0.0] * 6] * 3, "labels": [0, 1]})
    assert msgs == {"labels": ["Got 2 labels for 3 inputs."]}


def test_loss_name_is_checked_and_defaults_to_cross_entropy() -> None:
    schema = LossRequestSchema(spec=FLAT)
    assert schema.load({"inputs": [[0.0] * 6], "labels": [0]})["loss"] == "cross_entropy"
    assert list(messages(schema, {"inputs": [[0.0] * 6], "labels": [0], "loss": "l1"})) == ["loss"]


# --- images -------------------------------------------------------------------------------
def test_images_become_model_inputs() -> None:
    png = png_bytes(drawn_digit("1"))
    data = PredictRequestSchema(spec=MNIST).load({"images": [png, base64.b64encode(png).decode()]})
    assert data["x"].shape == (2, 784)
    np.testing.assert_array_equal(data["x"][0], data["x"][1])


def test_images_for_a_model_without_an_image_shape() -> None:
    msgs = messages(PredictRequestSchema(spec=FLAT), {"images": [png_bytes(drawn_digit("1"))]})
    assert msgs == {"images": ["This model's inputs are not images."]}


def test_pixel_range_does_not_apply_to_images() -> None:
    msgs = messages(
        PredictRequestSchema(spec=MNIST), {"images": [png_bytes(drawn_digit("1"))], "pixel_range": "0-255"}
    )
    assert list(msgs) == ["pixel_range"]


def test_an_oversized_image_raises_413_naming_it() -> None:
    spec = InputSpec(input_shape=(28, 28), image_size=(28, 28), max_image_pixels=100 * 100)
    png = png_bytes(drawn_digit("1", size=200))
    with pytest.raises(ImageTooLarge) as info:
        PredictRequestSchema(spec=spec).load({"images": [png_bytes(drawn_digit("1", 50)), png]})
    assert info.value.details == {"images": {1: [info.value.message]}}


def test_request_schemas_share_the_spec() -> None:
    bundle = RequestSchemas.for_spec(MNIST)
    assert bundle.predict.spec is bundle.loss.spec is bundle.accuracy.spec is MNIST


def test_accepted_shapes() -> None:
    assert MNIST.accepted_shapes == ((28, 28), (784,))
    assert FLAT.accepted_shapes == ((6,),)
    assert InputSpec(input_shape=(784,), image_size=(28, 28)).accepted_shapes == ((784,), (28, 28))
    assert InputSpec().accepted_shapes == ()


# --- the JSON fast path agrees with numpy's own checks ------------------------------------
def _outcome(schema: PredictRequestSchema, payload: object) -> tuple[str, object]:
    try:
        return "ok", schema.load(payload)["x"].tolist()
    except ValidationError as exc:
        return "error", sorted(exc.messages)  # type: ignore[arg-type]


_leaf = st.one_of(
    st.floats(0, 1, width=32),
    st.integers(0, 1),
    st.booleans(),
    st.none(),
    st.sampled_from(["0.5", "[", "a"]),
    st.dictionaries(st.sampled_from("ab"), st.lists(st.integers(0, 1), max_size=2), max_size=2),
)
_row = st.lists(st.one_of(_leaf, st.lists(_leaf, max_size=2)), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(_row, st.lists(_row, min_size=1, max_size=3), _leaf), min_size=1, max_size=3),
    st.booleans(),
)
def test_fast_path_and_exact_path_agree(inputs: list, with_labels: bool) -> None:
    """Any structure: reading numbers straight from the parser must accept and refuse exactly
    what np.asarray on Python lists does (the lists made as json.loads + booleans -> null)."""
    import json

    from service.inputs import loads_json

    spec = InputSpec(max_batch_size=4)
    payload = {"inputs": inputs}
    if with_labels:
        payload["pixel_range"] = "0-255"
    body = json.dumps(payload).encode()
    fast = loads_json(body)
    exact = json.loads(body)
    exact["inputs"] = fast["inputs"].to_list()
    assert _outcome(PredictRequestSchema(spec=spec), fast) == _outcome(PredictRequestSchema(spec=spec), exact)


@pytest.mark.parametrize(
    "body,message",
    [
        (b'{"inputs": [[0.5, [0.5]], [0.5, 0.5]]}', "Rows have different lengths"),
        (b'{"inputs": [[0.5, 0.5], [0.5, [0.5]]]}', "Rows have different lengths"),
        (b'{"inputs": [[[0.5], [0.5]], [[0.5], 0.5]]}', "Rows have different lengths"),
        (b'{"inputs": [[0.5, true]]}', "Must contain only numbers"),
        (b'{"inputs": [[0.5, "0.5"]]}', "Must contain only numbers"),
        (b'{"inputs": [[0.5, {"a": [1]}]]}', "Must contain only numbers"),
    ],
)
def test_json_bodies_that_look_rectangular_but_are_not(body: bytes, message: str) -> None:
    from service.inputs import loads_json

    msgs = messages(PredictRequestSchema(spec=InputSpec(max_batch_size=4)), loads_json(body))
    assert message in msgs["inputs"][0]


def test_json_fast_path_gives_the_same_batch_as_lists() -> None:
    import json

    from service.inputs import JsonArray, loads_json

    grid = (np.arange(2 * 784) % 256).reshape(2, 28, 28)
    for inputs in (grid.tolist(), grid.reshape(2, 784).tolist()):
        payload = loads_json(json.dumps({"inputs": inputs, "pixel_range": "0-255"}).encode())
        assert isinstance(payload["inputs"], JsonArray) and payload["inputs"].brackets > 0
        x = PredictRequestSchema(spec=MNIST).load(payload)["x"]
        np.testing.assert_array_equal(x, grid.reshape(2, 784).astype(np.float32) / 255)
