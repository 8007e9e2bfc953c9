"""The link to the dispatch server: dial (direct, TLS, proxy), the WebSocket, the
session and its outbox."""
