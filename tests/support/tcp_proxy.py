"""A TCP proxy that can go silent: it keeps connections open but stops forwarding.

That is how a dead server looks from the worker's side (no pong, no data, no FIN).
"""

from __future__ import annotations

import functools

import trio


class FreezableProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port: int | None = None
        self.accepted = 0
        self._frozen: set[int] = set()
        self._next_id = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
            )
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started(self.port)

    def freeze(self) -> None:
        """Black-hole every connection open now; later ones work normally."""
        self._frozen.update(range(self._next_id))

    async def _handle(self, client: trio.SocketStream) -> None:
        conn_id = self._next_id
        self._next_id += 1
        self.accepted += 1
        upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, conn_id, client, upstream, nursery)
            nursery.start_soon(self._pump, conn_id, upstream, client, nursery)

    async def _pump(
        self,
        conn_id: int,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        nursery: trio.Nursery,
    ) -> None:
        try:
            while data := await source.receive_some():
                if conn_id not in self._frozen:
                    await sink.send_all(data)
        except trio.BrokenResourceError:
            pass
        nursery.cancel_scope.cancel()
