"""The wire: the protocol's messages and the one codec that turns frames into them and back."""
