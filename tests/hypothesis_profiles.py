"""Hypothesis profiles for the property tests, and each test's share of the example budget.

* ``ci`` (the default): derandomized, so every run tries the same examples and a failure in CI
  reproduces anywhere; no example database.
* ``long``: ten times the examples from a random seed; failures are kept in ``.hypothesis/``
  (git-ignored) and replayed first on the next run. ``HYPOTHESIS_PROFILE=long make test``, or
  ``pytest --hypothesis-profile=long``.

A property test says how many examples it runs in ``ci`` with ``examples(n)``; the loaded
profile scales it, so one setting gives both the quick and the long run.
"""

from __future__ import annotations

import os

from hypothesis import settings

CI_MAX_EXAMPLES = 100
LONG_FACTOR = 10
PROFILE_ENV = "HYPOTHESIS_PROFILE"


def load_profiles() -> None:
    """Register ``ci`` and ``long`` and load the one ``$HYPOTHESIS_PROFILE`` names (default ci)."""
    settings.register_profile(
        "ci", max_examples=CI_MAX_EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=True
    )
    settings.register_profile(
        "long", max_examples=LONG_FACTOR * CI_MAX_EXAMPLES, deadline=None, print_blob=True
    )
    settings.load_profile(os.environ.get(PROFILE_ENV, "ci"))


def examples(n: int) -> int:
    """``n`` examples in the ``ci`` profile, scaled by the loaded profile's budget."""
    return max(1, n * settings().max_examples // CI_MAX_EXAMPLES)
