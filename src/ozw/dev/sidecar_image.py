"""``ozw dev-sidecar-image``: build a stand-in agent sidecar image, to try docker offline.

The Oz server names the agent sidecar (``warpdotdev/warp-agent``) in every
assignment; its filesystem is mounted at ``/agent`` and the task container runs
``/agent/entrypoint.sh``. An evaluator without registry access (or without an Oz
account) builds this image instead: one file, ``/entrypoint.sh``, the stand-in of
``standin-sidecar-entrypoint.sh``, imported with ``docker import`` (no base image, no
registry), then passes it to ``ozw smoke --sidecar-image``.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from importlib import resources
from typing import Final

DEFAULT_TAG: Final = "ozw-standin-agent:dev"
SCRIPT: Final = "standin-sidecar-entrypoint.sh"


class SidecarImageError(Exception):
    """The image could not be built; the message is one line for the operator."""


def sidecar_rootfs() -> bytes:
    """The image's filesystem as a tar stream: ``/entrypoint.sh``, executable."""
    script = resources.files("ozw.dev").joinpath(SCRIPT).read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("entrypoint.sh")
        info.size = len(script)
        info.mode = 0o755
        archive.addfile(info, io.BytesIO(script))
    return buffer.getvalue()


def build_sidecar_image(tag: str, docker: str = "docker") -> str:
    """``docker import`` the stand-in sidecar as ``tag``; returns the image ID."""
    try:
        result = subprocess.run(
            [docker, "import", "--message", "ozw stand-in agent sidecar", "-", tag],
            input=sidecar_rootfs(),
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SidecarImageError(f"cannot run {docker} import: {exc}") from None
    if result.returncode != 0:
        error = result.stderr.decode(errors="replace").strip().splitlines()
        raise SidecarImageError(
            f"docker import {tag} failed: {error[-1] if error else result.returncode}"
        )
    return result.stdout.decode().strip()
