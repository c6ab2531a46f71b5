"""Fuzzing settings: a fixed seed and example budget in CI; `ANONAVILA_FUZZ_EXAMPLES=2000` for a long run."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI: a fixed example budget, derandomised (a fixed seed). ANONAVILA_FUZZ_RANDOM=1 explores new examples.
settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("ANONAVILA_FUZZ_EXAMPLES", "60")),
    deadline=None,
    derandomize=not os.environ.get("ANONAVILA_FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci")
