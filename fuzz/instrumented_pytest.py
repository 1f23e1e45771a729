"""pytest plugin for fuzz/memcheck.sh and fuzz/asan_tests.sh (loaded with -p).

Under valgrind or AddressSanitizer the interpreter runs 5-50 times slower, so
Hypothesis gets no deadline and no health checks (which time things), and is
derandomized so that every instrumented run tries the same examples.
Loaded before the test modules are imported, so the settings their
@settings decorators inherit from come from this profile.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "instrumented",
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
settings.load_profile("instrumented")
