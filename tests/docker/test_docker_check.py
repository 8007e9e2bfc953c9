"""``ozw check`` under ``pull_policy = "never"``: the default image must be on the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docker.conftest import Engine, Images, Registries


@pytest.mark.parametrize("present", [True, False], ids=["present", "absent"])
def test_never_pull_policy_checks_the_default_image(
    engine: Engine, images: Images, tmp_path: Path, present: bool
) -> None:
    image = images.task if present else f"{images.prefix}/never-pulled:1"
    config = tmp_path / "docker.toml"
    config.write_text(
        f"""
worker_id = "check-docker"
[backend.docker]
default_image = "{image}"
pull_policy = "never"
"""
    )
    result = engine.ozw("check", "--config", str(config))
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if " default image " in line]
    assert len(lines) == 1, result.stdout
    if present:
        assert lines[0].startswith("ok ")
        assert f"{image} is present (linux/" in lines[0]
    else:
        assert lines[0].startswith("FAIL ")
        assert lines[0].endswith(f"{image} is not present and pull_policy is 'never'")
    # The image was only looked at: check never pulls.
    assert engine.run("image", "inspect", image, check=False).returncode == (0 if present else 1)


def check_line(engine: Engine, tmp_path: Path, image: str, policy: str) -> str:
    config = tmp_path / f"docker-{policy}.toml"
    config.write_text(
        f'worker_id = "check-docker"\n[backend.docker]\n'
        f'default_image = "{image}"\npull_policy = "{policy}"\n'
    )
    result = engine.ozw("check", "--config", str(config))
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if " default image " in line]
    return line


@pytest.mark.parametrize("policy", ["always", "if-not-present"])
def test_check_reports_an_image_the_policy_would_pull_but_cannot(
    engine: Engine, images: Images, tmp_path: Path, policy: str
) -> None:
    # Docker Hub cannot be reached from here (only 127.0.0.1 is).
    absent = f"{images.prefix}-hub-only:1"
    line = check_line(engine, tmp_path, absent, policy)
    assert line.startswith("FAIL "), line
    assert f"{absent}, but registry-1.docker.io:443 cannot be reached (" in line
    assert line.endswith("load it (docker load), or make registry-1.docker.io reachable")
    # Present locally: "always" would still pull it, and check names the setting that
    # stops it; "if-not-present" uses it.
    line = check_line(engine, tmp_path, images.task, policy)
    if policy == "always":
        assert line.startswith("FAIL "), line
        assert line.endswith(
            'it is present locally: pull_policy = "if-not-present" uses it as it is'
        )
    else:
        assert line.startswith("ok "), line
        assert f"{images.task} is present (linux/" in line


def test_check_passes_an_image_whose_registry_is_reachable(
    engine: Engine, registries: Registries, tmp_path: Path
) -> None:
    image = registries.open.ref("ozw/task:1")
    line = check_line(engine, tmp_path, image, "always")
    assert line.startswith("ok "), line
    assert line.endswith(f"every task pulls {image} from {registries.open.address} (reachable)")


def test_the_agent_sidecar_oz_names_is_checked_as_a_warning(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    # The server names the sidecar per task: what Oz names today is looked at, and a
    # problem with it warns without failing the check.
    config = tmp_path / "docker.toml"
    config.write_text(
        f'worker_id = "check-docker"\n[backend.docker]\n'
        f'default_image = "{images.task}"\npull_policy = "never"\n'
    )
    result = engine.ozw("check", "--config", str(config))
    (line,) = [line for line in result.stdout.splitlines() if " agent sidecar " in line]
    assert line.startswith("warn "), line
    assert "warpdotdev/warp-agent:latest is not present and pull_policy is 'never'" in line
    assert line.endswith("(the image Oz names today; the server decides per task)")
