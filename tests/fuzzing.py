"""Hypothesis profiles: ``dev`` (every local run: the counts each test names
as ``dev``) and ``ci`` (``.ci/run`` exports PYOOMD_HYPOTHESIS_PROFILE=ci:
at least 10,000 examples for each parser and loader, fewer for the slow
end-to-end properties).  The counts are per test, so tests take their
settings from ``fuzz()`` rather than a fixed ``max_examples``; the conftest
prints the examples each property ran (``hypothesis examples`` section).
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings

ENV = "PYOOMD_HYPOTHESIS_PROFILE"
PROFILE = os.environ.get(ENV, "dev")
PARSER_CI = 10_000  # the floor for every parser and loader

settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, print_blob=True)
if PROFILE not in ("dev", "ci"):
    raise RuntimeError(f"{ENV}={PROFILE!r}: the profiles are dev and ci")
settings.load_profile(PROFILE)


def fuzz(dev: int, ci: int = PARSER_CI, *, slow: bool = False, fixture: bool = False, **kw: Any) -> settings:
    """Settings for one property: ``dev`` examples locally, ``ci`` under the
    ci profile.  ``slow``/``fixture`` suppress those health checks."""
    checks = list(kw.pop("suppress_health_check", ()))
    if slow:
        checks.append(HealthCheck.too_slow)
    if fixture:
        checks.append(HealthCheck.function_scoped_fixture)
    return settings(max_examples=ci if PROFILE == "ci" else dev, deadline=None, suppress_health_check=checks,
                    **kw)
