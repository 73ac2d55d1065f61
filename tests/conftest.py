from pathlib import Path

import pytest

SAMPLE_DIR = Path(__file__).parent / "data" / "mnist-sample"


@pytest.fixture(scope="session")
def mnist_sample_dir() -> Path:
    """1,000 real MNIST digits in IDX form (the same set as train and test files)."""
    return SAMPLE_DIR
