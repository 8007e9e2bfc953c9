"""Helpers shared by the tests: /proc scanning, task parameters, a running worker."""
