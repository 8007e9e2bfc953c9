"""Which proxy, if any, the WebSocket is dialled through (docs/protocol.md, "Proxies").

Pure rules, no I/O. An explicit ``server.proxy_url`` applies to every host. Without
it the environment decides as the Go worker's dialer does (gorilla/websocket's
default dialer, whose proxy is ``http.ProxyFromEnvironment``, i.e.
golang.org/x/net/http/httpproxy): ``HTTPS_PROXY`` for ``wss://``, ``HTTP_PROXY`` for
``ws://`` (upper case first, then lower case; ``ALL_PROXY`` is not read, as Go does
not read it); never for ``localhost`` or a loopback address; never for a host that
``NO_PROXY`` names. A proxy URL is ``http://`` (CONNECT), ``https://`` (CONNECT over
TLS to the proxy), ``socks5://`` or ``socks5h://`` (the host name goes to the proxy
in both, as Go's SOCKS dialer sends it); a bare ``host:port`` is ``http://``.
"""

from __future__ import annotations

import base64
import ipaddress
import urllib.parse
from collections.abc import Mapping
from typing import Final, Literal, get_args

import attrs

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_DEFAULT_PORTS = {"ws": 80, "http": 80, "wss": 443, "https": 443, "socks5": 1080, "socks5h": 1080}
ProxyScheme = Literal["http", "https", "socks5", "socks5h"]
PROXY_SCHEMES: Final[tuple[ProxyScheme, ...]] = get_args(ProxyScheme)


class ProxySettingError(ValueError):
    """A proxy URL that cannot be used; the message names where it came from."""


@attrs.frozen
class Proxy:
    """A proxy: its kind, where it listens and its credentials (never shown)."""

    host: str
    port: int
    username: str | None = attrs.field(default=None, repr=False)
    password: str | None = attrs.field(default=None, repr=False)
    source: str = "server.proxy_url"
    """Where it came from (a setting or a variable name), for messages."""
    scheme: ProxyScheme = "http"

    def __str__(self) -> str:
        """``scheme://host:port`` only (never the credentials): what logs and errors show."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        prefix = "" if self.scheme == "http" else f"{self.scheme}://"
        return f"{prefix}{host}:{self.port}"

    def authorization(self) -> str | None:
        """The ``Proxy-Authorization`` header value of an HTTP(S) proxy, when the URL
        carries a password (Go sends none for a user name alone)."""
        if self.username is None or self.password is None:
            return None
        pair = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


def parse_proxy_url(text: str, source: str = "server.proxy_url") -> Proxy:
    """``SCHEME://[user:pass@]host[:port]`` (or a bare ``host:port``, as Go accepts) → Proxy.

    Raises ProxySettingError naming ``source`` and never echoing the credentials.
    """
    value = text.strip()
    if "://" not in value:
        value = "http://" + value
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ProxySettingError(f"{source}: not a proxy URL ({exc})") from None
    if parts.scheme not in PROXY_SCHEMES:
        wanted = ", ".join(f"{scheme}://" for scheme in PROXY_SCHEMES)
        raise ProxySettingError(
            f"{source}: {parts.scheme}:// proxies are not supported (use {wanted}; the Go "
            "worker cannot dial through it either)"
        )
    if not parts.hostname:
        raise ProxySettingError(f"{source}: the proxy URL has no host")
    # The userinfo is percent-encoded in a URL; the header carries it decoded.
    username = None if parts.username is None else urllib.parse.unquote(parts.username)
    password = None if parts.password is None else urllib.parse.unquote(parts.password)
    scheme: ProxyScheme = parts.scheme  # checked just above
    return Proxy(parts.hostname, port or _DEFAULT_PORTS[scheme], username, password, source, scheme)


def _first_set(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    for name in names:
        if environ.get(name, "").strip():
            return name, environ[name]
    return None


def choose_proxy(
    websocket_url: str, proxy_url: str | None, environ: Mapping[str, str]
) -> Proxy | None:
    """The proxy for ``websocket_url``: the explicit setting, else the environment's.

    Raises ProxySettingError when the chosen value is unusable (a dial could only fail).
    """
    if proxy_url:
        return parse_proxy_url(proxy_url)
    parts = urllib.parse.urlsplit(websocket_url)
    names = (
        ("HTTPS_PROXY", "https_proxy") if parts.scheme == "wss" else ("HTTP_PROXY", "http_proxy")
    )
    found = _first_set(environ, *names)
    if found is None:
        return None
    if parts.scheme != "wss" and environ.get("REQUEST_METHOD"):
        # Go's ProxyFromEnvironment refuses it too (golang.org/issue/16405, "httpoxy").
        raise ProxySettingError(
            f"{found[0]} is refused when REQUEST_METHOD is set: in a CGI environment it may"
            " come from a request's Proxy header; unset REQUEST_METHOD, or give the proxy"
            " as server.proxy_url"
        )
    host = parts.hostname or ""
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 80)
    no_proxy = _first_set(environ, "NO_PROXY", "no_proxy")
    if not uses_proxy(host, port, no_proxy[1] if no_proxy else ""):
        return None
    return parse_proxy_url(found[1], found[0])


def uses_proxy(host: str, port: int, no_proxy: str) -> bool:
    """Whether a connection to ``host:port`` goes through the environment's proxy.

    Go's rules (golang.org/x/net/http/httpproxy): ``localhost`` and loopback addresses
    never do; otherwise each comma-separated ``NO_PROXY`` entry can exclude the host:
    ``*`` (everything), an IP or a CIDR, ``name`` (that name and its subdomains),
    ``.name`` or ``*.name`` (subdomains only), each optionally with ``:port``.
    """
    host = _ascii(host.strip().lower().rstrip("."))
    if host == "localhost":
        return False
    ip = _ip(host)
    if ip is not None and ip.is_loopback:
        return False
    return not any(_entry_matches(entry, host, str(port), ip) for entry in no_proxy.split(","))


def _entry_matches(entry: str, host: str, port: str, ip: IPAddress | None) -> bool:
    entry = entry.strip().lower()
    if not entry:
        return False
    if entry == "*":
        return True
    if "/" in entry:
        network = _network(entry)
        return (
            network is not None
            and ip is not None
            and ip.version == network.version
            and ip in network
        )
    entry_host, entry_port = _split_host_port(entry)
    if not entry_host:
        return False  # ":80" names no host: ignored, as Go ignores malformed entries
    if entry_port and entry_port != port:
        return False
    entry_ip = _ip(entry_host)
    if entry_ip is not None:
        return entry_ip == ip
    if entry_host.startswith("*."):
        entry_host = entry_host[1:]
    subdomains_only = entry_host.startswith(".")
    name = _ascii(entry_host.lstrip("."))
    return host.endswith("." + name) or (not subdomains_only and host == name)


def _split_host_port(entry: str) -> tuple[str, str]:
    """``host:port``, ``[v6]:port`` → (host, port); anything else is a host alone."""
    if entry.startswith("["):
        inside, bracket, rest = entry[1:].partition("]")
        if bracket and rest.startswith(":"):
            return inside, rest[1:]
        return entry, ""
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""


def _ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    # Go compares an IPv4-mapped IPv6 address as the IPv4 address it carries.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _network(text: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _ascii(name: str) -> str:
    """An internationalised name in its ASCII (punycode) form, as Go compares them."""
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name
