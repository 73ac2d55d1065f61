"""The reliability tests serve small random-weight models, not the trained ones of
tests/service_fixtures.py: this ``model_dir`` stands in for that one in this directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_testkit import write_model
from service_testkit import FASHION_CLASSES


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mnist`` in two versions (``mnist/1``, ``mnist/2``) and a flat ``fashion-mnist.npz``."""
    directory = tmp_path_factory.mktemp("models")
    write_model(directory / "mnist" / "1" / "model.npz", seed=1)
    write_model(directory / "mnist" / "2" / "model.npz", seed=2)
    write_model(directory / "fashion-mnist.npz", seed=3, classes=FASHION_CLASSES, input_shape=(784,))
    return directory
