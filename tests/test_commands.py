"""The operator commands as real processes: demo, smoke, check, --once, dev-server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import trio

from ozw.wire.codec import TaskClaimed, TaskCompleted, TaskRejected
from tests.support.ozw_command import smoke_task
from tests.support.ozw_process import REPO, STANDIN_AGENT, OzwProcess
from tests.support.worker import API_KEY, assignment, start_server, terminal_for


def ozw(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ozw", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env or {k: v for k, v in os.environ.items() if not k.startswith("WARP_")},
        timeout=timeout,
        check=False,
    )


def direct_config(tmp_path: Path, extra: str = "", port: int = 9) -> Path:
    path = tmp_path / "direct.toml"
    path.write_text(
        f"""
worker_id = "cmd-test"
[server]
websocket_url = "ws://127.0.0.1:{port}/ws"
[backend.direct]
workspace_root = "{tmp_path / "ws"}"
oz_path = "{STANDIN_AGENT}"
{extra}
"""
    )
    return path


def test_smoke_passes_for_the_direct_example_config() -> None:
    result = ozw("smoke", "--config", "config/examples/direct.toml", "--timeout", "60s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("smoke: ok: task smoke-")


def test_smoke_fails_clearly_with_the_agent_output(tmp_path: Path) -> None:
    task = smoke_task(tmp_path, "bad-1", "echo compiling; stderr it broke; exit 5")
    result = ozw("smoke", "--config", str(direct_config(tmp_path)), "--task", str(task))
    assert result.returncode == 1
    assert "smoke: FAILED: task bad-1 failed (agent_invocation), exit code 5" in result.stdout
    assert "[agent stderr] it broke" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_smoke_refuses_a_broken_config_in_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('worker_id = "x"\n[backend.direct]\nworkspace_rot = "/tmp"\n')
    result = ozw("smoke", "--config", str(broken))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"ozw: error: {broken}: backend.direct.workspace_rot: unknown key "
        "(did you mean `workspace_root`?)"
    ]


async def test_check_reports_each_prerequisite(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARP_")}
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)  # check dials it with the key
        config = direct_config(tmp_path, port=server.port or 0)
        # Metrics somewhere (else check warns that none go anywhere).
        served = {**env, "WARP_API_KEY": API_KEY, "OTEL_METRICS_EXPORTER": "prometheus"}
        good = await trio.to_thread.run_sync(
            lambda: ozw("check", "--config", str(config), env=served)
        )
        nursery.cancel_scope.cancel()
    assert good.returncode == 0, good.stdout
    assert API_KEY not in good.stdout
    lines = good.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok"] * len(lines)
    assert any("api key" in line and "present" in line for line in lines)
    assert any(
        "telemetry" in line and "Prometheus scrape on localhost:9464" in line for line in lines
    )

    missing = (
        direct_config(tmp_path, 'setup_command = "true"')
        .read_text()
        .replace(str(STANDIN_AGENT), str(tmp_path / "no-such-oz"))
    )
    (tmp_path / "bad.toml").write_text(missing)
    bad = await trio.to_thread.run_sync(
        lambda: ozw("check", "--config", str(tmp_path / "bad.toml"), env=env)
    )
    assert bad.returncode == 1
    failing = [line for line in bad.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 2
    assert "api key" in failing[0]
    assert "no-such-oz" in failing[1]


async def test_once_runs_one_task_then_exits_0(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        config = direct_config(tmp_path, port=server.port or 0)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARP_")}
        env["WARP_API_KEY"] = API_KEY
        proc = await nursery.start(OzwProcess(["--config", str(config), "--once"], env).run)
        with trio.fail_after(30):
            await server.wait_connected()
            first = assignment("first")
            first.env_vars["OZ_STANDIN_PROMPT"] = "echo working; sleep 0.5"
            await server.send(first)
            await server.send(assignment("second"))
            await server.wait_for(terminal_for("first"))
            assert await proc.wait() == 0
        assert server.messages_for("first") == [
            TaskClaimed("first", "cmd-test"),
            TaskCompleted("first", "Task completed successfully"),
        ]
        assert server.messages_for("second") == [TaskRejected("second", "worker shutting down")]
        assert "finished 1 task(s) (--max-tasks)" in proc.log
        nursery.cancel_scope.cancel()


async def test_dev_server_command_sends_assignments_and_records_messages(tmp_path: Path) -> None:
    assignments = tmp_path / "tasks.jsonl"
    assignments.write_text(json.dumps({"task_id": "from-file", "task": {"id": "from-file"}}) + "\n")
    record = tmp_path / "record.jsonl"
    probe = trio.socket.socket()
    await probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARP_")}
    async with trio.open_nursery() as nursery:
        dev = await nursery.start(
            OzwProcess(
                [
                    "dev-server",
                    "--port",
                    str(port),
                    "--api-key",
                    API_KEY,
                    "--assignments",
                    str(assignments),
                    "--record",
                    str(record),
                ],
                env,
            ).run
        )
        await dev.wait_line("listening on")
        config = direct_config(tmp_path, port=port)
        worker = await nursery.start(
            OzwProcess(["--config", str(config), "--once"], {**env, "WARP_API_KEY": API_KEY}).run
        )
        with trio.fail_after(30):
            assert await worker.wait() == 0
        lines = [json.loads(line) for line in record.read_text().splitlines()]
        assert [(line["type"], line["data"]["task_id"]) for line in lines] == [
            ("task_claimed", "from-file"),
            ("task_completed", "from-file"),
        ]
        assert lines[0]["worker_id"] == "cmd-test"
        nursery.cancel_scope.cancel()


async def test_json_logs_carry_task_ids_and_never_a_secret(tmp_path: Path) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        config = direct_config(
            tmp_path,
            'setup_command = "echo setup ran"\nteardown_command = "echo teardown ran"',
            port=server.port or 0,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARP_")}
        env["WARP_API_KEY"] = API_KEY
        args = ["--config", str(config), "--once", "--log-format", "json", "--log-level", "debug"]
        proc = await nursery.start(OzwProcess(args, env).run)
        with trio.fail_after(30):
            task = assignment("json-1")
            task.env_vars.update({"GITHUB_ACCESS_TOKEN": secret, "OZ_STANDIN_PROMPT": "echo hi"})
            await server.send(task)
            assert await proc.wait() == 0
        records = [json.loads(line) for line in proc.lines if line.strip()]
        assert records, "no log lines"
        for record in records:
            assert {"time", "level", "logger", "message"} <= record.keys()
        task_lines = [r for r in records if r.get("task_id") == "json-1"]
        messages = [r["message"] for r in task_lines]
        assert "claimed (execution -)" in messages
        assert any(r.get("stream") == "agent stdout" and r["message"] == "hi" for r in task_lines)
        assert any(r.get("stream") == "setup stdout" for r in task_lines)
        assert any(r.get("stream") == "teardown stdout" for r in task_lines)
        everything = "\n".join(proc.lines)
        assert secret not in everything
        assert API_KEY not in everything
        nursery.cancel_scope.cancel()


def test_a_backend_that_fails_its_start_up_check_stops_the_worker_in_one_line(
    tmp_path: Path,
) -> None:
    config = direct_config(tmp_path).read_text().replace(str(STANDIN_AGENT), "/nonexistent/oz")
    (tmp_path / "bad.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARP_")}
    result = ozw("--config", str(tmp_path / "bad.toml"), env={**env, "WARP_API_KEY": API_KEY})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == "ozw: error: direct backend: oz CLI /nonexistent/oz does not exist"


def test_a_metrics_port_in_use_is_an_error_line_not_a_log_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = ozw(
            "--config",
            str(direct_config(tmp_path)),
            "--metrics-addr",
            address,
            env={**os.environ, "WARP_API_KEY": API_KEY},
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"ozw: error: cannot serve metrics on {address}: Address already in use"
    assert not [line for line in lines if " ERROR " in line], result.stderr


def test_an_unresolvable_server_host_is_named(tmp_path: Path) -> None:
    config = direct_config(tmp_path).read_text().replace("127.0.0.1:9", "nosuchhost.invalid:9")
    (tmp_path / "unresolvable.toml").write_text(config)
    result = ozw(
        "check",
        "--config",
        str(tmp_path / "unresolvable.toml"),
        env={**os.environ, "WARP_API_KEY": API_KEY},
    )
    assert result.returncode == 1
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("FAIL server ")]
    assert "cannot connect: cannot resolve nosuchhost.invalid: " in line, line


def test_no_api_key_is_one_line_naming_both_ways_to_give_it() -> None:
    result = ozw("--config", "config/examples/docker.toml")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ozw: error: no API key: pass --api-key KEY or set WARP_API_KEY"
    ]
