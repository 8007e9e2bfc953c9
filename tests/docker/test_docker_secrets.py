"""Secrets against a real engine: no value on a command line, in a docker CLI child's
environment (the API key included, credential helpers too) or in a file; any value
reaches the container exactly, through a pipe."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import anyio.abc

from ozw.backends.base import ExecuteResult
from ozw.config import EnvEntry
from ozw.tasks.failures import FailureReason
from tests.docker.conftest import REGISTRY_PASSWORD, REGISTRY_USER, Engine, Images, Registries
from tests.docker.runs import (
    calls_per_line_backend,
    files_containing,
    make_backend,
    recorded_calls,
    recording_docker,
    run_agent_task,
    start_sleeper,
)
from tests.support.event_loops import on_both_loops
from tests.support.procs import cmdlines_containing


@on_both_loops
async def test_secret_values_never_appear_on_a_command_line(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    secret = f"ozw-secret-{uuid.uuid4().hex}"
    backend, calls = calls_per_line_backend(
        engine, tmp_path, environment=(EnvEntry("CONF", secret + "c"),)
    )
    env = {
        "GITHUB_ACCESS_TOKEN": secret,
        "DOCKER_AUTH_TOKEN": secret + "d",  # a name the docker CLI reads itself
    }
    async with anyio.create_task_group() as nursery:
        sleeper = await start_sleeper(nursery, backend, images, "secret", env=env)
        seen = await anyio.to_thread.run_sync(cmdlines_containing, secret.encode())
        await sleeper.stop()
    assert seen == []
    assert secret not in calls.read_text()
    assert "system dial-stdio" in calls.read_text()  # the container's creation
    seen_inside = sleeper.log.env()
    assert {name: seen_inside[name] for name in env} == env
    assert seen_inside["CONF"] == secret + "c"


@on_both_loops
async def test_any_value_reaches_the_container_exactly_through_a_pipe_only(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    nonce = uuid.uuid4().hex
    # Every docker CLI child: its command line and its environment (the wrapper runs
    # with exactly the environment the real CLI gets); and any file left in /tmp.
    recording, records = recording_docker(tmp_path)
    backend = make_backend(engine, docker=recording)
    values = {
        "SSH_PRIVATE_KEY": f"-----BEGIN {nonce}-----\nabc\ndef\n-----END-----\n",
        "BIG": (nonce * 3200)[: 100 * 1024],
        "EQUALS": f" a=b  c = {nonce} ",
        "TRICKY": f"  #{nonce} = 'q' \"dq\" \r\n\ttab\\",
        # Names the docker CLI (and its dynamic loader, and ssh) read for themselves.
        "HOME": f"/home/{nonce}",
        "LANG": f"xx_{nonce}.UTF-8",
        "TZ": f"Zone/{nonce}",
        "SSH_AUTH_SOCK": f"/nonexistent/ssh-{nonce}",
        "LD_PRELOAD": f"/nonexistent/preload-{nonce}.so",
        "DOCKER_HOST": f"tcp://{nonce}.invalid:1",
    }
    started = time.time()
    ran = await run_agent_task(
        backend, images, "anyvalue", env={**values, "STANDIN_HASH": " ".join(values)}
    )
    assert ran.outcome is ExecuteResult.COMPLETED, ran.log.messages()[-5:]
    hashes = dict(line.partition("=")[::2] for line in ran.log.standin("sha256 "))
    assert hashes == {
        name: hashlib.sha256(value.encode()).hexdigest() for name, value in values.items()
    }
    calls = recorded_calls(records)
    assert [b"system", b"dial-stdio"] in [argv[:2] for argv, _ in calls]
    assert [argv for argv, _ in calls if any(nonce.encode() in arg for arg in argv)] == []
    assert [argv for argv, environ in calls if nonce.encode() in environ] == []
    leftovers = await anyio.to_thread.run_sync(
        files_containing, Path(tempfile.gettempdir()), nonce, started
    )
    assert leftovers == []


@on_both_loops
async def test_a_value_no_process_can_hold_is_container_create_naming_it(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    backend, calls = calls_per_line_backend(engine, tmp_path)
    for env, text in [
        ({"HUGE_TOKEN": "x" * 1024 * 1024}, "environment variable HUGE_TOKEN is too large"),
        ({"BAD": "a\0b"}, "environment variable BAD holds a NUL byte"),
        ({"A=B": "x"}, "invalid environment variable name 'A=B'"),
    ]:
        failure = (await run_agent_task(backend, images, "refused", env=env)).failure
        assert failure.reason is FailureReason.CONTAINER_CREATE
        assert failure.cause.startswith(text), failure.cause
    assert not calls.exists()  # refused before any docker call


@on_both_loops
async def test_no_docker_cli_child_or_credential_helper_gets_the_api_key(
    engine: Engine, images: Images, registries: Registries, tmp_path: Path
) -> None:
    api_key = f"wk-{uuid.uuid4().hex}"
    # A credential helper for the password-protected registry: it records its
    # environment and answers with the registry's credentials.
    bin_dir, config_dir = tmp_path / "bin", tmp_path / "docker-config"
    bin_dir.mkdir()
    config_dir.mkdir()
    helper_env = tmp_path / "helper.env"
    helper = bin_dir / "docker-credential-ozwtest"
    helper.write_text(
        "#!/bin/sh\n"
        f"env >> {helper_env}\n"
        'if [ "$1" = get ]; then cat >/dev/null; '
        f"""printf '{{"Username":"{REGISTRY_USER}","Secret":"{REGISTRY_PASSWORD}"}}'; fi\n"""
    )
    helper.chmod(0o755)
    (config_dir / "config.json").write_text(
        json.dumps({"credHelpers": {registries.auth.address: "ozwtest"}})
    )
    recording, records = recording_docker(tmp_path)
    backend = make_backend(
        engine,
        pull_policy="always",
        docker=recording,
        environ={
            "WARP_API_KEY": api_key,
            "DOCKER_CONFIG": str(config_dir),
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
        },
    )
    async with anyio.create_task_group() as nursery:
        sleeper = await start_sleeper(
            nursery, backend, images, "apikey",
            image=registries.auth.ref("ozw/task:1"), agent_image=registries.auth.ref("ozw/agent:1"),
        )  # fmt: skip
        await sleeper.stop()
    calls = recorded_calls(records)
    commands = [argv[:2] for argv, _ in calls]
    assert [b"start", b"--attach"] in commands, commands
    assert [b"system", b"dial-stdio"] in commands, commands
    # Every call got the worker's environment without the key (the wrapper saw it).
    assert all(
        environ.startswith(b"DOCKER_CONFIG=") or b"\0DOCKER_CONFIG=" in environ
        for _, environ in calls
    )
    assert [argv for argv, environ in calls if api_key.encode() in environ] == []
    assert [argv for argv, environ in calls if environ.startswith(b"WARP_API_KEY=")] == []
    assert [argv for argv, environ in calls if b"\0WARP_API_KEY=" in environ] == []
    assert helper_env.exists(), "the pull did not use the credential helper"
    assert "WARP_API_KEY" not in helper_env.read_text()
    assert api_key not in helper_env.read_text()
