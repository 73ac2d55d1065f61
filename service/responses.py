"""Answer bodies that more than one protocol writes the same way."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from service import dataplane
from service.registry import Model


def explanation_items(
    model: Model, result: dataplane.Explanation, preprocessed: NDArray[np.floating] | None
) -> list[dict[str, Any]]:
    """One entry per input: the prediction, the class explained and the attributions on the
    input's grid (28x28), with the grid itself when the input was an image (``preprocessed``)."""
    shape = model.image_size or model.input_shape
    names = model.class_names
    inference = result.inference
    items = []
    for i, (label, target) in enumerate(zip(inference.labels.tolist(), result.targets.tolist(), strict=True)):
        item: dict[str, Any] = {
            "label": label,
            "class_name": names[label],
            "probabilities": inference.probabilities[i],
            "target": target,
            "target_name": names[target],
            "method": result.method,
            "attributions": result.attributions[i].reshape(shape),
        }
        if result.convergence_delta is not None:
            item["convergence_delta"] = float(result.convergence_delta[i])
        if preprocessed is not None:
            item["preprocessed"] = preprocessed[i].reshape(shape)
        items.append(item)
    return items
