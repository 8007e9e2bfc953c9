"""The ``ozw`` command line and its commands (check, smoke), and how a run ends as an
exit status."""
