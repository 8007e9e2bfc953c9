"""The worker core against a real WebSocket server on 127.0.0.1, with an in-test backend."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from ozw.config import WorkerConfig
from ozw.dev.server import DispatchServer
from ozw.link.connection import ConnectionSettings
from ozw.wire.codec import (
    REJECT_AT_CAPACITY,
    REJECT_SHUTTING_DOWN,
    TaskCancellation,
    TaskClaimed,
    TaskCompleted,
    TaskFailed,
    TaskRejected,
)
from ozw.worker import Worker
from tests.support.scripted_backend import ScriptedBackend
from tests.support.worker import (
    API_KEY,
    assignment,
    fast_settings,
    running_worker,
    start_server,
    start_stoppable_server,
    start_worker,
    terminal_for,
)

CANCELLED = "Task cancelled by user request."


@asynccontextmanager
async def scripted_worker(
    **config: Any,
) -> AsyncIterator[tuple[ScriptedBackend, DispatchServer, Worker]]:
    """A worker (``config``: WorkerConfig fields) on a fresh scripted backend: that
    backend, the dispatch server and the worker."""
    backend = ScriptedBackend()
    async with running_worker(backend, **config) as local:
        yield backend, local.server, local.worker


async def test_claim_is_queued_before_execution_and_completion_follows() -> None:
    backend = ScriptedBackend()
    claimed_at_setup: list[bool] = []
    async with running_worker(backend) as local:
        server, worker = local.server, local.worker
        backend.on_setup = lambda params: claimed_at_setup.append(
            any(isinstance(m, TaskClaimed) for m in worker.outbox.pending)
            or any(isinstance(m, TaskClaimed) for m in server.messages_for(params.task_id))
        )
        with trio.fail_after(10):
            await server.send(assignment("t1", "gate"))
            await backend.started["t1"].wait()
            # Claimed arrives while the agent is still running.
            await server.wait_for(lambda m: isinstance(m, TaskClaimed))
            backend.gates["t1"].set()
            done = await server.wait_for(terminal_for("t1"))
        assert claimed_at_setup == [True]
        assert done == TaskCompleted("t1", "Task completed successfully")
        assert server.messages_for("t1") == [TaskClaimed("t1", "w1"), done]
        assert server.received[0].worker_id == "w1"


async def test_hundred_mixed_tasks_each_get_exactly_one_terminal_message() -> None:
    backend = ScriptedBackend()
    kinds = ["ok", "fail:3", "cancel", "timeout"] * 25
    random.Random(7).shuffle(kinds)
    async with running_worker(backend, task_timeout=2.0) as local:
        server, worker = local.server, local.worker
        with trio.fail_after(30):
            for number, kind in enumerate(kinds):
                behaviour = {"cancel": "block", "timeout": "block"}.get(kind, kind)
                await server.send(assignment(f"t{number}", behaviour))
                if kind == "cancel":
                    # At once: the cancellation must win over the timeout whatever the load.
                    await server.send(TaskCancellation(f"t{number}"))
            await server.wait_until(
                lambda: all(
                    any(
                        isinstance(m, TaskCompleted | TaskFailed)
                        for m in server.messages_for(f"t{n}")
                    )
                    for n in range(100)
                )
            )
            await worker.supervisor.wait_idle()
            await worker.outbox.wait_empty()
        for number, kind in enumerate(kinds):
            messages = server.messages_for(f"t{number}")
            assert messages[0] == TaskClaimed(f"t{number}", "w1")
            terminal = messages[1:]
            assert len(terminal) == 1, (number, kind, messages)
            match kind:
                case "ok":
                    assert terminal[0] == TaskCompleted(f"t{number}", "Task completed successfully")
                case "fail:3":
                    assert isinstance(terminal[0], TaskFailed)
                    assert terminal[0].failure_reason == "agent_invocation"
                    assert terminal[0].exit_code == 3
                    assert terminal[0].message == "Failed to execute task: agent failed"
                case "cancel":
                    assert terminal[0] == TaskCompleted(f"t{number}", CANCELLED, "CANCELLED")
                case "timeout":
                    assert isinstance(terminal[0], TaskFailed)
                    assert terminal[0].failure_reason == "task_timeout"
                    assert terminal[0].message == "Failed to execute task: task timed out after 2s"
                    assert terminal[0].exit_code is None
            # Teardown ran exactly once for every task.
            assert backend.calls.count(("teardown", f"t{number}")) == 1
        assert not worker.supervisor.active


async def test_rejects_at_capacity_and_releases_slots_whatever_the_outcome() -> None:
    async with scripted_worker(max_concurrent_tasks=2) as (backend, server, worker):
        with trio.fail_after(10):
            await server.send(assignment("a", "gate"))
            await server.send(assignment("b", "block"))
            await backend.started["a"].wait()
            await backend.started["b"].wait()
            await server.send(assignment("c"))
            rejected = await server.wait_for(lambda m: isinstance(m, TaskRejected))
            assert rejected == TaskRejected("c", REJECT_AT_CAPACITY)
            assert backend.executions("c") == 0
            # Free one slot by success, one by cancellation; a crash must free its slot too.
            backend.gates["a"].set()
            await server.send(TaskCancellation("b"))
            await server.wait_for(terminal_for("a"))
            await server.wait_for(terminal_for("b"))
            await server.send(assignment("d", "crash"))
            crashed = await server.wait_for(terminal_for("d"))
            assert isinstance(crashed, TaskFailed)
            assert crashed.failure_reason == "unknown"
            await server.send(assignment("e", "gate"))
            await server.send(assignment("f", "gate"))
            await backend.started["e"].wait()
            await backend.started["f"].wait()
            assert len(worker.supervisor.active) == 2
            backend.gates["e"].set()
            backend.gates["f"].set()
            await server.wait_for(terminal_for("f"))
            await server.wait_for(terminal_for("e"))
        assert [m for m in server.messages_for("c")] == [TaskRejected("c", REJECT_AT_CAPACITY)]
        assert backend.cancelled == ["b"]


async def test_a_repeated_assignment_is_claimed_again_and_runs_once() -> None:
    async with scripted_worker() as (backend, server, _):
        with trio.fail_after(10):
            await server.send(assignment("dup", "gate"))
            await backend.started["dup"].wait()
            await server.send(assignment("dup", "gate"))
            # A later task proves the worker has read (and answered) the repeat.
            await server.send(assignment("after"))
            await server.wait_for(terminal_for("after"))
            backend.gates["dup"].set()
            await server.wait_for(terminal_for("dup"))
        assert backend.executions("dup") == 1
        kinds = [type(m) for m in server.messages_for("dup")]
        assert kinds == [TaskClaimed, TaskClaimed, TaskCompleted]


async def test_result_of_a_task_finished_while_the_server_was_down_arrives_on_reconnect() -> None:
    backend = ScriptedBackend()
    async with trio.open_nursery() as nursery:
        first, first_scope = await start_stoppable_server(nursery)
        worker = await start_worker(nursery, first.url, backend)
        with trio.fail_after(10):
            await first.send(assignment("r1", "gate"))
            await first.wait_for(lambda m: isinstance(m, TaskClaimed))
            first_scope.cancel()  # the server goes away mid-task
            await worker.connection.wait_connected(False)
            backend.gates["r1"].set()
            await backend.torn_down["r1"].wait()
            # Kept while disconnected (with the claim, unless a pong confirmed it).
            assert worker.outbox.pending[-1] == TaskCompleted("r1", "Task completed successfully")
            second = await start_server(nursery, port=first.port or 0)
            done = await second.wait_for(terminal_for("r1"))
            await worker.outbox.wait_empty()
        assert done == TaskCompleted("r1", "Task completed successfully")
        assert first.messages_for("r1") == [TaskClaimed("r1", "w1")]
        # Delivered once, in order; an unconfirmed claim may be repeated before it.
        assert second.messages_for("r1")[-1] == done
        assert set(map(type, second.messages_for("r1")[:-1])) <= {TaskClaimed}
        nursery.cancel_scope.cancel()


async def test_a_silent_server_is_declared_dead_and_the_worker_reconnects() -> None:
    from tests.support.tcp_proxy import FreezableProxy

    backend = ScriptedBackend()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        proxy = FreezableProxy(server.port or 0)
        proxy_port = await nursery.start(proxy.serve)
        url = f"ws://127.0.0.1:{proxy_port}/ws"
        worker = await start_worker(
            nursery, url, backend, settings=fast_settings(url, dead_after=0.3)
        )
        with trio.fail_after(10):
            await worker.connection.wait_connected()
            proxy.freeze()
            await worker.connection.wait_connected(False)
            assert worker.connection.last_error == "no word from the server for 0.3s"
            await worker.connection.wait_connected()
            # The new connection works: a task runs end to end through it.
            await server.send(assignment("after-silence"))
            await server.wait_for(terminal_for("after-silence"))
        assert worker.connection.connects == 2
        assert proxy.accepted == 2
        nursery.cancel_scope.cancel()


async def test_malformed_frames_are_skipped_while_other_tasks_carry_on() -> None:
    async with scripted_worker() as (backend, server, _):
        with trio.fail_after(10):
            await server.send(assignment("running", "gate"))
            await backend.started["running"].wait()
            for frame in [
                "not json",
                "[1, 2]",
                '{"type": "task_assignment", "data": []}',
                '{"type": "task_assignment", "data": {"task_id": "no-task"}}',
                '{"type": "task_assignment", "data": {"task_id": 5, "task": {"id": "x"}}}',
                '{"type": "task_cancellation", "data": {}}',
                '{"type": "something_new", "data": {"task_id": "x"}}',
                '{"type": "task_cancellation", "data": {"task_id": "not-here"}}',
            ]:
                await server.send(frame)
            await server.send(assignment("next"))
            await server.wait_for(terminal_for("next"))
            backend.gates["running"].set()
            await server.wait_for(terminal_for("running"))
        assert server.messages_for("no-task") == []
        assert server.messages_for("not-here") == []
        assert backend.cancelled == []
        assert [type(m) for m in server.messages_for("running")] == [TaskClaimed, TaskCompleted]


async def test_handshake_carries_worker_id_query_and_bearer_key() -> None:
    backend = ScriptedBackend()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        url = server.url + "?region=eu"
        # A wrong key is refused by the server; the worker keeps retrying.
        wrong = Worker(
            WorkerConfig(worker_id="bad"),
            backend,
            connection_settings=ConnectionSettings(
                url, "bad", "wrong-key", backoff_initial=0.01, backoff_max=0.02
            ),
        )
        wrong_scope = trio.CancelScope()

        async def run_wrong() -> None:
            with wrong_scope:
                await wrong.run(handle_signals=False)

        nursery.start_soon(run_wrong)
        with trio.fail_after(10):
            await server.wait_until(lambda: server.rejected_handshakes >= 2)
            assert wrong.connection.last_error == (
                "API key rejected: check WARP_API_KEY (HTTP 401)"
            )
            wrong_scope.cancel()
            worker = await start_worker(nursery, url, backend, settings=fast_settings(url))
            await worker.connection.wait_connected()
        assert server.paths[0] == "/api/v1/selfhosted/worker/ws?region=eu&worker_id=bad"
        assert server.paths[-1] == "/api/v1/selfhosted/worker/ws?region=eu&worker_id=w1"
        assert API_KEY not in "".join(server.paths)
        nursery.cancel_scope.cancel()


async def test_worker_keeps_dialling_until_the_server_appears() -> None:
    backend = ScriptedBackend()
    async with trio.open_nursery() as nursery:
        # Reserve a free port, release it, and start the server there only later.
        probe = trio.socket.socket()
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        url = f"ws://127.0.0.1:{port}/ws"
        worker = await start_worker(nursery, url, backend, settings=fast_settings(url))
        with trio.fail_after(10):
            await worker.connection.wait_failed_attempt()
            assert (worker.connection.last_error or "").startswith("cannot connect")
            server = await start_server(nursery, port=port)
            await worker.connection.wait_connected()
            await server.send(assignment("late"))
            await server.wait_for(terminal_for("late"))
        nursery.cancel_scope.cancel()


async def test_handed_off_task_reports_nothing_and_a_later_cancel_reaches_the_backend() -> None:
    backend = ScriptedBackend()
    async with running_worker(backend, max_concurrent_tasks=1) as local:
        server, supervisor = local.server, local.worker.supervisor
        with trio.fail_after(10):
            await server.send(assignment("h", "handoff"))
            await backend.torn_down["h"].wait()
            await supervisor.wait_idle()
            # The slot is free at once: the next task is claimed, not rejected.
            await server.send(assignment("n"))
            await server.wait_for(terminal_for("n"))
            await server.send(TaskCancellation("h"))
            await server.send(assignment("n2"))
            await server.wait_for(terminal_for("n2"))
        assert server.messages_for("h") == [TaskClaimed("h", "w1")]
        assert backend.cancelled == ["h"]
        assert "h" not in supervisor.handed_off


async def test_graceful_stop_cancels_tasks_runs_teardown_reports_and_closes_normally() -> None:
    backend = ScriptedBackend()
    close_codes: list[int] = []
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        worker = Worker(
            WorkerConfig(worker_id="w1", api_key=API_KEY, shutdown_grace=10),
            backend,
            connection_settings=fast_settings(server.url),
        )
        exit_codes: list[int] = []
        stopped = trio.Event()

        async def run_worker() -> None:
            exit_codes.append(await worker.run(handle_signals=False))
            stopped.set()

        nursery.start_soon(run_worker)
        with trio.fail_after(10):
            ws = await server.wait_connected()
            await server.send(assignment("long", "block"))
            await server.send(assignment("slow", "slow-teardown"))
            await backend.started["long"].wait()
            await backend.started["slow"].wait()
            worker.request_stop("test")
            # Teardown of "slow" is still running: new work is refused meanwhile.
            await server.send(assignment("late"))
            await server.wait_for(lambda m: isinstance(m, TaskRejected))
            backend.gates["slow"].set()
            await stopped.wait()
            close_codes.append(ws.closed.code if ws.closed else -1)
        assert exit_codes == [0]
        long_msgs = server.messages_for("long")
        assert isinstance(long_msgs[-1], TaskFailed)
        assert long_msgs[-1].failure_reason == "graceful_shutdown"
        assert backend.torn_down["long"].is_set()
        assert backend.torn_down["slow"].is_set()
        assert server.messages_for("late") == [TaskRejected("late", REJECT_SHUTTING_DOWN)]
        assert close_codes == [1000]
        assert not backend.closed  # whoever made the backend closes it (runner.serve)
        nursery.cancel_scope.cancel()


async def test_a_server_speaking_garbage_is_retried_never_fatal() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: bogus\r\n\r\n",
        b"\x00\xff not http at all\r\n\r\n",
    ]

    async def garbage(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some()
            await stream.send_all(answers[0])
            answers.append(answers.pop(0))

    backend = ScriptedBackend()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, garbage, 0)
        port = listeners[0].socket.getsockname()[1]
        url = f"ws://127.0.0.1:{port}/ws"
        worker = await start_worker(nursery, url, backend, settings=fast_settings(url))
        with trio.fail_after(10):
            for _ in range(6):  # every kind of garbage, twice
                await worker.connection.wait_failed_attempt()
        assert not worker.connection.connected
        assert worker.connection.last_error
        nursery.cancel_scope.cancel()


async def test_stopping_while_disconnected_dials_at_once_to_deliver_results() -> None:
    backend = ScriptedBackend()
    async with trio.open_nursery() as nursery:
        first, first_scope = await start_stoppable_server(nursery)
        # A long back-off: only an immediate redial can deliver within the deadline below.
        settings = fast_settings(first.url, backoff_initial=30.0, backoff_max=60.0)
        worker = await start_worker(nursery, first.url, backend, settings=settings)
        with trio.fail_after(10):
            await first.send(assignment("late-result", "gate"))
            await backend.started["late-result"].wait()
            first_scope.cancel()
            await worker.connection.wait_connected(False)
            backend.gates["late-result"].set()
            await backend.torn_down["late-result"].wait()
            second = await start_server(nursery, port=first.port or 0)
            worker.request_stop("test")
            done = await second.wait_for(terminal_for("late-result"))
        assert done == TaskCompleted("late-result", "Task completed successfully")
        nursery.cancel_scope.cancel()


async def test_a_forced_stop_still_sends_what_is_already_known() -> None:
    # The agent finished; its teardown hangs; the operator presses Ctrl-C twice.
    async with scripted_worker(shutdown_grace=60) as (backend, server, worker):
        with trio.fail_after(10):
            await server.send(assignment("stuck", "slow-teardown"))
            await backend.started["stuck"].wait()
            worker.request_stop("test")
            await backend.calls_changed_to(("teardown", "stuck"))
            worker.force_stop("test again")
            done = await server.wait_for(terminal_for("stuck"))
        assert done == TaskCompleted("stuck", "Task completed successfully")
        assert backend.killed
        assert worker.exit_code == 130
