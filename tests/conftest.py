"""Pytest setup for the whole test directory."""
import sys
from pathlib import Path

import pytest

# helpers.py holds shared assertions: rewrite them so failures show the compared values
pytest.register_assert_rewrite("helpers")
# the tests import helpers and data_paths by name, under any --import-mode
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_paths import SHARED_DATA  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`<repo>/../shared/data` (real videos, THUMOS14 / ActivityNet annotations); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def local_ray():
    """One embedded local Ray instance with 2 CPUs for the in-process Ray tests of a module that
    need no cluster of their own (no fault injection, no declared GPUs, no extra nodes); stopped
    when the module ends, so no later test joins it instead of starting its own."""
    import ray

    from wtal.pipeline.runtime import init_ray

    if ray.is_initialized():
        ray.shutdown()
    try:
        yield init_ray(workers=2)
    finally:
        ray.shutdown()
