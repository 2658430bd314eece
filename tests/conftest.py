"""Pytest setup for the whole test directory."""
import pytest

# helpers.py holds shared assertions: rewrite them so failures show the compared values
pytest.register_assert_rewrite("helpers")
