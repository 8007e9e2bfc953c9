"""The systemd unit and the Dockerfile (issue 15, packaging).

The unit is checked by systemd itself (``systemd-analyze verify`` and ``security``);
the Dockerfile statically (no registry is reachable here to build from its base
image), and its HEALTHCHECK command is run for real against a real ``ozw``.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import trio

from tests.support.ozw_process import REPO, STANDIN_AGENT, OzwProcess
from tests.support.ports import free_port
from tests.support.worker import API_KEY, start_stoppable_server

UNIT = REPO / "config" / "examples" / "ozw.service"
DOCKERFILE = REPO / "Dockerfile"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def install_block() -> str:
    page = (REPO / "docs" / "operations.md").read_text()
    blocks = re.findall(r"^( *)```sh\n(.*?)\n\1```", page, re.S | re.M)
    found = [textwrap.dedent(block) for _, block in blocks if "systemctl enable --now ozw" in block]
    assert len(found) == 1, "docs/operations.md shows the service install once"
    return found[0]


def test_the_unit_runs_as_a_dedicated_user_with_hardening() -> None:
    unit = service()
    assert unit["User"] == "ozw"
    assert unit["Group"] == "ozw"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert unit[key] == value, key
    # Under ProtectSystem=strict only these are writable: the home and the direct
    # backend's default workspace root (/var/lib/oz/workspaces).
    assert unit["StateDirectory"].split() == ["ozw", "oz"]


def test_the_unit_checks_before_it_starts_with_the_documented_paths() -> None:
    unit = service()
    pre, start = shlex.split(unit["ExecStartPre"]), shlex.split(unit["ExecStart"])
    assert pre == ["/opt/ozw/bin/ozw", "check", "--config", "/etc/ozw/worker.toml"]
    assert start == ["/opt/ozw/bin/ozw", "--config", "/etc/ozw/worker.toml"]
    assert unit["EnvironmentFile"] == "/etc/ozw/env"
    install = install_block()
    for needed in (
        "useradd --system --home-dir /var/lib/ozw --shell /usr/sbin/nologin ozw",
        "usermod -aG docker ozw",
        "python3 -m venv /opt/ozw && /opt/ozw/bin/pip install .",
        "/opt/ozw/bin/ozw config init --output /etc/ozw/worker.toml",
        "/etc/ozw/env",
        "cp config/examples/ozw.service /etc/systemd/system/ozw.service",
    ):
        assert needed in install, needed
    # The unit's own header shows the same steps.
    header = [line[4:] for line in UNIT.read_text().splitlines() if line.startswith("#   ")]
    assert [line.split("#")[0].strip() for line in header] == [
        line.split("#")[0].strip() for line in install.splitlines()
    ]


def test_systemd_accepts_the_unit_and_rates_it_hardened(tmp_path: Path) -> None:
    # verify insists that ExecStart's program exists: the installed path is swapped for
    # this checkout's ozw, nothing else changes.
    copy = tmp_path / "ozw.service"
    ozw = Path(sys.executable).with_name("ozw")
    copy.write_text(UNIT.read_text().replace("/opt/ozw/bin/ozw", str(ozw)))
    verify = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    security = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    level = re.search(r"Overall exposure level for ozw.service: ([\d.]+)", security.stdout)
    assert level is not None, security.stdout + security.stderr
    # 0 is fully locked down, 10 is unprotected; systemd calls < 2 "OK".
    assert float(level.group(1)) < 2.0, security.stdout


@attrs.frozen
class Instruction:
    keyword: str
    arguments: str


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, stage by stage (continuations joined, comments out)."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        logical.append(pending)
        pending = ""
    stages: list[list[Instruction]] = []
    for text in logical:
        keyword, _, arguments = text.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), " ".join(arguments.split())))
    return stages


def test_the_image_runs_as_a_non_root_user_in_the_docker_group() -> None:
    final = dockerfile_stages()[-1]
    users = [i.arguments for i in final if i.keyword == "USER"]
    assert users == ["10001"]
    runs = " ".join(i.arguments for i in final if i.keyword == "RUN")
    assert 'groupadd --system --gid "$DOCKER_GID" docker' in runs
    assert "useradd --system --uid 10001 --user-group --groups docker" in runs
    # Everything after USER runs unprivileged: nothing may need root there.
    after_user = final[[i.keyword for i in final].index("USER") :]
    assert [i.keyword for i in after_user if i.keyword == "RUN"] == []


def test_the_image_has_the_docker_client_and_no_engine() -> None:
    *builders, final = dockerfile_stages()
    engine = re.compile(r"\b(dockerd|containerd|docker-ce\b|docker\.io\b|moby-engine)")
    for instruction in final:
        assert not engine.search(instruction.arguments), instruction
    copies = [i.arguments for i in final if i.keyword == "COPY" and "--from=" in i.arguments]
    assert copies == ["--from=docker-client /usr/local/bin/docker /usr/local/bin/docker"]
    (client,) = builders
    assert client[0].arguments.endswith(" AS docker-client")
    build = " ".join(i.arguments for i in client if i.keyword == "RUN")
    # Unpacked, not installed: apt never runs the engine's install scripts or deps.
    assert "apt-get download docker.io" in build
    assert "apt-get install" not in build
    assert "install -m 0755 /tmp/docker.io/usr/bin/docker /usr/local/bin/docker" in build


def healthcheck_command() -> list[str]:
    final = dockerfile_stages()[-1]
    (healthcheck,) = [i.arguments for i in final if i.keyword == "HEALTHCHECK"]
    _options, _, command = healthcheck.partition(" CMD ")
    parsed: list[str] = json.loads(command)
    return parsed


def test_the_healthcheck_asks_healthz_on_the_metrics_port() -> None:
    final = dockerfile_stages()[-1]
    (cmd,) = [json.loads(i.arguments) for i in final if i.keyword == "CMD"]
    metrics_addr = cmd[cmd.index("--metrics-addr") + 1]
    assert metrics_addr == ":9090"
    assert "http://127.0.0.1:9090/healthz" in " ".join(healthcheck_command())
    assert "EXPOSE" in [i.keyword for i in final]


async def test_the_healthcheck_command_follows_the_connection(tmp_path: Path) -> None:
    """The image's HEALTHCHECK command, run against a real ozw (its port swapped)."""
    port = free_port()
    probe = [
        sys.executable if part == "python" else part.replace(":9090/", f":{port}/")
        for part in healthcheck_command()
    ]

    async def healthy() -> bool:
        result = await trio.run_process(probe, capture_stderr=True, check=False)
        return result.returncode == 0

    config = tmp_path / "worker.toml"
    async with trio.open_nursery() as nursery:
        server, server_scope = await start_stoppable_server(nursery)
        config.write_text(
            f"""
worker_id = "health-test"
[server]
websocket_url = "{server.url}"
[backend.direct]
workspace_root = "{tmp_path / "ws"}"
oz_path = "{STANDIN_AGENT}"
"""
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARP_")}
        args = ["--config", str(config), "--metrics-addr", f"127.0.0.1:{port}"]
        ozw = OzwProcess(args, {**env, "WARP_API_KEY": API_KEY})
        await nursery.start(ozw.run)
        with trio.fail_after(30):
            await ozw.wait_line("metrics on http://")
            await server.wait_connected()
            await ozw.wait_line("connected to ")
            assert await healthy()
            server_scope.cancel()  # the dispatch server goes away
            await ozw.wait_line("reconnecting in")
            assert not await healthy()
            ozw.send_signal(signal.SIGTERM)
            assert await ozw.wait() == 0
        nursery.cancel_scope.cancel()
