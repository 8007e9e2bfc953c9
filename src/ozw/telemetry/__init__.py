"""What the worker tells operators: log lines, metrics and the health endpoint."""
