"""The evaluation gate of ``train --publish --publish-if-better``: publish a new model only when it
is at least as good as the one it would replace, on held-out data neither was trained on here.

**The baseline** is the model serving under the published name now (the newest version in
``MODEL_DIR/NAME``), or, when that name has no version yet, the ``--init-from`` model; with
neither (a first run from scratch) there is nothing to compare and the model is published.

**The held-out sets** are every set the run holds out, each with its own tolerance:

- ``val``, the run's own held-out data (``--validation-split``, default 0.1 with ``--images``,
  or ``--validation-dir``): the new source the fine-tune is for. The new model must be at least
  as accurate as the baseline: tolerance ``OWN_TOLERANCE`` = 0.
- ``test``, the test set of the ``--replay`` data set (MNIST's 10,000): the check that the
  fine-tune did not forget. At most ``REPLAY_TOLERANCE`` = 1 point of accuracy below the
  baseline, the margin issue 19 allows for forgetting. Without ``--images`` (a built-in data set)
  ``test`` is the data set's own test set and its tolerance is 0.

A set passes when ``new accuracy >= baseline accuracy - tolerance`` (ties pass: "at least as
good"); the gate passes when every set does. Accuracy, not loss: it is what the model card and
the must-show figures are in, and a fine-tune that sharpens its confidence can lose on loss
while answering better.

A caveat, said plainly: the ``val`` split is drawn afresh from the folder each run (seeded, and
stratified), so when the baseline is an earlier fine-tune on a smaller folder, some of today's
held-out images may have been in its training data. That favours the baseline: the gate errs on
the side of keeping what serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from training.nets import TwoLayerNet
from training.trainer import evaluate

#: Accuracy the new model may lose on the run's own held-out data (the source it is tuned for).
OWN_TOLERANCE = 0.0
#: Accuracy the new model may lose on the replayed data set's test set (forgetting): 1 point.
REPLAY_TOLERANCE = 0.01


@dataclass(frozen=True)
class HeldOut:
    """One held-out set the gate compares on: x (N, D), t (N,) class indices."""

    name: str
    x: NDArray[np.floating]
    t: NDArray[np.integer]
    tolerance: float


@dataclass(frozen=True)
class Verdict:
    """What the gate found: passed, the figures per set, and one line saying why."""

    passed: bool
    figures: dict[str, dict[str, Any]]
    reason: str

    def record(self, baseline: dict[str, Any], *, forced: bool) -> dict[str, Any]:
        """The gate's entry in the published metadata and history."""
        return {
            "passed": self.passed,
            "forced": forced,
            "baseline": baseline,
            "sets": self.figures,
            "reason": self.reason,
        }


def compare(new: TwoLayerNet, baseline: TwoLayerNet, sets: Sequence[HeldOut], baseline_name: str) -> Verdict:
    """``new`` against ``baseline`` on every set in ``sets`` (see the module's docstring)."""
    figures: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    shown: list[str] = []
    for held in sets:
        ours = evaluate(new, held.x, held.t)["accuracy"]
        theirs = evaluate(baseline, held.x, held.t)["accuracy"]
        passed = ours >= theirs - held.tolerance - 1e-12  # accuracies are k/N: no rounding drift
        figures[held.name] = {
            "count": int(held.t.shape[0]),
            "accuracy": ours,
            "baseline_accuracy": theirs,
            "tolerance": held.tolerance,
            "passed": passed,
        }
        line = f"{held.name} accuracy {ours:.4f} vs {theirs:.4f}"
        if held.tolerance:
            line += f" (at most {held.tolerance * 100:g} point{'s' * (held.tolerance != 0.01)} down)"
        shown.append(line)
        if not passed:
            failed.append(line)
    if failed:
        reason = f"worse than {baseline_name} on held-out data: {'; '.join(failed)}"
    else:
        reason = f"at least as good as {baseline_name}: {'; '.join(shown)}"
    return Verdict(passed=not failed, figures=figures, reason=reason)
