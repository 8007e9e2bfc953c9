"""Fixtures shared across the suite."""

from tests.support.log_lines import lines

__all__ = ["lines"]
