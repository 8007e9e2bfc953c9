"""``ozw smoke`` and ``ozw check`` with the docker example configuration, on a real engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.docker.conftest import Engine, Images


def task_file(tmp_path: Path, images: Images, behaviour: str, **extra: object) -> Path:
    path = tmp_path / f"task-{behaviour.replace(':', '-')}.json"
    path.write_text(
        json.dumps(
            {
                "task_id": f"smoke-{behaviour.replace(':', '-')}",
                "task": {"id": "smoke-docker"},
                "docker_image": images.task,
                "sidecar_image": images.agent,
                "env_vars": {"STANDIN_BEHAVIOUR": behaviour},
                **extra,
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("behaviour", "code", "expected"),
    [
        ("ok", 0, ["smoke: ok: task smoke-ok completed"]),
        (
            "exit:7",
            1,
            [
                "smoke: FAILED: task smoke-exit-7 failed (container_exit), exit code 7",
                "last output lines:",
                "[agent stdout] standin: env=TASK_ID=smoke-docker",
            ],
        ),
    ],
)
def test_smoke_runs_the_docker_example_config(
    engine: Engine, images: Images, tmp_path: Path, behaviour: str, code: int, expected: list[str]
) -> None:
    task = task_file(tmp_path, images, behaviour)
    result = engine.ozw("smoke", "--config", "config/examples/docker.toml", "--task", str(task))
    assert result.returncode == code, result.stdout + result.stderr
    assert result.stdout.startswith(expected[0]), result.stdout
    assert [text for text in expected if text not in result.stdout] == []
    assert "Traceback" not in result.stdout + result.stderr
    # The log tells the order things happened in: the agent starts in a created container.
    task_id = "smoke-" + behaviour.replace(":", "-")
    events = [line.split(f"task={task_id} ", 1)[-1] for line in result.stderr.splitlines()]
    created = next(i for i, e in enumerate(events) if e.startswith("container ozw-"))
    assert events[created].split(" ")[2] == "created", events[created]
    assert created < events.index("agent started"), events


def test_check_reaches_the_engine_and_reports_its_platform(engine: Engine) -> None:
    result = engine.ozw("check", "--config", "config/examples/docker.toml")
    lines = result.stdout.splitlines()
    backend = [line for line in lines if "backend docker" in line]
    assert backend, result.stdout
    assert backend[0].startswith("ok")
    assert "docker daemon " in backend[0]
    assert "on linux/" in backend[0]
    # No API key in this environment: check says so, and fails.
    assert result.returncode == 1
    assert any(line.startswith("FAIL") and "api key" in line for line in lines)


def test_check_fails_in_one_line_when_the_daemon_is_gone(engine: Engine) -> None:
    dead = Engine("unix:///nonexistent/docker.sock", private=False)
    result = dead.ozw("check", "--config", "config/examples/docker.toml")
    assert result.returncode == 1
    failing = [line for line in result.stdout.splitlines() if "backend docker" in line]
    assert failing[0].startswith("FAIL")
    assert "cannot reach the Docker daemon" in failing[0]


@pytest.mark.parametrize(
    ("extra", "failure"),
    [
        (
            {"instance_shape": {"vcpus": 1e308, "memory_gb": 1e308}},
            "failed (container_create): Failed to execute task: the assignment is not valid: "
            "instance_shape.vcpus: 1e+308 is not a number from 0 to 9223372036; "
            "instance_shape.memory_gb: 1e+308 is not a number from 0 to 8589934591",
        ),
        (
            {"additional_sidecars": [{"image": "x", "mount_path": "/x/../../etc"}]},
            "failed (sidecar_prep): Failed to execute task: the assignment is not valid: "
            "additional_sidecars[0].mount_path '/x/../../etc' climbs with '..'",
        ),
    ],
    ids=["shape", "mount"],
)
def test_absurd_input_fails_the_task_as_bad_input(
    engine: Engine, images: Images, tmp_path: Path, extra: dict[str, object], failure: str
) -> None:
    task = task_file(tmp_path, images, "ok", **extra)
    result = engine.ozw("smoke", "--config", "config/examples/docker.toml", "--task", str(task))
    assert result.returncode == 1, result.stdout + result.stderr
    assert failure in result.stdout, result.stdout
    assert "internal error" not in result.stdout + result.stderr


def test_smoke_with_local_images_does_not_pull_them_under_always(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    # The starter's policy; the images exist only on this engine (Docker Hub is out of reach).
    config = tmp_path / "always.toml"
    config.write_text('worker_id = "offline"\n[backend.docker]\npull_policy = "always"\n')
    flags = ["--image", images.task, "--sidecar-image", images.agent]
    result = engine.ozw("smoke", "--config", str(config), *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("smoke: ok: task smoke-"), result.stdout
    assert 'pull_policy "always" is taken as "if-not-present" for this run' in result.stderr
    assert "pulling" not in result.stderr
    # Without the flags the policy holds, and the failure names the setting to change.
    task = task_file(tmp_path, images, "ok")
    result = engine.ozw("smoke", "--config", str(config), "--task", str(task))
    assert result.returncode == 1
    assert f"failed (image_pull): Failed to execute task: could not pull image {images.task}" in (
        result.stdout
    )
    assert (
        f'(image {images.task} is present locally: pull_policy = "if-not-present" '
        "in [backend.docker] uses it without pulling)"
    ) in result.stdout


def test_the_documented_stand_in_sidecar_runs_the_smoke_sample_offline(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    tag = f"{images.prefix}/standin-agent:dev"
    built = engine.ozw("dev-sidecar-image", "--tag", tag)
    assert built.returncode == 0, built.stdout + built.stderr
    assert built.stdout.startswith(f"built {tag} (sha256:"), built.stdout
    config = tmp_path / "always.toml"
    config.write_text('worker_id = "offline"\n[backend.docker]\npull_policy = "always"\n')
    result = engine.ozw(
        "smoke", "--config", str(config), "--image", images.task, "--sidecar-image", tag
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("smoke: ok: task smoke-"), result.stdout
    # The stand-in got the agent's arguments and performed the sample's prompt.
    assert "[agent stdout] stand-in agent: agent run --task-id smoke-" in result.stderr
    assert "[agent stdout] ozw smoke test: hello from the agent" in result.stderr
    engine.run("image", "rm", tag)


def test_a_container_killed_after_kill_grace_is_logged_as_killed(
    engine: Engine, images: Images, tmp_path: Path
) -> None:
    # The stand-in is the container's PID 1, a shell: SIGTERM does not end it.
    config = tmp_path / "grace.toml"
    config.write_text(
        'worker_id = "grace"\n[backend.docker]\npull_policy = "never"\nkill_grace = "1s"\n'
    )
    task = task_file(tmp_path, images, "sleep:60")
    result = engine.ozw("smoke", "--config", str(config), "--task", str(task), "--timeout", "3s")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "smoke: FAILED: task smoke-sleep-60 timed out after 3s" in result.stdout
    assert "task=smoke-sleep-60 agent did not exit within 1s of SIGTERM (kill_grace): killed" in (
        result.stderr
    )
