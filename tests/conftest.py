"""Hypothesis profiles: "ci" (CI=true or HYPOTHESIS_PROFILE=ci) and "dev" (the default locally); and,
when the tests run as root (make test in CI), the daemons they start keep their services as root:
the service users and readable paths of an install are not there (tests/test_service_users.py
checks the real rule)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=800, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", max_examples=60, stateful_step_count=30, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                      or ("ci" if os.environ.get("CI", "").lower() == "true" else "dev"))

if os.geteuid() == 0:
    os.environ.setdefault("EVSED_UNSAFE_SERVICES_AS_ROOT", "1")
