"""Configuration: loading, refusals (one line naming the key), flags, durations, dumping."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from ozw.config import (
    BACKEND_NAMES,
    FLAGS,
    BackendName,
    CliOverrides,
    CommandConfig,
    ConfigError,
    DirectConfig,
    DockerConfig,
    EnvEntry,
    KubernetesConfig,
    ServerConfig,
    WorkerConfig,
    dump_config,
    format_duration,
    load_config,
    parse_duration,
    resolve_environment,
    starter_config,
)

REPO = Path(__file__).resolve().parent.parent
NO_FLAGS = CliOverrides()

WriteConfig = Callable[[str], str]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write TOML text to a file and return its path."""

    def write(text: str) -> str:
        path = tmp_path / "worker.toml"
        path.write_text(text)
        return str(path)

    return write


def refusal(path: str | None, flags: CliOverrides = NO_FLAGS) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, flags, {})
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- loading


def test_minimal_file_is_docker_with_defaults(write_config: WriteConfig) -> None:
    config = load_config(write_config('worker_id = "w1"\n'), NO_FLAGS, {})
    assert config == WorkerConfig(worker_id="w1")
    assert config.backend_name == "docker"


def test_full_file(write_config: WriteConfig) -> None:
    path = write_config(
        """
        worker_id = "w1"
        max_concurrent_tasks = 3
        cleanup = false
        idle_on_complete = "45m"
        task_timeout = "1h30m"
        shutdown_grace = 12
        log_level = "debug"
        log_format = "json"
        [server]
        websocket_url = "ws://localhost:8765/ws?x=1"
        root_url = "http://localhost:8765"
        [backend.direct]
        workspace_root = "/tmp/ws"
        target_dir = ""
        setup_command = "./setup.sh"
        setup_timeout = "500ms"
        environment = [{ name = "A", value = "1" }, { name = "B" }]
        """
    )
    config = load_config(path, NO_FLAGS, {})
    assert config == WorkerConfig(
        worker_id="w1",
        max_concurrent_tasks=3,
        cleanup=False,
        idle_on_complete="45m",
        task_timeout=5400.0,
        shutdown_grace=12.0,
        log_level="debug",
        log_format="json",
        server=ServerConfig(
            websocket_url="ws://localhost:8765/ws?x=1", root_url="http://localhost:8765"
        ),
        backend=DirectConfig(
            workspace_root="/tmp/ws",
            target_dir=None,  # "" means unset
            setup_command="./setup.sh",
            setup_timeout=0.5,
            environment=(EnvEntry("A", "1"), EnvEntry("B")),
        ),
    )


def test_command_backend(write_config: WriteConfig) -> None:
    path = write_config(
        'worker_id = "w1"\n[backend.command]\ndispatch_command = "./d.sh"\n'
        'dispatch_timeout = "2m"\n'
    )
    backend = load_config(path, NO_FLAGS, {}).backend
    assert backend == CommandConfig(dispatch_command="./d.sh", dispatch_timeout=120.0)


def test_api_key_from_environment_or_flag(write_config: WriteConfig) -> None:
    path = write_config('worker_id = "w1"\n')
    assert load_config(path, NO_FLAGS, {"WARP_API_KEY": "env"}).api_key == "env"
    flags = CliOverrides(api_key="flag")
    assert load_config(path, flags, {"WARP_API_KEY": "env"}).api_key == "flag"
    assert load_config(path, NO_FLAGS, {"WARP_API_KEY": ""}).api_key is None


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            'worker_id = "w"\n[backend.direct]\nworkspace_rot = "/x"\n',
            "backend.direct.workspace_rot: unknown key",
            id="unknown-nested-key",
        ),
        pytest.param('worker_id = "w"\nmax_task = 1\n', "max_task: unknown key", id="unknown"),
        pytest.param('worker_id = "w"\nmax_tasks = 0\n', "max_tasks: must be >= 1", id="max-tasks"),
        pytest.param(
            'worker_id = "w"\n[server]\nurl = "wss://x"\n', "server.url: unknown key", id="server"
        ),
        pytest.param(
            'worker_id = "w"\n[backend.podman]\n', "backend.podman: unknown key", id="backend-name"
        ),
        pytest.param(
            'worker_id = "w"\napi_key = "secret"\n',
            "api_key: unknown key (the API key is never read from a file: use --api-key or "
            "WARP_API_KEY)",
            id="api-key",
        ),
        pytest.param(
            'worker_id = "w"\nmax_concurrent_tasks = "1"\n',
            "max_concurrent_tasks: expected an integer, got a string",
            id="no-str-to-int",
        ),
        pytest.param(
            'worker_id = "w"\nmax_concurrent_tasks = true\n',
            "max_concurrent_tasks: expected an integer, got a boolean",
            id="no-bool-to-int",
        ),
        pytest.param(
            'worker_id = "w"\ncleanup = 1\n',
            "cleanup: expected a boolean, got an integer",
            id="bool",
        ),
        pytest.param(
            'worker_id = "w"\ncleanup = "false"\n',
            "cleanup: expected a boolean, got a string",
            id="no-str-to-bool",
        ),
        pytest.param(
            "worker_id = 7\n", "worker_id: expected a string, got an integer", id="id-int"
        ),
        pytest.param(
            'worker_id = "w"\n[backend.docker]\nvolumes = "/a:/b"\n',
            "backend.docker.volumes: expected an array, got a string",
            id="volumes-string",
        ),
        pytest.param(
            'worker_id = "w"\n[backend.docker]\nvolumes = ["/a:/b", 3]\n',
            "backend.docker.volumes[1]: expected a string, got an integer",
            id="volume-item",
        ),
        pytest.param(
            'worker_id = "w"\nserver = "wss://x"\n',
            "server: expected a table, got a string",
            id="server-not-table",
        ),
        pytest.param(
            'worker_id = "w"\n[backend.docker]\n[backend.direct]\n',
            "backend: only one backend table is allowed, found [backend.docker] and "
            "[backend.direct]",
            id="two-backends",
        ),
        pytest.param(
            'worker_id = "w"\n[backend.docker]\nenvironment = [{ name = "" }]\n',
            "backend.docker.environment[0].name: environment variable name must not be empty",
            id="env-empty",
        ),
        pytest.param(
            'worker_id = "w"\n[backend.direct]\nenvironment = [{ name = "A B" }]\n',
            "backend.direct.environment[0].name: 'A B' is not a valid environment variable name",
            id="env-space",
        ),
        pytest.param(
            'worker_id = "w"\n[backend.docker]\nenvironment = [{ name = "A=1" }]\n',
            "backend.docker.environment[0].name: 'A=1' is not a valid environment variable name",
            id="env-equals",
        ),
        pytest.param(
            'worker_id = "w"\n[backend.docker]\nenvironment = [{ name = "A", val = "1" }]\n',
            "backend.docker.environment[0].val: unknown key",
            id="env-key",
        ),
        pytest.param(
            "max_concurrent_tasks = 1\n",
            "worker_id: required: set worker_id in the config file or pass --worker-id",
            id="id-missing",
        ),
        pytest.param('worker_id = ""\n', "worker_id: must not be empty", id="id-empty"),
        pytest.param(
            'worker_id = "warp-7"\n',
            "worker_id: 'warp-7' is reserved (ids starting with 'warp' belong to Warp)",
            id="id-reserved",
        ),
        pytest.param(
            'worker_id = "w"\ntask_timeout = "forever"\n',
            "task_timeout: 'forever' is not a duration",
            id="duration",
        ),
        pytest.param(
            'worker_id = "w"\nshutdown_grace = -1\n',
            "shutdown_grace: -1 is not a duration",
            id="negative-duration",
        ),
        pytest.param(
            'worker_id = "w"\ntask_timeout = "0s"\n',
            "task_timeout: must be longer than 0s",
            id="zero-timeout",
        ),
        pytest.param(
            'worker_id = "w"\n[backend.docker]\nkill_grace = "10 s"\n',
            "backend.docker.kill_grace: '10 s' is not a duration",
            id="kill-grace",
        ),
        pytest.param(
            'worker_id = "w"\n[backend.direct]\nteardown_timeout = "1w"\n',
            "backend.direct.teardown_timeout: '1w' is not a duration",
            id="teardown-timeout",
        ),
        pytest.param(
            'worker_id = "w"\n[backend.command]\ndispatch_command = "x"\ndispatch_timeout = true\n',
            "backend.command.dispatch_timeout: expected a duration",
            id="dispatch-timeout",
        ),
        pytest.param(
            'worker_id = "w"\nmax_concurrent_tasks = -1\n',
            "max_concurrent_tasks: must be >= 0",
            id="negative-max",
        ),
        pytest.param(
            'worker_id = "w"\n[backend.docker]\npull_policy = "sometimes"\n',
            "backend.docker.pull_policy: must be one of always, if-not-present, never",
            id="pull-policy",
        ),
        pytest.param(
            'worker_id = "w"\nlog_format = "xml"\n',
            "log_format: must be one of human, json",
            id="log-format",
        ),
        pytest.param(
            'worker_id = "w"\nlog_level = "trace"\n',
            "log_level: must be one of debug, info, warning, error",
            id="log-level",
        ),
        pytest.param(
            'worker_id = "w"\n[server]\nwebsocket_url = "https://oz.warp.dev/ws"\n',
            "server.websocket_url: must be a ws:// or wss:// URL",
            id="ws-url",
        ),
        pytest.param(
            'worker_id = "w"\n[server]\nroot_url = "wss://app.warp.dev"\n',
            "server.root_url: must be a http:// or https:// URL",
            id="root-url",
        ),
        pytest.param(
            'worker_id = "w"\n[backend.command]\ncancel_command = "x"\n',
            "backend.command.dispatch_command: required",
            id="dispatch-missing",
        ),
        pytest.param(
            'worker_id = "w"\n[backend.command]\ndispatch_command = " "\n',
            "backend.command.dispatch_command: must not be empty",
            id="dispatch-empty",
        ),
        pytest.param(
            'worker_id = "w"\nmetrics_addr = 9090\n',
            "metrics_addr: expected a string, got an integer",
            id="metrics-addr",
        ),
        pytest.param(
            'worker_id = "w"\nmetrics_addr = "9090"\n',
            "metrics_addr: '9090' is not HOST:PORT",
            id="metrics-addr-port",
        ),
        pytest.param(
            'worker_id = "w"\nshutdown_grace = inf\n',
            "shutdown_grace: inf is not a duration",
            id="infinite",
        ),
    ],
)
def test_file_refusals(write_config: WriteConfig, text: str, expected: str) -> None:
    path = write_config(text)
    assert refusal(path).startswith(f"{path}: {expected}")


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.toml")
    assert refusal(path) == f"{path}: no such file"


def test_directory_is_one_line(tmp_path: Path) -> None:
    assert refusal(str(tmp_path)).startswith(f"{tmp_path}: ")


def test_invalid_toml_is_one_line(write_config: WriteConfig) -> None:
    path = write_config("worker_id = \n")
    assert refusal(path).startswith(f"{path}: invalid TOML: ")


def test_worker_id_required_without_a_file() -> None:
    assert refusal(None) == (
        "worker_id: required: set worker_id in the config file or pass --worker-id"
    )


# --------------------------------------------------------------------------- flags


def test_flags_beat_the_file(write_config: WriteConfig) -> None:
    path = write_config(
        'worker_id = "file"\nmax_concurrent_tasks = 1\ncleanup = true\nlog_level = "info"\n'
        'task_timeout = "1h"\n[server]\nroot_url = "https://file.example"\n'
    )
    flags = CliOverrides(
        worker_id="flag", max_concurrent_tasks=5, no_cleanup=True,
        log_level="debug", log_format="json",
        task_timeout="90s", shutdown_grace="1m", idle_on_complete="10m",
        websocket_url="ws://127.0.0.1:1/ws", server_root_url="http://127.0.0.1:1",
    )  # fmt: skip
    config = load_config(path, flags, {})
    assert config == WorkerConfig(
        worker_id="flag", max_concurrent_tasks=5, cleanup=False,
        log_level="debug", log_format="json",
        task_timeout=90.0, shutdown_grace=60.0, idle_on_complete="10m",
        server=ServerConfig(websocket_url="ws://127.0.0.1:1/ws", root_url="http://127.0.0.1:1"),
    )  # fmt: skip


def test_without_no_cleanup_the_file_decides(write_config: WriteConfig) -> None:
    path = write_config('worker_id = "w"\ncleanup = false\n')
    assert load_config(path, NO_FLAGS, {}).cleanup is False


def test_env_flags_append_to_the_backend_environment(write_config: WriteConfig) -> None:
    path = write_config(
        'worker_id = "w"\n[backend.docker]\nenvironment = [{ name = "A", value = "file" }]\n'
    )
    flags = CliOverrides(env=("A=flag", "HOME_VAR", "EMPTY=", "WITH=EQ=UALS"))
    config = load_config(path, flags, {})
    assert config.backend.environment == (
        EnvEntry("A", "file"),
        EnvEntry("A", "flag"),
        EnvEntry("HOME_VAR"),  # KEY alone inherits
        EnvEntry("EMPTY", ""),
        EnvEntry("WITH", "EQ=UALS"),
    )
    resolved = resolve_environment(config.backend.environment, {"HOME_VAR": "from-worker"})
    assert resolved == {"A": "flag", "HOME_VAR": "from-worker", "EMPTY": "", "WITH": "EQ=UALS"}


def test_volume_flags_append(write_config: WriteConfig) -> None:
    path = write_config('worker_id = "w"\n[backend.docker]\nvolumes = ["/a:/a"]\n')
    config = load_config(path, CliOverrides(volumes=("/b:/b:ro",)), {})
    assert config.backend == DockerConfig(volumes=("/a:/a", "/b:/b:ro"))


def test_backend_flag_replaces_a_different_table(write_config: WriteConfig) -> None:
    path = write_config('worker_id = "w"\n[backend.docker]\nvolumes = ["/a:/a"]\n')
    config = load_config(path, CliOverrides(backend="direct", target_dir="/srv/x"), {})
    assert config.backend == DirectConfig(target_dir="/srv/x")


def test_backend_flag_keeps_the_same_table(write_config: WriteConfig) -> None:
    path = write_config('worker_id = "w"\n[backend.direct]\nworkspace_root = "/tmp/w"\n')
    config = load_config(path, CliOverrides(backend="direct"), {})
    assert config.backend == DirectConfig(workspace_root="/tmp/w")


def test_backend_flag_selects_without_a_file() -> None:
    config = load_config(None, CliOverrides(worker_id="w", backend="direct"), {})
    assert config.backend == DirectConfig()


def test_backend_command_flag_needs_dispatch_command(write_config: WriteConfig) -> None:
    path = write_config('worker_id = "w"\n[backend.docker]\n')
    message = refusal(path, CliOverrides(backend="command"))
    assert message.startswith("--backend command: backend.command.dispatch_command: required")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param(CliOverrides(backend="podman"), "--backend: must be one of", id="backend"),
        pytest.param(
            CliOverrides(worker_id="warp"), "--worker-id: 'warp' is reserved", id="worker-id"
        ),
        pytest.param(CliOverrides(task_timeout="1x"), "--task-timeout: '1x' is not", id="timeout"),
        pytest.param(
            CliOverrides(shutdown_grace="-5s"), "--shutdown-grace: '-5s' is not", id="grace"
        ),
        pytest.param(
            CliOverrides(max_concurrent_tasks=-2), "--max-concurrent-tasks: must be >= 0", id="max"
        ),
        pytest.param(
            CliOverrides(websocket_url="http://x"), "--websocket-url: must be a ws://", id="ws"
        ),
        pytest.param(
            CliOverrides(server_root_url="x"), "--server-root-url: must be a http://", id="root"
        ),
        pytest.param(CliOverrides(log_level="loud"), "--log-level: must be one of", id="level"),
        pytest.param(CliOverrides(log_format="xml"), "--log-format: must be one of", id="format"),
        pytest.param(
            CliOverrides(env=("=x",)),
            "--env =...: environment variable name must not be empty",
            id="env-empty",
        ),
        pytest.param(
            CliOverrides(env=("A B=secret",)),
            "--env A B=...: 'A B' is not a valid environment variable name",
            id="env-space",
        ),
    ],
)
def test_flag_refusals_name_the_flag(flags: CliOverrides, expected: str) -> None:
    flags = attrs.evolve(flags, worker_id=flags.worker_id or "w")
    message = refusal(None, flags)
    assert message.startswith(expected)
    assert "secret" not in message


def test_a_flag_value_is_blamed_on_the_flag_not_the_file(write_config: WriteConfig) -> None:
    path = write_config('worker_id = "w"\n')
    assert refusal(path, CliOverrides(task_timeout="x")).startswith("--task-timeout: ")


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60s", 60.0),
        ("45m", 2700.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("2h3m4s5ms", 7384.005),
        ("1.5s", 1.5),
        ("0s", 0.0),
        ("90", 90.0),
        ("2.5", 2.5),
        ("2d", 172800.0),
        ("1h 30m", 5400.0),
        ("1d 2h 3m 4s", 93784.0),
        ("1h30m0s", 5400.0),  # Go's time.Duration text
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "s",
        "-1s",
        "1w",
        "1 h",
        " 1s",
        "1s ",
        "1h  30m",
        "1m1h",
        "1s1s",
        "1hh",
        "1.s",
        "abc",
        "1e3s",
        " ",
    ],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.3, "0.3s"), (0.5, "0.5s"), (10, "10s"), (60, "60s"), (90, "90s"),
     (120, "2m"), (300, "5m"), (600, "10m"), (2700, "45m"), (3600, "1h"), (5400, "1h30m"),
     (3661.5, "1h1m1.5s")],
)  # fmt: skip
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def test_bare_numbers_in_the_file_are_seconds(write_config: WriteConfig) -> None:
    path = write_config('worker_id = "w"\nshutdown_grace = 2.5\ntask_timeout = 60\n')
    config = load_config(path, NO_FLAGS, {})
    assert (config.shutdown_grace, config.task_timeout) == (2.5, 60.0)


# --------------------------------------------------------------------------- environment


def test_resolve_environment() -> None:
    entries = [
        EnvEntry("SET", "v"),
        EnvEntry("INHERITED"),
        EnvEntry("ABSENT"),
        EnvEntry("SET", "later"),
        EnvEntry("EMPTY_INHERITED"),
    ]
    environ = {"INHERITED": "host", "EMPTY_INHERITED": "", "OTHER": "x"}
    assert resolve_environment(entries, environ) == {
        "SET": "later",
        "INHERITED": "host",
        "EMPTY_INHERITED": "",
    }


# --------------------------------------------------------------------------- dumping


def test_dump_round_trips_without_the_api_key(write_config: WriteConfig) -> None:
    config = WorkerConfig(
        worker_id="w1",
        backend=DockerConfig(
            volumes=("/a:/b:ro",), default_image="debian:12", pull_policy="never",
            environment=(EnvEntry("A", "1"), EnvEntry("B")), kill_grace=2.5,
        ),
        server=ServerConfig(session_sharing_server_url="https://share.example"),
        max_concurrent_tasks=2, cleanup=False, idle_on_complete="1h30m",
        task_timeout=5400.0, shutdown_grace=0.25,
        log_level="warning", metrics_addr="127.0.0.1:9090", api_key="sk-very-secret",
    )  # fmt: skip
    text = dump_config(config)
    assert "sk-very-secret" not in text
    assert "# api_key: set (redacted)" in text
    assert 'task_timeout = "1h30m"' in text
    loaded = load_config(write_config(text), NO_FLAGS, {})
    assert loaded == attrs.evolve(config, api_key=None)


@pytest.mark.parametrize(
    "backend",
    [
        DirectConfig(oz_path="/bin/oz", setup_timeout=90, teardown_command="./t.sh"),
        CommandConfig(dispatch_command="./d.sh", cancel_command="./c.sh", dispatch_timeout=7200),
    ],
)
def test_dump_round_trips_other_backends(
    write_config: WriteConfig, backend: DirectConfig | CommandConfig
) -> None:
    config = WorkerConfig(worker_id="w1", backend=backend)
    text = dump_config(config)
    assert "None" not in text
    assert "# api_key: not set" in text
    assert load_config(write_config(text), NO_FLAGS, {}) == config


# --------------------------------------------------------------------------- shipped files


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_starter_config_loads(write_config: WriteConfig, backend: BackendName) -> None:
    config = load_config(write_config(starter_config(backend)), NO_FLAGS, {})
    assert config.backend_name == backend
    assert config.worker_id == "my-worker"
    # The package-data files spell out the model's defaults: they must not drift.
    assert config.server == ServerConfig()
    assert config.backend == STARTER_BACKENDS[backend]
    assert attrs.evolve(config, backend=DockerConfig()) == WorkerConfig(worker_id="my-worker")


STARTER_BACKENDS: dict[str, object] = {
    "docker": DockerConfig(default_image="ubuntu:22.04"),
    "direct": DirectConfig(),
    "command": CommandConfig(dispatch_command="/opt/oz/dispatch.sh"),
    "kubernetes": KubernetesConfig(active_deadline_seconds=28800),  # the Go chart's 8 hours
}


@pytest.mark.parametrize(
    "name", ["examples/docker.toml", "examples/direct.toml", "examples/command.toml"]
)
def test_shipped_config_files_load(name: str) -> None:
    config = load_config(str(REPO / "config" / name), NO_FLAGS, {})
    assert config.worker_id
    if name == "examples/direct.toml":
        assert config.backend == DirectConfig(
            workspace_root="/tmp/ozw-workspaces",
            oz_path="examples/agent/oz",
            setup_timeout=120.0,
            teardown_timeout=60.0,
            kill_grace=5.0,
        )


def test_production_config_points_at_oz(write_config: WriteConfig) -> None:
    config = load_config(write_config(starter_config()), NO_FLAGS, {})
    assert config.server == ServerConfig()
    assert config.backend_name == "docker"


# --------------------------------------------------------------------------- flag table


def test_every_flag_has_one_override_field() -> None:
    assert [flag.dest for flag in FLAGS] == [field.name for field in attrs.fields(CliOverrides)]


def test_every_flag_reaches_its_key(write_config: WriteConfig) -> None:
    """Each flag of the table, given alone, changes the configuration it names."""
    path = write_config('worker_id = "w"\n')
    values: dict[str, Any] = {
        "backend": "direct",
        "worker_id": "other",
        "api_key": "k",
        "websocket_url": "ws://127.0.0.1:1/ws",
        "server_root_url": "http://127.0.0.1:1",
        "proxy_url": "http://127.0.0.1:3128",
        "session_sharing_server_url": "http://127.0.0.1:2",
        "cleanup": False,
        "log_level": "debug",
        "log_format": "json",
        "no_cleanup": True,
        "volumes": ("/a:/a",),
        "env": ("A=1",),
        "max_concurrent_tasks": 4,
        "idle_on_complete": "5m",
        "target_dir": "/srv",
        "task_timeout": "1h",
        "shutdown_grace": "1s",
        "metrics_addr": ":9090",
        "max_tasks": 3,
        "once": True,
    }
    assert set(values) == {flag.dest for flag in FLAGS}
    default = load_config(path, NO_FLAGS, {})
    for dest, value in values.items():
        flags = CliOverrides(**{dest: value})
        if dest == "target_dir":
            flags = attrs.evolve(flags, backend="direct")
        assert load_config(path, flags, {}) != default, dest


# --------------------------------------------------------------------------- proxy_url


def test_proxy_url_from_file_and_flag(write_config: WriteConfig) -> None:
    path = write_config('worker_id = "w"\n[server]\nproxy_url = "http://u:p@proxy:3128"\n')
    assert load_config(path, NO_FLAGS, {}).server.proxy_url == "http://u:p@proxy:3128"
    flags = CliOverrides(proxy_url="http://other:8080")
    assert load_config(path, flags, {}).server.proxy_url == "http://other:8080"
    assert load_config(None, CliOverrides(worker_id="w"), {}).server.proxy_url is None


PROXY_URLS = "http:// or https:// or socks5:// or socks5h://"


@pytest.mark.parametrize(
    "url",
    ["ftp://user:hunter2@proxy:3128", "socks4://user:hunter2@p:1080", "user:hunter2@proxy:3128"],
)
def test_bad_proxy_url_never_echoes_credentials(write_config: WriteConfig, url: str) -> None:
    path = write_config(f'worker_id = "w"\n[server]\nproxy_url = "{url}"\n')
    message = refusal(path)
    assert message.startswith(f"{path}: server.proxy_url: must be a {PROXY_URLS} URL")
    assert "hunter2" not in message
    flag_message = refusal(None, CliOverrides(worker_id="w", proxy_url=url))
    assert flag_message.startswith(f"--proxy-url: must be a {PROXY_URLS} URL")
    assert "hunter2" not in flag_message


def test_bad_proxy_port_never_echoes_credentials() -> None:
    message = refusal(None, CliOverrides(worker_id="w", proxy_url="http://u:hunter2@p:99999"))
    assert message.startswith(f"--proxy-url: must be a {PROXY_URLS} URL, got 'http://***@p:99999'")
    assert "hunter2" not in message


def test_config_show_masks_proxy_credentials(write_config: WriteConfig) -> None:
    config = WorkerConfig(worker_id="w", server=ServerConfig(proxy_url="http://u:hunter2@p:3128"))
    text = dump_config(config)
    assert "hunter2" not in text
    assert 'proxy_url = "http://***@p:3128"' in text
    assert "hunter2" not in repr(config)
