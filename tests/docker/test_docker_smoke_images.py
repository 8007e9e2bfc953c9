"""``ozw smoke --image/--sidecar-image``: an air-gapped site runs the sample on its own images."""

from __future__ import annotations

from pathlib import Path

from tests.docker.conftest import Engine, Images


def test_the_built_in_sample_runs_on_the_images_given(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    config = tmp_path / "docker.toml"
    # Nothing may be pulled: only the images given on the command line can run.
    config.write_text('worker_id = "smoke-images"\n[backend.docker]\npull_policy = "never"\n')
    result = engine.ozw(
        "smoke",
        "--config",
        str(config),
        "--image",
        images.task,
        "--sidecar-image",
        images.agent,
        "--timeout",
        "60s",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("smoke: ok: task smoke-")

    without = engine.ozw("smoke", "--config", str(config), "--image", images.task)
    assert without.returncode == 1
    assert "warpdotdev/warp-agent:latest" in without.stdout, without.stdout
