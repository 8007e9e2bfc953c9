"""The docker backend's pure rules: no engine, no I/O."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from ozw.backends.docker.inspect import ContainerState, LocalImage, parse_state
from ozw.backends.docker.late_oom import late_oom_possible
from ozw.backends.docker.references import (
    ImageReference,
    InvalidReference,
    container_name,
    is_valid_reference,
    parse_reference,
    platform_of,
    private_volume_name,
    registry_address,
    sanitise_name_part,
    volume_name,
)
from ozw.backends.docker.rules import (
    MAX_ENV_ENTRY,
    ContainerSpec,
    SidecarMount,
    classify_exit,
    create_request,
    docker_error,
    duplicate_mount_paths,
    environment_problem,
    memory_bytes,
    nano_cpus,
    resources,
    sidecar_problem,
)
from ozw.backends.docker.volumes import FILLED_MARKER, marker_tar
from ozw.tasks.failures import FailureReason
from ozw.tasks.params import Shape

DIGEST = "sha256:" + "0123456789abcdef" * 4

# --- references -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "parsed"),
    [
        ("ubuntu", ImageReference("ubuntu")),
        ("ubuntu:22.04", ImageReference("ubuntu", "22.04")),
        ("warpdotdev/warp-agent:latest", ImageReference("warpdotdev/warp-agent", "latest")),
        ("127.0.0.1:5000/a/agent:1", ImageReference("127.0.0.1:5000/a/agent", "1")),
        ("localhost/foo", ImageReference("localhost/foo")),
        ("Registry.Example.com:443/x/y_z__w", ImageReference("Registry.Example.com:443/x/y_z__w")),
        (f"gcr.io/x/y@{DIGEST}", ImageReference("gcr.io/x/y", None, DIGEST)),
        (f"a/b:t@{DIGEST}", ImageReference("a/b", "t", DIGEST)),
        ("a---b.c:_T-1.x", ImageReference("a---b.c", "_T-1.x")),
    ],
)
def test_valid_references_parse(reference: str, parsed: ImageReference) -> None:
    assert parse_reference(reference) == parsed
    assert is_valid_reference(reference)


@pytest.mark.parametrize(
    "reference",
    [
        "",
        " ",
        "-v",
        "--privileged",
        "-ubuntu",
        "Ubuntu",  # repository paths are lower-case
        "ubuntu:",
        ":latest",
        "ubuntu:-tag",
        "ubuntu:tag with space",
        "a b",
        "a//b",
        "a/b/",
        "/a",
        "ubuntu@sha256:abc",  # digest too short
        "ubuntu\n",
        "ubuntu;rm -rf /",
        "ubuntu:" + "t" * 129,
        "a" * 256,
        "héllo",
    ],
)
def test_invalid_references_are_refused(reference: str) -> None:
    assert not is_valid_reference(reference)
    with pytest.raises(InvalidReference, match="not a valid image reference"):
        parse_reference(reference)


# --- names ----------------------------------------------------------------------------


def test_sanitise_maps_everything_outside_the_volume_alphabet() -> None:
    assert sanitise_name_part("a/b:c@d e_f.g-h") == "a-b-c-d-e_f.g-h"
    assert sanitise_name_part("ünï") == "-n-"


@pytest.mark.parametrize(
    ("reference", "digest", "expected"),
    [
        ("warpdotdev/warp-agent:latest", DIGEST, "warpdotdev-warp-agent-0123456789ab"),
        ("127.0.0.1:5000/a/agent:1", DIGEST, "127.0.0.1-5000-a-agent-0123456789ab"),
        (f"gcr.io/x/y@{DIGEST}", "sha256:fedcba9876543210", "gcr.io-x-y-fedcba987654"),
        ("ubuntu", "fedcba9876543210aaaa", "ubuntu-fedcba987654"),
        # The Go worker's familiar names: Docker Hub's host and library/ dropped.
        ("docker.io/library/busybox:1", DIGEST, "busybox-0123456789ab"),
        ("index.docker.io/library/busybox", DIGEST, "busybox-0123456789ab"),
        ("library/busybox", DIGEST, "busybox-0123456789ab"),
        ("docker.io/a/b:2", DIGEST, "a-b-0123456789ab"),
        ("docker.io/library/a/b", DIGEST, "library-a-b-0123456789ab"),
        ("localhost/foo", DIGEST, "localhost-foo-0123456789ab"),
        ("localhost:5000/foo", DIGEST, "localhost-5000-foo-0123456789ab"),
    ],
)
def test_volume_name_is_familiar_repository_then_12_hex(
    reference: str, digest: str, expected: str
) -> None:
    assert volume_name(reference, digest) == expected


@pytest.mark.parametrize(
    ("repo_digests", "expected"),
    [
        ((), "sha256:" + "a" * 64),
        ((f"reg/x@{DIGEST}", "reg/y@sha256:" + "b" * 64), DIGEST),
        (("no-at-sign",), "sha256:" + "a" * 64),
    ],
)
def test_the_volume_digest_is_the_first_repo_digest_else_the_image_id(
    repo_digests: tuple[str, ...], expected: str
) -> None:
    image = LocalImage("x", "sha256:" + "a" * 64, "linux/amd64", repo_digests)
    assert image.content_digest == expected


def test_private_volume_name_extends_the_shared_name() -> None:
    shared = volume_name("127.0.0.1:5000/a/agent:1", DIGEST)
    private = private_volume_name(shared, "0a1b2c3d")
    assert private == "127.0.0.1-5000-a-agent-0123456789ab-rw-0a1b2c3d"


def test_volume_name_refuses_an_invalid_reference() -> None:
    with pytest.raises(InvalidReference):
        volume_name("-x", DIGEST)


def test_container_name_is_readable_and_valid() -> None:
    assert container_name("my worker", "run/1", "abcd") == "ozw-my-worker-run-1-abcd"
    long = container_name("w" * 100, "t" * 100, "ff")
    assert long == f"ozw-{'w' * 48}-{'t' * 48}-ff"


@pytest.mark.parametrize(
    ("os_name", "arch", "platform"),
    [("linux", "amd64", "linux/amd64"), ("Linux", "x86_64", "linux/amd64"),
     ("linux", "aarch64", "linux/arm64"), ("windows", "amd64", "windows/amd64")],
)  # fmt: skip
def test_platform_spelling(os_name: str, arch: str, platform: str) -> None:
    assert platform_of(os_name, arch) == platform


# --- resources ------------------------------------------------------------------------


def test_resources_pin_swap_to_memory() -> None:
    assert resources(None) == {}
    assert resources(Shape()) == {}
    assert resources(Shape(vcpus=2, memory_gb=4)) == {
        "NanoCpus": 2_000_000_000,
        "Memory": 4294967296,
        "MemorySwap": 4294967296,
    }
    assert resources(Shape(vcpus=0.5)) == {"NanoCpus": 500_000_000}
    assert resources(Shape(memory_gb=0.02)) == {
        "Memory": 21474836,
        "MemorySwap": 21474836,
    }


@pytest.mark.parametrize("value", [None, 0, -1, float("nan"), float("inf")])
def test_absent_or_nonsense_limits_set_nothing(value: float | None) -> None:
    assert memory_bytes(value) is None
    assert nano_cpus(value) is None


# --- environment ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"A=B": "x"}, "invalid environment variable name 'A=B'"),
        ({"": "x"}, "invalid environment variable name ''"),
        ({"A\0": "x"}, "invalid environment variable name 'A\\x00'"),
        ({"A": "x\0y"}, "environment variable A holds a NUL byte"),
        ({"A": "\udcff"}, "environment variable A is not valid UTF-8"),
        ({"BIG": "x" * MAX_ENV_ENTRY}, "environment variable BIG is too large (131075 bytes"),
        ({"SSH_KEY": "é" * 70_000}, "environment variable SSH_KEY is too large"),
    ],
)
def test_only_what_no_process_environment_holds_is_refused(
    env: dict[str, str], problem: str
) -> None:
    found = environment_problem(env)
    assert found is not None
    assert found.startswith(problem), found


def test_any_other_value_is_fine() -> None:
    env = {
        "SSH_PRIVATE_KEY": "-----BEGIN\nabc\n-----END\n",
        "HOME": "/h",
        "LD_PRELOAD": "/x.so",
        "DOCKER_HOST": "tcp://x:1",
        "LANG": "C.UTF-8\r\n",
        "TZ": "Europe/Paris",
        "A B": " # = 'q' \"dq\" ",
        "#HASH": "=",
        "LARGE": "x" * (MAX_ENV_ENTRY - len("LARGE=")),
    }
    assert environment_problem(env) is None


# --- sidecars -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "path", "problem"),
    [
        ("", "/agent", "a sidecar has an empty image"),
        ("-v", "/agent", "sidecar image '-v' is not a valid image reference"),
        ("img", "", "sidecar img mount path '' is empty"),
        ("img", "agent", "sidecar img mount path 'agent' is not absolute"),
        ("img", "//", "sidecar img mount path '//' is the root directory"),
        ("img", "/x/../../etc", "sidecar img mount path '/x/../../etc' climbs with '..'"),
        ("img", "/a:b", "sidecar img mount path '/a:b' holds ':' ',' or NUL"),
    ],
)
def test_sidecar_problems(image: str, path: str, problem: str) -> None:
    assert sidecar_problem(image, path) == problem


def test_a_good_sidecar_has_no_problem() -> None:
    assert sidecar_problem("warpdotdev/warp-agent:latest", "/agent") is None


def test_duplicate_mount_paths_are_found_after_normalisation() -> None:
    assert duplicate_mount_paths(["/agent", "/x", "/agent/", "/y//z", "/y/z", "/agent"]) == [
        "/agent",
        "/y/z",
    ]
    assert duplicate_mount_paths(["/a", "/b"]) == []


# --- the create request -----------------------------------------------------------------


def test_the_create_request_is_exact() -> None:
    spec = ContainerSpec(
        name="ozw-w-t-1234", image_id=DIGEST, image_ref="ubuntu:22.04",
        worker_id="w", task_id="t", execution_id="e",
        base_args=("agent", "run", "--task-id", "t", "-x"), env={"TASK_ID": "t", "KEY": "a\nb=c"},
        sidecars=(
            SidecarMount("agent-0123", "/agent"),
            SidecarMount("tools-4567", "/tools", read_write=True),
        ),
        volumes=("/srv/cache:/cache:ro", "named:/data"), shape=Shape(vcpus=2, memory_gb=1),
    )  # fmt: skip
    assert "a\nb=c" not in repr(spec)
    target, body = create_request(spec)
    assert target == "/containers/create?name=ozw-w-t-1234"
    assert body == {
        "Image": DIGEST,
        # Cmd, not Entrypoint: an ENTRYPOINT of the image wraps the agent (as in Go).
        "Cmd": ["/agent/entrypoint.sh", "agent", "run", "--task-id", "t", "-x"],
        "Env": ["TASK_ID=t", "KEY=a\nb=c"],
        "WorkingDir": "/workspace",
        "Labels": {
            "ozw.worker_id": "w",
            "ozw.task_id": "t",
            "ozw.execution_id": "e",
            "ozw.role": "task",
            "ozw.image": "ubuntu:22.04",
        },
        "AttachStdout": True,
        "AttachStderr": True,
        "HostConfig": {
            "Binds": [
                "agent-0123:/agent:ro",
                "tools-4567:/tools:rw",
                "/srv/cache:/cache:ro",
                "named:/data",
            ],
            "NanoCpus": 2_000_000_000,
            "Memory": 1073741824,
            "MemorySwap": 1073741824,
        },
    }


def test_the_create_request_minimal() -> None:
    spec = ContainerSpec(
        name="n&x", image_id=DIGEST, image_ref="i", worker_id="w", task_id="t",
        execution_id=None, base_args=(), env={}, sidecars=(), volumes=(), shape=None,
    )  # fmt: skip
    target, body = create_request(spec)
    assert target == "/containers/create?name=n%26x"
    assert body["Cmd"] == ["/agent/entrypoint.sh"]
    assert body["Env"] == []
    assert body["Labels"] == {
        "ozw.worker_id": "w",
        "ozw.task_id": "t",
        "ozw.role": "task",
        "ozw.image": "i",
    }
    assert body["HostConfig"] == {"Binds": []}


# --- outcomes -------------------------------------------------------------------------


def _state(**changes: object) -> ContainerState:
    base: dict[str, object] = {
        "Status": "exited",
        "Running": False,
        "OOMKilled": False,
        "ExitCode": 0,
        "Error": "",
        "StartedAt": "2026-11-24T14:00:00.1Z",
    }
    base.update(changes)
    return parse_state(json.dumps(base))


def test_exit_zero_completes_even_after_an_oom_kill_of_a_child() -> None:
    assert classify_exit(_state()) is None
    assert classify_exit(_state(OOMKilled=True)) is None


def test_non_zero_exit_is_container_exit() -> None:
    failure = classify_exit(_state(ExitCode=3))
    assert failure is not None
    assert (failure.reason, failure.exit_code) == (FailureReason.CONTAINER_EXIT, 3)
    assert failure.cause == "the agent exited with exit code 3"
    killed = classify_exit(_state(ExitCode=137))
    assert killed is not None
    assert killed.cause == "the agent exited with killed by SIGKILL (exit code 137)"


def test_oom_is_container_oom() -> None:
    failure = classify_exit(_state(ExitCode=137, OOMKilled=True), memory_limit=21474836)
    assert failure is not None
    assert (failure.reason, failure.exit_code) == (FailureReason.CONTAINER_OOM, 137)
    assert "(limit 21474836 bytes)" in failure.cause


def test_a_late_oom_is_possible_only_for_sigkill_under_a_memory_limit() -> None:
    killed = _state(ExitCode=137)
    assert late_oom_possible(killed, memory_limit=21474836)
    assert not late_oom_possible(killed, memory_limit=None)
    assert not late_oom_possible(_state(ExitCode=137, OOMKilled=True), memory_limit=21474836)
    assert not late_oom_possible(_state(ExitCode=1), memory_limit=21474836)
    never = _state(Status="created", ExitCode=137, StartedAt="0001-01-01T00:00:00Z")
    assert never.started_at is None
    assert not late_oom_possible(never, memory_limit=21474836)


def test_never_started_is_container_start_without_exit_code() -> None:
    failure = classify_exit(
        _state(Status="created", ExitCode=127, StartedAt="0001-01-01T00:00:00Z", Error="exec: x")
    )
    assert failure is not None
    assert (failure.reason, failure.exit_code) == (FailureReason.CONTAINER_START, None)
    assert failure.cause == "could not start the container: exec: x"


def test_docker_error_is_the_last_meaningful_line() -> None:
    stderr = b"Unable to find image\nError response from daemon: boom\n\nSee 'docker run --help'.\n"
    assert docker_error(stderr) == "Error response from daemon: boom"
    assert docker_error("") == "no error output"


def test_marker_tar_holds_only_the_marker() -> None:
    with tarfile.open(fileobj=io.BytesIO(marker_tar("sha256:x"))) as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == [FILLED_MARKER]
        extracted = archive.extractfile(members[0])
        assert extracted is not None
        assert extracted.read() == b"sha256:x"


@pytest.mark.parametrize(
    ("reference", "address"),
    [
        ("ubuntu:22.04", ("registry-1.docker.io", 443)),
        ("warpdotdev/warp-agent:latest", ("registry-1.docker.io", 443)),
        ("docker.io/library/ubuntu", ("registry-1.docker.io", 443)),
        ("index.docker.io/a/b", ("registry-1.docker.io", 443)),
        ("ghcr.io/a/b:1", ("ghcr.io", 443)),
        ("127.0.0.1:5000/ozw/task:1", ("127.0.0.1", 5000)),
        ("localhost/x", ("localhost", 443)),
        ("registry.local:8443/x@sha256:" + "a" * 64, ("registry.local", 8443)),
    ],
)
def test_registry_address(reference: str, address: tuple[str, int]) -> None:
    assert registry_address(reference) == address
