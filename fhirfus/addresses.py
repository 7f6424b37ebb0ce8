"""Which URLs and network addresses the server may reach on somebody else's say-so (SSRF checks).

Shared by everything that fetches or posts to a URL a client chose (``$import`` inputs and
manifests, Subscription endpoints), so they agree on two things: a URL is parsed completely
before it is used (a malformed host or port is the client's error, never a ``ValueError`` deep in
a worker), and an address is public only if the address it finally reaches is: IPv6 forms that
carry an IPv4 address (IPv4-mapped, IPv4-compatible, 6to4, NAT64) are judged by that IPv4 address,
which ``ipaddress.is_global`` alone does not do.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx

_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_COMPATIBLE = ipaddress.IPv6Network("::/96")


def http_url(url: str) -> SplitResult:
    """``url`` split, when it is an absolute http(s) URL with a host and a valid port; ``ValueError``
    saying what is wrong otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number in 0..65535
        httpx.URL(url)  # what the fetching client would refuse, refused here
    except (ValueError, httpx.InvalidURL) as exc:
        raise ValueError(f"'{url}' is not a well-formed URL ({exc})") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"'{url}' is not an http(s) URL")
    if port == 0:
        raise ValueError(f"'{url}' names port 0")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ValueError(f"'{url}' contains spaces or control characters")
    return parts


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _NAT64) or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: str) -> bool:
    """Whether ``address`` (as ``getaddrinfo`` gives it, perhaps with a ``%zone``) is a global
    unicast address, also through the IPv4 address an IPv6 form embeds."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None and not is_public(str(inner)):
            return False
    return ip.is_global and not ip.is_multicast


def pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """How to request ``url`` at ``address`` (the one a check judged, so that no second DNS lookup can
    rebind the name): the URL with that address as its host, the ``Host`` header, and for https the
    TLS server name that the certificate is checked against (httpx's ``sni_hostname`` extension)."""
    parts = http_url(url)
    literal = f"[{address}]" if ":" in address else address
    netloc = literal + (f":{parts.port}" if parts.port is not None else "")
    extensions = {"sni_hostname": parts.hostname or ""} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), {"Host": parts.netloc}, extensions
