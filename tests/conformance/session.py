"""One scenario's world: a dispatch server (ozw's stand-in) that can be taken away and
brought back, a worker process, and what the stand-in agent and hooks recorded.

Scenario steps talk to a :class:`Session`; every wait is bounded and a wait that
times out is recorded in the transcript (``timed_out``) instead of raising, so a
worker that never answers still gives a transcript to compare.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from ozw.dev.server import DispatchServer, Received
from tests.conformance.docker_world import DockerWorld, container_config
from tests.conformance.workers import Launch, Settings, Worker, launch
from tests.support.ports import free_port
from tests.support.procs import alive
from tests.support.tinyproxy import Tinyproxy, local_address, local_name, running_tinyproxy
from tests.support.worker import API_KEY

WAIT: Final = 30.0
"""The longest any one step waits for the worker."""
POLL: Final = 0.02
HOOK: Final = Path(__file__).with_name("hook.py")


class StepTimeout(Exception):
    """A step waited :data:`WAIT` seconds for something that did not happen."""


class _Runtime(http.server.BaseHTTPRequestHandler):
    """The remote runtime the Go example dispatch script POSTs to: 200 or 500."""

    status = 200

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Session:
    """A worker under test and the server it talks to."""

    def __init__(
        self,
        worker: Worker,
        settings: Settings,
        tmp: Path,
        *,
        extra_env: Mapping[str, str] = {},
        runtime_status: int = 200,
        docker: DockerWorld | None = None,
        proxy: bool = False,
    ) -> None:
        self.worker = worker
        self.settings = settings
        self.tmp = tmp
        self.records = tmp / "records"
        self.workspaces = tmp / "workspaces"
        self.records.mkdir(parents=True)
        self.metrics_port = free_port()
        self.servers: list[DispatchServer] = []
        self.on_receive: list[Callable[[Received], None]] = []
        """Hooks every server of the session calls with each frame (bench/peer.py's clocks)."""
        self.timed_out: list[str] = []
        self.returncode: int | None = None
        self.exited = trio.Event()
        self.extra_env = dict(extra_env)
        self.runtime_status = runtime_status
        self.docker = docker
        self.proxy: Tinyproxy | None = None
        self._use_proxy = proxy
        # Go (and ozw) never proxy a loopback address: behind a proxy the server is
        # dialled by this machine's name.
        self.host = local_address() if proxy else "127.0.0.1"
        self.url_host = local_name() if proxy else "127.0.0.1"
        self.containers: dict[str, dict[str, Any]] = {}
        self._server_scope: trio.CancelScope | None = None
        self._port = 0
        self._process: trio.Process | None = None
        self._nursery: trio.Nursery | None = None

    # -- the server ---------------------------------------------------------

    @property
    def server(self) -> DispatchServer:
        return self.servers[-1]

    async def _start_server(self) -> None:
        assert self._nursery is not None
        server = DispatchServer(API_KEY)
        server.on_receive = self.on_receive
        scope = trio.CancelScope()

        async def serve(*, task_status: trio.TaskStatus[None]) -> None:
            with scope:
                async with trio.open_nursery() as inner:
                    await inner.start(server.serve, self.host, self._port)
                    task_status.started()
                    await trio.sleep_forever()

        await self._nursery.start(serve)
        self._port = server.port or 0
        self.servers.append(server)
        self._server_scope = scope

    async def stop_server(self) -> None:
        """Take the server away (connections dropped, nothing listening)."""
        assert self._server_scope is not None
        self._server_scope.cancel()
        await trio.lowlevel.checkpoint()

    async def start_server(self) -> None:
        """Bring a fresh server back on the same port and wait for the worker."""
        await self._start_server()
        await self.connected()

    async def connected(self) -> None:
        with self._bounded("the worker to connect"):
            await self.server.wait_connected()

    # -- the worker ---------------------------------------------------------

    def _launch(self) -> Launch:
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.tmp / "home"),
            "OZ_DISPATCH_URL": f"http://127.0.0.1:{self._runtime_port}/dispatch",
            "OZ_CANCEL_URL": f"http://127.0.0.1:{self._runtime_port}/cancel",
            **self.extra_env,
        }
        if self.docker is not None:
            base["DOCKER_HOST"] = self.docker.engine.host
        if self.proxy is not None:
            base["HTTP_PROXY"] = self.proxy.url()
        (self.tmp / "home").mkdir(exist_ok=True)
        hook = f"{sys.executable} {HOOK} {self.records}"
        commands = {
            name: getattr(self.settings, name).replace("{hook}", hook)
            for name in ("setup_command", "teardown_command", "dispatch_command", "cancel_command")
            if getattr(self.settings, name) is not None
        }
        (self.tmp / "shared").mkdir(exist_ok=True)
        volumes = tuple(v.replace("{tmp}", str(self.tmp)) for v in self.settings.volumes)
        return launch(
            self.worker,
            attrs.evolve(self.settings, volumes=volumes, **commands),
            url=f"ws://{self.url_host}:{self._port}/api/v1/selfhosted/worker/ws",
            root_url=f"http://127.0.0.1:{self._port}",
            workspace_root=self.workspaces,
            metrics_port=self.metrics_port,
            base_env=base,
        )

    async def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._start_runtime()
        if self._use_proxy:
            self.proxy = await nursery.start(self._run_proxy)
        await self._start_server()
        spec = self._launch()
        config = self.tmp / spec.config_name
        config.write_text(spec.config)
        argv = [part.replace("{config}", str(config)) for part in spec.argv]
        nursery.start_soon(self._run_worker, argv, spec.env)
        await self.connected()

    async def _run_proxy(self, *, task_status: trio.TaskStatus[Tinyproxy]) -> None:
        async with running_tinyproxy(self.tmp / "proxy") as proxy:
            task_status.started(proxy)
            await trio.sleep_forever()

    async def _run_worker(self, argv: list[str], env: dict[str, str]) -> None:
        with (self.tmp / "worker.log").open("wb") as log:
            self._process = await trio.lowlevel.open_process(
                argv,
                env=env,
                cwd=self.tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                self.returncode = await self._process.wait()
            finally:
                with trio.CancelScope(shield=True):
                    if self._process.returncode is None:
                        os.killpg(self._process.pid, signal.SIGKILL)
                        await self._process.wait()
                self.exited.set()

    def _start_runtime(self) -> None:
        handler = type("Runtime", (_Runtime,), {"status": self.runtime_status})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._runtime_port = httpd.server_address[1]
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def pid(self) -> int:
        """The worker process's pid (once :meth:`start` returned)."""
        assert self._process is not None
        return self._process.pid

    async def sigterm(self) -> None:
        """SIGTERM the worker and wait for it to exit."""
        assert self._process is not None
        if self._process.returncode is None:
            self._process.send_signal(signal.SIGTERM)
        with self._bounded("the worker to exit after SIGTERM"):
            await self.exited.wait()

    # -- frames to the worker ---------------------------------------------

    def assignment(
        self,
        task_id: str,
        prompt: str | None = "echo done",
        *,
        execution_id: str | None = None,
        env: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """An assignment's data: the stand-in agent records itself, then runs ``prompt``."""
        run = task_id if execution_id is None else f"{task_id}.{execution_id}"
        env_vars = {
            "OZ_STANDIN_RECORD": str(self.records / f"agent-{run}.json"),
            "OZ_STANDIN_PIDFILE": str(self.records / f"pids-{task_id}"),
            **(env or {}),
        }
        if prompt is not None:
            env_vars["OZ_STANDIN_PROMPT"] = prompt
        task = {
            "id": task_id,
            "title": f"conformance {task_id}",
            "task_definition": {"prompt": "a conformance scenario"},
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            **fields.pop("task", {}),
        }
        data: dict[str, Any] = {"task_id": task_id, "task": task, "env_vars": env_vars}
        if execution_id is not None:
            data["execution_id"] = execution_id
        return data | fields

    async def assign(self, task_id: str, prompt: str | None = "echo done", **kw: Any) -> None:
        data = self.assignment(task_id, prompt, **kw)
        await self.send(json.dumps({"type": "task_assignment", "data": data}))

    async def cancel(self, task_id: str) -> None:
        await self.send(json.dumps({"type": "task_cancellation", "data": {"task_id": task_id}}))

    async def send(self, frame: str) -> None:
        with self._bounded("a connection to send on"):
            await self.server.send(frame)

    # -- waiting -------------------------------------------------------------

    def frames(self) -> Iterator[dict[str, Any]]:
        for server in self.servers:
            for record in server.received:
                frame: dict[str, Any] = json.loads(record.frame)
                yield frame

    def count(self, task_id: str, kind: str) -> int:
        return sum(
            1
            for frame in self.frames()
            if frame.get("type") == kind and frame.get("data", {}).get("task_id") == task_id
        )

    def terminals(self, task_id: str) -> int:
        return self.count(task_id, "task_completed") + self.count(task_id, "task_failed")

    async def frame(self, task_id: str, kind: str, count: int = 1) -> None:
        """Wait until the server has ``count`` frames of ``kind`` for ``task_id``."""
        await self.until(lambda: self.count(task_id, kind) >= count, f"{count}x {kind} {task_id}")

    async def terminal(self, task_id: str, count: int = 1) -> None:
        await self.until(lambda: self.terminals(task_id) >= count, f"{count}x result {task_id}")

    async def agent(self, task_id: str, runs: int = 1) -> None:
        """Wait until ``runs`` agents of ``task_id`` have started."""
        await self.until(lambda: len(self.agent_pids(task_id)) >= runs, f"agent {task_id}")

    async def hook(self, name: str, task_id: str) -> None:
        path = self.records / f"{name}-{task_id}.json"
        await self.until(path.exists, f"hook {name} {task_id}")

    async def gone(self, path: Path) -> None:
        await self.until(lambda: not path.exists(), f"{path.name} removed")

    async def agents_exited(self, task_id: str) -> None:
        await self.until(
            lambda: not any(alive(pid) for pid in self.agent_pids(task_id)),
            f"agents of {task_id} to exit",
        )

    def agent_pids(self, task_id: str) -> list[int]:
        path = self.records / f"pids-{task_id}"
        if not path.exists():
            return []
        return [int(line) for line in path.read_text().split()]

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Poll ``condition`` (files and other processes fire no events here)."""
        with self._bounded(what):
            while not condition():  # noqa: ASYNC110 - no event to wait on, see above
                await trio.sleep(POLL)

    def _bounded(self, what: str) -> _Bounded:
        return _Bounded(self, what)

    # -- docker --------------------------------------------------------------

    async def container(self, task_id: str, image: str, ready: str) -> None:
        """Wait for the task container of ``image`` to log ``ready``; keep its config."""
        world = self.docker
        assert world is not None

        def seen() -> bool:
            for container in world.containers(image):
                logs = world.logs(container)
                if ready in logs:
                    self.containers[task_id] = container_config(world.inspect(container), logs)
                    return True
            return False

        await self.until(seen, f"container of {task_id}")

    # -- scraping ------------------------------------------------------------

    async def scrape(self) -> str:
        def get() -> str:
            with socket.create_connection(("127.0.0.1", self.metrics_port), timeout=10) as sock:
                sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            _head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
            return body.decode()

        try:
            return await trio.to_thread.run_sync(get)
        except OSError as exc:
            return f"# scrape failed: {exc.__class__.__name__}"


class _Bounded:
    """``with`` block: give up after :data:`WAIT` and note what was awaited."""

    def __init__(self, session: Session, what: str) -> None:
        self.session = session
        self.what = what
        self.scope = trio.move_on_after(WAIT)

    def __enter__(self) -> None:
        self.scope.__enter__()

    def __exit__(self, *exc: object) -> bool:
        handled = self.scope.__exit__(*exc)  # type: ignore[arg-type]
        if self.scope.cancelled_caught:
            self.session.timed_out.append(self.what)
            raise StepTimeout(self.what)
        return bool(handled)
