"""Fixtures shared across the suite."""

from tests.log_lines import lines

__all__ = ["lines"]
