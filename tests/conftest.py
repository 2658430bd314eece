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
