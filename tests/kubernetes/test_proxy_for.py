"""Which proxy an exec-credential user's API requests take (the environment's, as httpx's)."""

from __future__ import annotations

import pytest

from ozw.backends.kubernetes.client import proxy_for

SERVER = "https://api.cluster.example:6443"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"HTTPS_PROXY": "http://p:3128"}, "http://p:3128"),
        ({"https_proxy": "http://p:3128", "HTTP_PROXY": "http://q:1"}, "http://p:3128"),
        ({"ALL_PROXY": "socks5://s:1080"}, "socks5://s:1080"),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "cluster.example"}, None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": ".example, other"}, None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"}, None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "ample"}, "http://p:3128"),
    ],
)
def test_proxy_for(environ: dict[str, str], expected: str | None) -> None:
    assert proxy_for(SERVER, environ) == expected
