"""Backends run tasks: in a container, on the host, or by handing them off."""
