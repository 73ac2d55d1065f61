"""The textbook math and TwoLayerNet: pure numpy.

Files are touched only by ``idx``, ``datasets``, ``export``, ``checkpoint``, ``plots`` and ``cli``.
"""

from training.export import (
    FORMAT_VERSION,
    ModelFile,
    ModelFormatError,
    PublishError,
    load_model,
    publish_model,
    save_model,
)
from training.functions import (
    CROSS_ENTROPY_EPS,
    cross_entropy_error,
    label_indices,
    labels_to_one_hot,
    mean_squared_error,
    sigmoid,
    sigmoid_grad,
    softmax,
)
from training.gradient import NUMERICAL_GRADIENT_H, gradient_descent, numerical_gradient
from training.nets import DEFAULT_IG_STEPS, LOSSES, MAX_IG_STEPS, SimpleNet, TwoLayerNet

__all__ = [
    "CROSS_ENTROPY_EPS",
    "DEFAULT_IG_STEPS",
    "FORMAT_VERSION",
    "LOSSES",
    "MAX_IG_STEPS",
    "NUMERICAL_GRADIENT_H",
    "ModelFile",
    "ModelFormatError",
    "PublishError",
    "SimpleNet",
    "TwoLayerNet",
    "cross_entropy_error",
    "gradient_descent",
    "label_indices",
    "labels_to_one_hot",
    "load_model",
    "mean_squared_error",
    "numerical_gradient",
    "publish_model",
    "save_model",
    "sigmoid",
    "sigmoid_grad",
    "softmax",
]
