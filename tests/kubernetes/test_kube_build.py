"""tools/kube: the control plane's module pins one release, and a missing build is named."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.kubernetes.real.control_plane import BUILD, REPO

GO_MOD = (REPO / "tools" / "kube" / "go.mod").read_text()


def test_every_kubernetes_module_is_pinned_to_the_one_release() -> None:
    (release,) = re.findall(r"^\tk8s\.io/kubernetes v1\.(\d+)\.(\d+)$", GO_MOD, re.M)
    staging = f"v0.{release[0]}.{release[1]}"
    replaced = dict(re.findall(r"^\t(k8s\.io/[\w-]+) => \1 (v\S+)$", GO_MOD, re.M))
    assert replaced, "no replace directives"
    assert set(replaced.values()) == {staging}
    # The placeholders k8s.io/kubernetes requires (v0.0.0) all resolve through a pin.
    placeholders = set(re.findall(r"^\t(k8s\.io/[\w-]+) v0\.0\.0 ", GO_MOD, re.M))
    assert placeholders <= set(replaced)


def test_check_names_what_is_missing(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", str(BUILD), "--check"],
        env={**os.environ, "OZW_KUBE_BIN": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 3
    assert result.stderr.strip() == (
        f"missing: etcd kube-apiserver kube-controller-manager in {tmp_path}: "
        "run tools/kube/build.sh (a first build takes up to an hour on two cores)"
    )
