"""Test-wide settings: property tests are derandomized so that CI is reproducible.

Run ``pytest --hypothesis-profile=explore`` to search with fresh random examples.
"""

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("ci")
