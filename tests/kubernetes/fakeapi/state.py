"""The state behind the fake API server: its store, its cluster, access rules and the
log of requests."""

from __future__ import annotations

from tests.kubernetes.fakeapi.kubelet import Cluster
from tests.kubernetes.fakeapi.store import Obj, Store


class FakeApi:
    """The state behind the server: the store, the cluster, access rules, request log."""

    def __init__(
        self,
        *,
        step: float = 0.05,
        token: str | None = None,
        watch_timeout: float = 300.0,
    ) -> None:
        self.store = Store()
        self.cluster = Cluster(self.store, step=step)
        self.token = token
        self.watch_timeout = watch_timeout
        self.denied: set[str] = set()
        self.requests: list[Obj] = []
        self.pod_watch_lag = 0.0
        """Seconds each pod watch event is held back (a watch lagging behind another)."""
        self.cut = 0
        """Bumped to end every open watch (a load balancer dropping connections)."""
        self.log_cut = 0
        """Bumped to end every followed log while its container still runs (a kubelet or
        API server restart)."""

    def allowed(self, verb: str, resource: str, subresource: str = "") -> bool:
        key = f"{verb}:{resource}" + (f"/{subresource}" if subresource else "")
        return key not in self.denied
