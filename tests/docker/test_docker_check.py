"""``ozw check`` under ``pull_policy = "never"``: the default image must be on the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docker.conftest import Engine, Images


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
