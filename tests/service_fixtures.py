"""Fixtures for the service: real models trained here, settings -> app -> client, real images.

A plugin module (``pytest_plugins`` in tests/conftest.py), so the unit tests in tests/service/
and the integration tests in tests/integration/ share one set: one trained model per session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from numpy.typing import NDArray
from service_testkit import (
    DIGITS,
    FASHION_CLASSES,
    TEST_MAX_BATCH,
    TEST_MAX_REQUEST_BYTES,
)

from service import create_app
from service.settings import Settings
from training import TwoLayerNet, save_model
from training.datasets import as_training_arrays
from training.idx import read_idx


@pytest.fixture(scope="session")
def mnist_sample(mnist_sample_dir: Path) -> tuple[NDArray[np.uint8], NDArray[np.intp]]:
    """The 1,000 real digits: images (N, 28, 28) uint8 and labels (N,)."""
    images = read_idx(mnist_sample_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(mnist_sample_dir / "t10k-labels-idx1-ubyte.gz").astype(np.intp)
    return images, labels


@pytest.fixture(scope="session")
def model_dir(
    tmp_path_factory: pytest.TempPathFactory, mnist_sample: tuple[NDArray[np.uint8], NDArray[np.intp]]
) -> Path:
    """``mnist.npz``: float32, trained on the real sample; ``fashion-mnist.npz``: float64, untrained.

    Two models with different dtypes and class names, so nothing assumes one of either.
    """
    directory = tmp_path_factory.mktemp("models")
    images, labels = mnist_sample
    x = as_training_arrays(images, np.float32)
    rng = np.random.default_rng(0)
    net = TwoLayerNet(784, 32, 10, weight_init_std="xavier", rng=rng, dtype=np.float32)
    for _ in range(12):  # epochs: 240 SGD steps, 94% accuracy on these 1,000 digits
        order = rng.permutation(len(x))
        for start in range(0, len(x), 50):
            batch = order[start : start + 50]
            net.sgd_step(x[batch], labels[batch], learning_rate=0.5)
    save_model(
        directory / "mnist.npz",
        net,
        {
            "input_shape": [28, 28],
            "class_names": DIGITS,
            "pixel_preprocessing": "x / 255",
            "dataset": {"name": "mnist-sample"},
            "metrics": {"train_accuracy": net.accuracy(x, labels)},
        },
    )
    fashion = TwoLayerNet(784, 8, 10, rng=np.random.default_rng(1), dtype=np.float64)
    save_model(
        directory / "fashion-mnist.npz",
        fashion,
        {
            "input_shape": [784],
            "class_names": FASHION_CLASSES,
            "dataset": {"name": "fashion-mnist"},
        },
    )
    (directory / "README.md").write_text("not a model: ignored\n")
    return directory


@pytest.fixture(scope="session")
def settings(model_dir: Path) -> Settings:
    return Settings(
        model_dir=model_dir,
        default_model="mnist",
        max_batch_size=TEST_MAX_BATCH,
        max_request_bytes=TEST_MAX_REQUEST_BYTES,
    )


@pytest.fixture(scope="session")
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def mnist_net(model_dir: Path) -> TwoLayerNet:
    """The served MNIST network as ``training`` loads it: what the service must agree with."""
    from training import load_model

    return load_model(model_dir / "mnist.npz").network()
