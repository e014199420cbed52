"""Hypothesis profiles: "ci" (CI=true or HYPOTHESIS_PROFILE=ci) and "dev" (the default locally)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=800, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", max_examples=60, stateful_step_count=30, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                      or ("ci" if os.environ.get("CI", "").lower() == "true" else "dev"))
