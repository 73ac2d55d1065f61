from pathlib import Path

import pytest
from hypothesis_profiles import load_profiles

SAMPLE_DIR = Path(__file__).parent / "data" / "mnist-sample"
#: The service's fixtures (model_dir, settings -> app -> client, ...), seen by every directory.
pytest_plugins = ["service_fixtures"]

load_profiles()  # Hypothesis: derandomized "ci" unless HYPOTHESIS_PROFILE=long


@pytest.fixture(scope="session")
def mnist_sample_dir() -> Path:
    """1,000 real MNIST digits in IDX form (the same set as train and test files)."""
    return SAMPLE_DIR
