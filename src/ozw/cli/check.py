"""``ozw check``: validate a configuration, the backend's prerequisites and the server.

One line per check (``ok``, ``warn``, ``skip`` or ``FAIL``), exit 1 on any failure.
The server check dials the dispatch server as the worker would (proxy included),
completes the WebSocket handshake with the API key and closes at once. The API key
is reported as present or missing, never printed.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import socket
import sys
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import IO, TYPE_CHECKING, Literal

import attrs
import trio

from ozw.backends import create_backend
from ozw.backends.docker.references import registry_address
from ozw.config import (
    API_KEY_ENV,
    CommandConfig,
    DockerConfig,
    PullPolicy,
    WorkerConfig,
    url_problem,
)
from ozw.exception_groups import cause
from ozw.link.connection import why_lost, worker_url
from ozw.link.dial import open_websocket
from ozw.link.proxy import ProxySettingError, choose_proxy
from ozw.tasks.failures import BackendUnavailable, TaskFailure
from ozw.tasks.params import AGENT_SIDECAR, DEFAULT_IMAGE
from ozw.telemetry.otel_env import (
    OtelSettingError,
    describe_plan,
    otlp_endpoint,
    read_plan,
)

if TYPE_CHECKING:
    from ozw.backends.docker import DockerBackend

STARTER_WORKER_ID = "my-worker"
"""The placeholder ``ozw config init`` writes (config/starters/header.toml)."""

REGISTRY_TIMEOUT = 5.0
"""How long the image check waits for a TCP connection to the image's registry."""

SERVER_TIMEOUT = 15.0
"""How long the server check waits for the handshake, through a proxy included."""

Level = Literal["ok", "warn", "skip", "FAIL"]


@attrs.frozen
class Check:
    name: str
    level: Level
    detail: str

    @property
    def ok(self) -> bool:
        return self.level != "FAIL"


def _passed(name: str, ok: bool, detail: str) -> Check:
    return Check(name, "ok" if ok else "FAIL", detail)


def static_checks(config: WorkerConfig) -> Iterator[Check]:
    """The checks that need no I/O."""
    if config.worker_id == STARTER_WORKER_ID:
        yield Check(
            "worker_id",
            "warn",
            f"{config.worker_id!r} is the starter file's placeholder: give each worker its own id",
        )
    else:
        yield Check("worker_id", "ok", config.worker_id)
    yield _passed(
        "api key",
        bool(config.api_key),
        "present (not shown)"
        if config.api_key
        else f"missing: pass --api-key or set {API_KEY_ENV}",
    )
    for name, url, schemes in (
        ("server.websocket_url", config.server.websocket_url, ("ws", "wss")),
        ("server.root_url", config.server.root_url, ("http", "https")),
    ):
        problem = url_problem(url, schemes)
        yield _passed(name, problem is None, url if problem is None else f"{url}: {problem}")
    if isinstance(config.backend, CommandConfig):
        yield dispatch_command_check(config.backend.dispatch_command, os.environ.get("PATH", ""))


_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_SHELL_WORDS = frozenset(
    {"!", "{", "(", "[", "[[", ".", ":", "case", "cd", "command", "eval", "exec", "export"}
    | {"for", "if", "set", "source", "test", "time", "until", "while"}
)


def dispatch_command_check(command: str, path: str) -> Check:
    """Whether the program ``dispatch_command`` starts exists and is executable.

    Only a plain program name or path can be checked; a line that starts with shell
    syntax (a builtin, a variable) is reported as not checked.
    """
    name = "dispatch_command"
    try:
        words = [word for word in shlex.split(command) if not _ASSIGNMENT.match(word)]
    except ValueError as exc:
        return Check(name, "FAIL", f"{command!r} is not a valid shell command line ({exc})")
    program = words[0] if words else ""
    if not program or program in _SHELL_WORDS or "$" in program or "`" in program:
        return Check(name, "skip", f"{command!r} starts with shell syntax: not checked")
    if "/" in program:
        if not os.path.isfile(program):
            return Check(name, "FAIL", f"{program} does not exist")
        if not os.access(program, os.X_OK):
            return Check(name, "FAIL", f"{program} is not executable (chmod +x {program})")
        return Check(name, "ok", f"{program} is executable")
    found = shutil.which(program, path=path)
    if found is None:
        return Check(name, "FAIL", f"{program!r} is not on PATH")
    return Check(name, "ok", f"{program} is {found}")


async def backend_checks(config: WorkerConfig) -> list[Check]:
    """The backend's own start-up check, then (docker) how the default image is had."""
    name = f"backend {config.backend_name}"
    try:
        backend = create_backend(config)
        async with backend:
            checks = [Check(name, "ok", await backend.check())]
            if isinstance(config.backend, DockerConfig):
                from ozw.backends.docker import DockerBackend

                assert isinstance(backend, DockerBackend)
                policy = config.backend.pull_policy
                image = config.backend.default_image or DEFAULT_IMAGE
                checks.append(await _image_check(backend, image, policy))
                # The server names the sidecar per task: a problem is only a warning.
                sidecar = await _image_check(backend, AGENT_SIDECAR, policy, "agent sidecar")
                if not sidecar.ok:
                    sidecar = attrs.evolve(
                        sidecar,
                        level="warn",
                        detail=f"{sidecar.detail} (the image Oz names today; the server "
                        "decides per task)",
                    )
                checks.append(sidecar)
    except BackendUnavailable as exc:
        return [Check(name, "FAIL", str(exc))]
    return checks


async def _image_check(
    backend: DockerBackend, image: str, policy: PullPolicy, name: str = "default image"
) -> Check:
    """Whether ``image`` can be had the way ``policy`` gets it: present locally, or (when
    the policy pulls it) its registry reachable from this host. Asked through the
    backend's own image inspection (the one a task's setup uses)."""
    try:
        found = await backend.images.inspect(image)
    except TaskFailure as exc:
        return Check(name, "FAIL", f"{image}: {exc}")
    if found is not None and policy != "always":
        return Check(name, "ok", f"{image} is present ({found.platform})")
    if found is None and policy == "never":
        return Check(name, "FAIL", f"{image} is not present and pull_policy is 'never'")
    host, port = registry_address(image)
    problem = await unreachable(host, port)
    pulls = "every task pulls" if policy == "always" else "the first task pulls"
    if problem is None:
        return Check(name, "ok", f"{pulls} {image} from {host}:{port} (reachable)")
    if found is not None:
        fix = 'it is present locally: pull_policy = "if-not-present" uses it as it is'
    else:
        fix = f"load it (docker load), or make {host} reachable"
    return Check(
        name,
        "FAIL",
        f'pull_policy "{policy}": {pulls} {image}, but {host}:{port} cannot be reached '
        f"({problem}); {fix}",
    )


async def unreachable(host: str, port: int) -> str | None:
    """Why a TCP connection to ``host:port`` cannot be made from here, or None."""
    try:
        with trio.fail_after(REGISTRY_TIMEOUT):
            stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        return f"no answer in {REGISTRY_TIMEOUT:g}s"
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror or exc}"
    except OSError as exc:
        # trio tries each address and says only "all attempts ... failed": the first
        # attempt's error is the cause an operator can act on.
        if isinstance(exc.__cause__, BaseExceptionGroup):
            first = cause(exc.__cause__)
            if isinstance(first, OSError) and first.errno:
                return os.strerror(first.errno)
        return exc.strerror or str(exc)
    await stream.aclose()
    return None


async def server_check(config: WorkerConfig, environ: Mapping[str, str]) -> Check:
    """Dial the server with the API key (through the proxy that applies) and close."""
    name = "server"
    if not config.api_key:
        return Check(name, "skip", "not dialled without an API key")
    url = config.server.websocket_url
    try:
        proxy = choose_proxy(url, config.server.proxy_url, environ)
    except ProxySettingError as exc:
        return Check(name, "FAIL", str(exc))
    try:
        async with open_websocket(
            worker_url(url, config.worker_id),
            proxy=proxy,
            ssl_context=None,
            extra_headers=[(b"Authorization", f"Bearer {config.api_key}".encode())],
            connect_timeout=SERVER_TIMEOUT,
            disconnect_timeout=5.0,
            max_message_size=16 * 1024 * 1024,
        ) as ws:
            await ws.aclose(code=1000, reason="ozw check")
    except Exception as exc:
        failure = why_lost(exc, SERVER_TIMEOUT).text
        if proxy is not None and str(proxy) not in failure:
            failure += f" (through proxy {proxy})"
        return Check(name, "FAIL", failure)
    via = f" through proxy {proxy}" if proxy else ""
    return Check(name, "ok", f"the server accepted the API key{via}")


async def telemetry_check(config: WorkerConfig, environ: Mapping[str, str]) -> Check:
    """Where metrics and traces go (the OTEL_* variables, ``metrics_addr``); a collector
    that does not answer is a warning: the worker runs on without it."""
    name = "telemetry"
    try:
        plan = read_plan(environ)
    except OtelSettingError as exc:
        return Check(name, "FAIL", str(exc))
    detail = describe_plan(plan, environ)
    if config.metrics_addr:
        detail += f"; metrics_addr {config.metrics_addr} (/metrics, /healthz)"
    elif plan.notice is not None:
        return Check(name, "warn", f"{detail}: {plan.notice}")
    for exporter, signal, protocol in (
        (plan.metrics, "METRICS", plan.metrics_protocol),
        (plan.traces, "TRACES", plan.traces_protocol),
    ):
        if exporter != "otlp":
            continue
        target = urllib.parse.urlsplit(otlp_endpoint(environ, signal, protocol))
        default_port = 443 if target.scheme == "https" else 80
        try:
            port = target.port or default_port
        except ValueError:
            return Check(name, "FAIL", f"{detail}: the OTLP endpoint has no valid port")
        problem = await unreachable(target.hostname or "", port)
        if problem is not None:
            return Check(
                name,
                "warn",
                f"{detail}: {target.hostname}:{port} cannot be reached ({problem}); "
                "the worker runs on and warns once a minute",
            )
    return Check(name, "ok", detail)


async def run_checks(config: WorkerConfig, environ: Mapping[str, str]) -> list[Check]:
    checks = [Check("configuration", "ok", "valid"), *static_checks(config)]
    checks.append(await telemetry_check(config, environ))
    checks += await backend_checks(config)
    checks.append(await server_check(config, environ))
    return checks


def check_main(
    config: WorkerConfig, environ: Mapping[str, str] = os.environ, *, out: IO[str] = sys.stdout
) -> int:
    """The ``ozw check`` command; the configuration already loaded (that is check one)."""
    checks = trio.run(functools.partial(run_checks, config, environ))
    width = max(len(check.name) for check in checks)
    for check in checks:
        print(f"{check.level:<4} {check.name:<{width}}  {check.detail}", file=out)
    return 0 if all(check.ok for check in checks) else 1
