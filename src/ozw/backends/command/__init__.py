"""The command backend: hand each task to the operator's own scheduler (docs/protocol.md)."""
