"""``ozw check`` as a real process against a real local dispatch server (and tinyproxy)."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from ozw.cli.check import dispatch_command_check
from ozw.dev.server import DispatchServer
from tests.support.ozw_process import REPO, STANDIN_AGENT, OzwProcess
from tests.support.tinyproxy import running_tinyproxy
from tests.support.worker import (
    API_KEY,
    dial_once,
    fast_settings,
    start_server,
    start_stoppable_server,
)
from tests.test_metrics import http_get


def write_config(tmp_path: Path, port: int, worker_id: str = "check-test", extra: str = "") -> Path:
    path = tmp_path / "worker.toml"
    path.write_text(
        f"""
worker_id = "{worker_id}"
[server]
websocket_url = "ws://127.0.0.1:{port}/api/v1/selfhosted/worker/ws"
{extra}
[backend.direct]
workspace_root = "{tmp_path / "ws"}"
oz_path = "{STANDIN_AGENT}"
"""
    )
    return path


def environment(api_key: str | None = API_KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARP_")}
    return env if api_key is None else {**env, "WARP_API_KEY": api_key}


async def ozw_check(config: Path, env: dict[str, str], *args: str) -> tuple[int, dict[str, str]]:
    """Run ``ozw check``; returns its exit code and its lines by check name."""
    result = await trio.run_process(
        [sys.executable, "-m", "ozw", "check", "--config", str(config), *args],
        capture_stdout=True,
        capture_stderr=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    out = result.stdout.decode()
    assert result.stderr == b"", result.stderr
    assert "Traceback" not in out
    lines = {}
    for line in out.splitlines():
        level, name_and_detail = line[:4].strip(), line[5:]
        name, _, detail = name_and_detail.partition("  ")
        lines[name.strip()] = f"{level} {detail.strip()}"
    return result.returncode, lines


async def test_check_dials_the_server_and_reports_an_accepted_key(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        code, lines = await ozw_check(write_config(tmp_path, server.port or 0), environment())
        assert lines["server"] == "ok the server accepted the API key"
        assert code == 0, lines
        assert server.connections == 1
        assert server.paths == ["/api/v1/selfhosted/worker/ws?worker_id=check-test"]
        nursery.cancel_scope.cancel()


async def test_check_says_the_api_key_was_rejected(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        env = environment("not-the-right-key")
        code, lines = await ozw_check(write_config(tmp_path, server.port or 0), env)
        assert code == 1
        assert lines["server"] == "FAIL API key rejected: check WARP_API_KEY (HTTP 401)"
        assert lines["api key"] == "ok present (not shown)"
        assert server.rejected_handshakes == 1
        assert server.connections == 0
        nursery.cancel_scope.cancel()


async def test_check_names_the_cause_of_an_unreachable_server(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        port = server.port or 0
        nursery.cancel_scope.cancel()
    # The server has stopped: its port is closed.
    code, lines = await ozw_check(write_config(tmp_path, port), environment())
    assert code == 1
    assert lines["server"].startswith(
        f"FAIL cannot connect: all attempts to connect to 127.0.0.1:{port} failed: "
    )
    assert lines["server"].endswith("Connection refused")


async def test_check_skips_the_dial_without_a_key(tmp_path: Path) -> None:
    code, lines = await ozw_check(write_config(tmp_path, 9), environment(None))
    assert code == 1
    assert lines["api key"] == "FAIL missing: pass --api-key or set WARP_API_KEY"
    assert lines["server"] == "skip not dialled without an API key"


async def test_check_dials_through_the_proxy_setting(tmp_path: Path) -> None:
    async with (
        running_tinyproxy(tmp_path / "proxy", basic_auth=("checker", "Ch3ckPass")) as tinyproxy,
        trio.open_nursery() as nursery,
    ):
        server = await start_server(nursery)
        config = write_config(tmp_path, server.port or 0)
        good = tinyproxy.url("checker:Ch3ckPass")
        code, lines = await ozw_check(config, environment(), "--proxy-url", good)
        assert (
            lines["server"]
            == f"ok the server accepted the API key through proxy {tinyproxy.address}"
        )
        assert code == 0
        bad = tinyproxy.url("checker:wrong")
        code, lines = await ozw_check(config, environment(), "--proxy-url", bad)
        assert code == 1
        assert lines["server"] == (
            f"FAIL cannot connect: proxy {tinyproxy.address} refused CONNECT "
            f"127.0.0.1:{server.port}: HTTP 401 Unauthorized; check the credentials in "
            "server.proxy_url"
        )
        assert await tinyproxy.tunnels() == [f"127.0.0.1:{server.port}"] * 2
        assert server.connections == 1
        nursery.cancel_scope.cancel()


async def test_check_warns_on_the_starter_worker_id(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        config = write_config(tmp_path, server.port or 0, worker_id="my-worker")
        code, lines = await ozw_check(config, environment())
        assert lines["worker_id"] == (
            "warn 'my-worker' is the starter file's placeholder: give each worker its own id"
        )
        assert code == 0  # a warning, not a failure
        nursery.cancel_scope.cancel()


async def test_check_verifies_the_dispatch_command(tmp_path: Path) -> None:
    script = tmp_path / "dispatch.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    config = tmp_path / "command.toml"
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        for mode, expected in (
            (0o644, f"FAIL {script} is not executable (chmod +x {script})"),
            (0o755, f"ok {script} is executable"),
        ):
            script.chmod(mode)
            config.write_text(
                f"""
worker_id = "check-test"
[server]
websocket_url = "ws://127.0.0.1:{server.port}/ws"
[backend.command]
dispatch_command = "{script} --task-file x.json"
"""
            )
            code, lines = await ozw_check(config, environment())
            assert lines["dispatch_command"] == expected
            assert code == (0 if mode == 0o755 else 1)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("command", "level", "detail"),
    [
        ("/no/such/dispatch.sh", "FAIL", "/no/such/dispatch.sh does not exist"),
        ("no-such-program-ozw --x", "FAIL", "'no-such-program-ozw' is not on PATH"),
        ("sh -c 'echo hi'", "ok", "sh is "),
        ("OZ_MODE=fast sh dispatch.sh", "ok", "sh is "),
        ("cd /srv && ./dispatch.sh", "skip", "starts with shell syntax: not checked"),
        ("$HOME/dispatch.sh", "skip", "starts with shell syntax: not checked"),
        ("'unterminated", "FAIL", "is not a valid shell command line"),
    ],
)
def test_dispatch_command_rules(command: str, level: str, detail: str) -> None:
    check = dispatch_command_check(command, os.environ.get("PATH", os.defpath))
    assert check.level == level
    assert detail in check.detail


async def test_a_daemon_with_a_rejected_key_retries_and_says_unauthorised(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        server = DispatchServer(API_KEY)
        await nursery.start(server.serve)
        config = write_config(tmp_path, server.port or 0)
        args = ["--config", str(config), "--metrics-addr", "127.0.0.1:0"]
        ozw = OzwProcess(args, environment("a-wrong-key"))
        await nursery.start(ozw.run)
        with trio.fail_after(30):
            metrics = await ozw.wait_line(r"metrics on http://127\.0\.0\.1:\d+/")
            port = int(metrics.split("127.0.0.1:")[1].split("/")[0])
            line = await ozw.wait_line("API key rejected")
            assert await http_get(port, "/healthz") == (
                503,
                "unauthorised: API key rejected: check WARP_API_KEY (HTTP 401)\n",
            )
            await ozw.wait_line("API key rejected.*reconnecting")  # still dialling
            ozw.send_signal(signal.SIGTERM)
            assert await ozw.wait() == 0
        assert "API key rejected: check WARP_API_KEY (HTTP 401)" in line
        assert "a-wrong-key" not in ozw.log
        nursery.cancel_scope.cancel()


async def test_once_with_a_rejected_key_exits_at_once_with_the_fix(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = DispatchServer(API_KEY)
        await nursery.start(server.serve)
        config = write_config(tmp_path, server.port or 0)
        ozw = OzwProcess(["--config", str(config), "--once"], environment("a-wrong-key"))
        await nursery.start(ozw.run)
        with trio.fail_after(30):
            assert await ozw.wait() == 1
        assert ozw.lines[-1] == "ozw: error: API key rejected: check WARP_API_KEY (HTTP 401)"
        assert server.rejected_handshakes == 1, "gave up at the first refusal"
        assert "a-wrong-key" not in ozw.log
        nursery.cancel_scope.cancel()


def test_check_with_a_broken_file_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('worker_id = "x"\n[server]\nproxy_url = "socks4://u:Secr3t@p:1"\n')
    result = subprocess.run(
        [sys.executable, "-m", "ozw", "check", "--config", str(broken)],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Secr3t" not in result.stdout + result.stderr
    assert len((result.stdout + result.stderr).strip().splitlines()) == 1


async def test_a_failed_handshake_is_never_logged_without_its_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def hold(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()  # a TCP peer that never answers the handshake

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, hold, 0, host="127.0.0.1")
        )
        silent_port = listeners[0].socket.getsockname()[1]
        stopped, scope = await start_stoppable_server(nursery)
        scope.cancel()  # its port is closed from now on
        for port, cause in (
            (silent_port, "cannot connect: no answer to the WebSocket handshake in time"),
            (stopped.port, "Connection refused"),
        ):
            settings = fast_settings(f"ws://127.0.0.1:{port}/ws", connect_timeout=0.2)
            connection = await dial_once(settings, succeed=False)
            assert cause in (connection.last_error or ""), connection.last_error
        nursery.cancel_scope.cancel()
    assert "HandshakeError" not in caplog.text
    assert "reconnecting in" in caplog.text


async def test_check_shows_where_telemetry_goes(tmp_path: Path) -> None:
    # OTLP to a listener that answers, to a port nothing listens on, a bad value, and
    # nothing set without metrics_addr (an operator from Go would lose metrics).
    config = write_config(tmp_path, 9)
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    base = environment(None)
    otlp = {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
    }
    _, lines = await ozw_check(config, {**base, **otlp})
    assert lines["telemetry"] == (
        f"ok metrics: OTLP http/protobuf to http://127.0.0.1:{port}/v1/metrics; traces: off"
    )
    await listener.aclose()
    _, lines = await ozw_check(config, {**base, **otlp})
    assert lines["telemetry"].startswith("warn metrics: OTLP"), lines["telemetry"]
    assert f"127.0.0.1:{port} cannot be reached (Connection refused)" in lines["telemetry"]
    _, lines = await ozw_check(config, {**base, "OTEL_TRACES_EXPORTER": "zipkin"})
    assert lines["telemetry"] == (
        "FAIL OTEL_TRACES_EXPORTER='zipkin' is not one of otlp, console, none"
    )
    _, lines = await ozw_check(config, base)
    assert lines["telemetry"].startswith(
        "warn metrics: off; traces: off: OTLP metrics export is off"
    )
