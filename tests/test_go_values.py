"""The Go worker's command lines and YAML files, read by ozw with Go's meaning.

Go's side is data: its own config test vectors (data/go_config_vectors.yaml) and its
binary's verdicts on operators' command lines (data/go_cli_observed.yaml, recorded
by tests/scripts/observe_go.py). ozw must accept what Go accepts, refuse what Go
refuses, and give each value Go's meaning.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from ozw.cli import main as cli
from ozw.config import (
    CliOverrides,
    CommandConfig,
    ConfigError,
    EnvEntry,
    WorkerConfig,
    load_config,
    overrides_from_args,
)
from ozw.config.durations import parse_go_duration
from tests.support.ozw_command import run_ozw

DATA = Path(__file__).parent / "data"
VECTORS: list[dict[str, str]] = yaml.safe_load((DATA / "go_config_vectors.yaml").read_text())
CASES = {case["name"]: case for case in yaml.safe_load((DATA / "go_cli_cases.yaml").read_text())}
OBSERVED: dict[str, dict[str, str]] = yaml.safe_load((DATA / "go_cli_observed.yaml").read_text())
MIGRATION = (Path(__file__).parent.parent / "docs" / "migrating-from-go.md").read_text()


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["test"] for vector in VECTORS])
def test_go_config_test_vectors(tmp_path: Path, vector: dict[str, str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(vector["yaml"])
    # Go's Load does not ask for a worker id (main.go does): the flag gives one.
    flags = CliOverrides(worker_id="w")
    if vector["go"] == "accepts":
        load_config(str(path), flags, {})
    else:
        with pytest.raises(ConfigError, match=f"^{path}: "):
            load_config(str(path), flags, {})


def run_case(tmp_path: Path, name: str) -> WorkerConfig:
    """ozw's reading of one operator case: its arguments through ozw's parser."""
    case = CASES[name]
    # The same file under a name that says nothing: the content tells it is YAML.
    path = tmp_path / ("worker.conf" if name == "yaml-without-yaml-name" else "config.yaml")
    path.write_text(case["yaml"])
    argv = [arg.replace("{file}", str(path)) for arg in case["args"]]
    args = cli.build_parser().parse_args(cli.normalise_argv(argv))
    return load_config(args.config, overrides_from_args(args), {"WARP_API_KEY": "k"})


@pytest.mark.parametrize("name", sorted(CASES))
def test_ozw_accepts_what_go_accepts(tmp_path: Path, name: str) -> None:
    if CASES[name].get("ozw") == "refuses":
        # Deliberately stricter: a named row of the migration table, and a refusal
        # naming the flag.
        assert OBSERVED[name]["go"] == "accepts"
        assert f"| `{CASES[name]['row']}` | different |" in MIGRATION
        with pytest.raises(ConfigError) as refused:
            run_case(tmp_path, name)
        flag = str(refused.value).split(": ", 1)[0]  # --websocket-url is --web-socket-url
        assert flag.replace("-", "") == CASES[name]["row"].replace("-", "")
    elif OBSERVED[name]["go"] == "accepts":
        config = run_case(tmp_path, name)
        assert f"worker_id={config.worker_id.replace(' ', '+')}" in OBSERVED[name]["line"]
    else:
        with pytest.raises(ConfigError):
            run_case(tmp_path, name)


def test_go_meanings(tmp_path: Path) -> None:
    def command(name: str) -> CommandConfig:
        backend = run_case(tmp_path, name).backend
        assert isinstance(backend, CommandConfig)
        return backend

    assert command("dispatch-timeout-zero").dispatch_timeout == 60.0  # Go: <= 0 is 60 s
    assert command("dispatch-timeout-go-grammar").dispatch_timeout == 3660.0
    assert command("env-list-flag").environment == (
        EnvEntry("A", "1"),
        EnvEntry("B", "2"),
        EnvEntry("C"),
    )  # kong splits a repeatable flag's value at commas
    assert run_case(tmp_path, "max-concurrent-zero-keeps-the-file").max_concurrent_tasks == 3
    with_values = run_case(tmp_path, "no-cleanup-with-values")
    assert with_values.cleanup is True  # --no-cleanup=false: not given
    assert command("no-cleanup-with-values").environment == (EnvEntry("A", "1"), EnvEntry("B", "2"))
    url = run_case(tmp_path, "session-sharing-ws").server.session_sharing_server_url
    assert url == "ws://127.0.0.1:8081"
    assert run_case(tmp_path, "worker-id-capital-warp").worker_id == "Warp-1"


def test_accepted_with_a_warning(tmp_path: Path) -> None:
    idle = run_case(tmp_path, "idle-free-form")
    assert idle.idle_on_complete == "soon"  # the flag wins; passed to the agent as written
    assert any("idle_on_complete 'soon'" in line for line in idle.warnings)
    ignored = run_case(tmp_path, "volumes-and-target-dir-on-command").warnings
    assert [line.split(":")[0] for line in ignored] == ["--volume", "--target-dir"]
    assert "ignored: only the direct backend has one, not command" in ignored[1]


def test_unknown_keys_are_refused_as_go_refuses_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"gpus: unknown key \(the Go worker refuses it too\)"):
        run_case(tmp_path, "unknown-top-key")


def test_unknown_pod_template_fields_are_dropped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "worker_id: w\nbackend:\n  kubernetes:\n    pod_template:\n      nodeSelecter: {a: b}\n"
        "      tolerations: [{key: k, operator: Exists, colour: red}]\n"
    )
    config = load_config(str(path), CliOverrides(), {})
    assert config.backend.pod_template == {  # type: ignore[union-attr]
        "tolerations": [{"key": "k", "operator": "Exists"}]
    }
    assert [line.split(": ", 2)[1] for line in config.warnings] == [
        "backend.kubernetes.pod_template.nodeSelecter",
        "backend.kubernetes.pod_template.tolerations[0].colour",
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("300ms", 0.3), ("-5s", -5.0),
     ("1m1h", 3660.0), (".5s", 0.5), ("1\u00b5s", 1e-6)],
)  # fmt: skip
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "1d", " 1h", "1h ", ".s", "-"])
def test_go_refuses_these_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a Go duration"):
        parse_go_duration(text)


def test_a_toml_file_stays_toml(tmp_path: Path) -> None:
    path = tmp_path / "worker.toml"
    path.write_text("worker_id: w\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(str(path), CliOverrides(), {})


def test_the_go_chart_flags_through_the_real_command(tmp_path: Path) -> None:
    """The Go chart's launch flags and a YAML file, as ``ozw config show`` reads them."""
    (tmp_path / "config.yaml").write_text(CASES["dispatch-timeout-zero"]["yaml"])
    result = run_ozw(
        "config", "show", "--config-file", "config.yaml", "--backend", "command",
        "--log-level", "warn", "--web-socket-url", "ws://127.0.0.1:9/ws",
        "--server-root-url", "http://127.0.0.1:9", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = tomllib.loads(result.stdout)
    assert shown["server"]["websocket_url"] == "ws://127.0.0.1:9/ws"
    assert shown["backend"]["command"]["dispatch_timeout"] == "60s"
    assert shown["log_level"] == "warning"


def test_a_zero_dispatch_timeout_in_toml_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "worker.toml"
    path.write_text(
        'worker_id = "w"\n[backend.command]\ndispatch_command = "d"\ndispatch_timeout = "0s"\n'
    )
    with pytest.raises(ConfigError, match="leave the key out for the default 60s"):
        load_config(str(path), CliOverrides(), {})


def test_a_tilde_in_the_config_path_is_home_as_kong_expands_it(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("worker_id: from-home\n")
    result = run_ozw(
        "config", "show", "--config-file=~/config.yaml", cwd=tmp_path, env={"HOME": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["worker_id"] == "from-home"
