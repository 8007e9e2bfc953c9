"""Which proxy applies (docs/protocol.md): the explicit setting, the environment, NO_PROXY.

The NO_PROXY table follows Go's golang.org/x/net/http/httpproxy (the Go worker's rules).
"""

from __future__ import annotations

import pytest

from ozw.link.proxy import Proxy, ProxySettingError, choose_proxy, parse_proxy_url, uses_proxy

# (host, port, NO_PROXY, proxied?)
NO_PROXY_TABLE = [
    # nothing excluded
    ("example.com", 443, "", True),
    ("example.com", 443, " , ,", True),
    # localhost and loopback never go through the environment's proxy (Go's rule)
    ("localhost", 80, "", False),
    ("LOCALHOST", 80, "", False),
    ("127.0.0.1", 80, "", False),
    ("127.9.9.9", 80, "", False),
    ("::1", 80, "", False),
    ("::ffff:127.0.0.1", 80, "", False),
    ("sub.localhost", 80, "", True),
    # *: everything
    ("example.com", 443, "*", False),
    ("10.1.2.3", 443, "other.org, *", False),
    # a name: itself and its subdomains, never a longer name that merely ends the same
    ("example.com", 443, "example.com", False),
    ("api.example.com", 443, "example.com", False),
    ("a.b.example.com", 443, "example.com", False),
    ("notexample.com", 443, "example.com", True),
    ("example.com.evil.org", 443, "example.com", True),
    ("Example.COM", 443, "EXAMPLE.com", False),
    ("example.com", 443, " example.com ", False),
    ("example.com.", 443, "example.com", False),
    # a leading dot or *.: subdomains only
    ("example.com", 443, ".example.com", True),
    ("api.example.com", 443, ".example.com", False),
    ("example.com", 443, "*.example.com", True),
    ("api.example.com", 443, "*.example.com", False),
    # a port: only that port
    ("example.com", 443, "example.com:443", False),
    ("example.com", 8443, "example.com:443", True),
    ("api.example.com", 80, ".example.com:80", False),
    # several entries
    ("b.org", 443, "a.org,b.org", False),
    ("c.org", 443, "a.org, b.org", True),
    # IP addresses: exact, with a port, IPv6, mapped IPv4
    ("10.1.2.3", 443, "10.1.2.3", False),
    ("10.1.2.4", 443, "10.1.2.3", True),
    ("10.1.2.3", 443, "10.1.2.3:443", False),
    ("10.1.2.3", 80, "10.1.2.3:443", True),
    ("2001:db8::1", 443, "2001:db8::1", False),
    ("2001:db8::1", 443, "[2001:db8::1]:443", False),
    ("2001:db8::1", 80, "[2001:db8::1]:443", True),
    ("::ffff:10.1.2.3", 443, "10.1.2.3", False),
    # an IP entry never matches a name, a name entry never an IP
    ("host.example", 443, "10.1.2.3", True),
    # CIDR blocks
    ("10.1.2.3", 443, "10.0.0.0/8", False),
    ("11.1.2.3", 443, "10.0.0.0/8", True),
    ("10.1.2.3", 443, "10.1.2.99/24", False),
    ("2001:db8::7", 443, "2001:db8::/32", False),
    ("2001:db9::7", 443, "2001:db8::/32", True),
    ("10.1.2.3", 443, "2001:db8::/32", True),
    ("host.example", 443, "10.0.0.0/8", True),
    # malformed entries are ignored, as Go ignores them
    ("example.com", 443, ":443", True),
    ("example.com", 443, "10.0.0.0/99", True),
    # internationalised names compare in their ASCII form
    ("xn--bcher-kva.example", 443, "bücher.example", False),
    ("bücher.example", 443, "xn--bcher-kva.example", False),
]


@pytest.mark.parametrize(("host", "port", "no_proxy", "proxied"), NO_PROXY_TABLE)
def test_no_proxy_rules(host: str, port: int, no_proxy: str, proxied: bool) -> None:
    assert uses_proxy(host, port, no_proxy) is proxied


WSS = "wss://oz.example.com/api/v1/selfhosted/worker/ws"
WS = "ws://oz.example.com:8080/ws"


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        (WSS, {}, None),
        (WSS, {"HTTPS_PROXY": "http://s:1"}, "s:1"),
        (WSS, {"https_proxy": "http://s:2"}, "s:2"),
        (WSS, {"HTTPS_PROXY": "http://s:1", "https_proxy": "http://s:2"}, "s:1"),
        (WSS, {"HTTPS_PROXY": " ", "https_proxy": "http://s:2"}, "s:2"),
        # wss:// never uses HTTP_PROXY, ws:// never HTTPS_PROXY
        (WSS, {"HTTP_PROXY": "http://h:1"}, None),
        (WS, {"HTTPS_PROXY": "http://s:1"}, None),
        (WS, {"HTTP_PROXY": "http://h:1"}, "h:1"),
        (WS, {"http_proxy": "http://h:2"}, "h:2"),
        # ALL_PROXY is never read (Go's http.ProxyFromEnvironment does not read it)
        (WSS, {"ALL_PROXY": "http://a:1"}, None),
        (WS, {"all_proxy": "socks5://a:2"}, None),
        (WSS, {"ALL_PROXY": "http://a:1", "HTTPS_PROXY": "http://s:1"}, "s:1"),
        # https:// (TLS to the proxy) and SOCKS5 proxies, with their default ports
        (WSS, {"HTTPS_PROXY": "https://s"}, "https://s:443"),
        (WSS, {"HTTPS_PROXY": "socks5://s"}, "socks5://s:1080"),
        (WS, {"HTTP_PROXY": "socks5h://u:p@s:9050"}, "socks5h://s:9050"),
        # a bare host:port is an http:// proxy, a missing port is 80
        (WSS, {"HTTPS_PROXY": "proxy.corp:3128"}, "proxy.corp:3128"),
        (WSS, {"HTTPS_PROXY": "http://proxy.corp"}, "proxy.corp:80"),
        # NO_PROXY (either case; upper case first)
        (WSS, {"HTTPS_PROXY": "http://s:1", "NO_PROXY": "example.com"}, None),
        (WSS, {"HTTPS_PROXY": "http://s:1", "no_proxy": ".example.com"}, None),
        (WSS, {"HTTPS_PROXY": "http://s:1", "NO_PROXY": "other", "no_proxy": "*"}, "s:1"),
        (WSS, {"HTTPS_PROXY": "http://s:1", "NO_PROXY": "oz.example.com:8443"}, "s:1"),
        (WS, {"HTTP_PROXY": "http://h:1", "NO_PROXY": "oz.example.com:8080"}, None),
        ("ws://localhost:8080/ws", {"HTTP_PROXY": "http://h:1"}, None),
    ],
)
def test_proxy_from_the_environment(
    url: str, environ: dict[str, str], expected: str | None
) -> None:
    proxy = choose_proxy(url, None, environ)
    assert (None if proxy is None else str(proxy)) == expected


def test_the_explicit_setting_applies_to_every_host() -> None:
    environ = {"HTTPS_PROXY": "http://env:1", "HTTP_PROXY": "http://env:2", "NO_PROXY": "*"}
    for url in (WSS, WS, "ws://localhost:1/ws", "ws://127.0.0.1:1/ws"):
        proxy = choose_proxy(url, "http://explicit:3128", environ)
        assert proxy is not None
        assert (str(proxy), proxy.source) == ("explicit:3128", "server.proxy_url")


def test_the_source_variable_is_named() -> None:
    proxy = choose_proxy(WS, None, {"http_proxy": "http://h:1"})
    assert proxy is not None
    assert proxy.source == "http_proxy"


def test_credentials_are_percent_decoded_and_never_shown() -> None:
    proxy = parse_proxy_url("http://al%69ce:p%40ss%3Aw%20rd@proxy.corp:3128")
    assert (proxy.username, proxy.password) == ("alice", "p@ss:w rd")
    # Basic base64("alice:p@ss:w rd")
    assert proxy.authorization() == "Basic YWxpY2U6cEBzczp3IHJk"
    for shown in (str(proxy), repr(proxy)):
        assert "p@ss" not in shown
        assert "alice" not in shown
        assert "al%69ce" not in shown
    assert str(proxy) == "proxy.corp:3128"


def test_a_user_without_password_and_no_user() -> None:
    # As Go's dialer: a user name without a password sends no Proxy-Authorization.
    assert parse_proxy_url("http://bob@p:1").authorization() is None
    assert parse_proxy_url("http://bob:@p:1").authorization() == "Basic Ym9iOg=="
    assert parse_proxy_url("http://p:1").authorization() is None


def test_ipv6_proxy_is_shown_in_brackets() -> None:
    assert str(parse_proxy_url("http://[2001:db8::5]:3128")) == "[2001:db8::5]:3128"
    assert parse_proxy_url("http://[2001:db8::5]:3128") == Proxy("2001:db8::5", 3128)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("socks4://user:secret@p:1080", "socks4:// proxies are not supported"),
        ("ftp://user:secret@p:21", "ftp:// proxies are not supported"),
        ("http://user:secret@p:99999", "not a proxy URL"),
        ("http://user:secret@:3128", "has no host"),
    ],
)
def test_unusable_proxy_urls_are_named_without_their_credentials(value: str, message: str) -> None:
    with pytest.raises(ProxySettingError) as caught:
        choose_proxy(WSS, None, {"HTTPS_PROXY": value})
    assert str(caught.value).startswith("HTTPS_PROXY: ")
    assert message in str(caught.value)
    assert "secret" not in str(caught.value)


def test_a_cgi_environment_refuses_http_proxy_as_go_does() -> None:
    # Go's httpproxy: with REQUEST_METHOD set, HTTP_PROXY may be a request's Proxy
    # header (httpoxy), so a ws:// dial is refused; HTTPS_PROXY for wss:// still applies.
    cgi = {"REQUEST_METHOD": "GET", "HTTP_PROXY": "http://h:1", "HTTPS_PROXY": "http://s:2"}
    for name in ("HTTP_PROXY", "http_proxy"):
        environ = {"REQUEST_METHOD": "GET", name: "http://h:1"}
        with pytest.raises(ProxySettingError, match=f"^{name} is refused when REQUEST_METHOD"):
            choose_proxy(WS, None, environ)
    proxy = choose_proxy(WSS, None, cgi)
    assert proxy is not None
    assert proxy.host == "s"
    assert choose_proxy(WS, "http://explicit:3128", cgi) is not None
    assert choose_proxy(WS, None, {"REQUEST_METHOD": "GET"}) is None
