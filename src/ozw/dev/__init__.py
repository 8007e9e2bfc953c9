"""Tools for trying the worker: a local dispatch server, its script, the demo and its view."""
