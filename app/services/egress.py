"""Where the service may send requests: the SSRF guard of delivery endpoints (SPEC 9.1, README "Integrating").

A URL is checked when an endpoint is set, and its name again at every connection the relay opens (the relay's
pool, app/services/http1.py), against the addresses it resolves to then: a name that answered a public address
when it was set and a private one later (DNS rebinding) is refused at connect time. The connection goes to the
very address that was checked (the name stays in the Host header and in TLS's SNI and certificate check), so no
second lookup can differ. A kept-alive connection stays with the address it was opened to.
"""

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

ResolvedAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT_SECONDS = 5.0


class UnsafeUrl(ValueError):
    """The URL is not one the service may send to; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: the address to connect to and the URL to request there."""

    url: str  # with the checked address in place of the name
    host: str  # the name as written, for the Host header and TLS
    address: str


def forbidden(address: ResolvedAddress) -> bool:
    """Loopback, private, link-local (cloud metadata: 169.254.169.254, fd00:ec2::254), shared, reserved,
    multicast or unspecified: anything that is not a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def parse(url: str) -> SplitResult:
    """The URL's parts when it is an absolute http(s) URL with a host; UnsafeUrl otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port out of range)
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("the URL must start with https:// or http://")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.fragment:
        raise UnsafeUrl("the URL may not carry a fragment")
    return parts


async def resolve(host: str, port: int) -> list[ResolvedAddress]:
    """Every address the name resolves to now (an address literal: itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM),
                                       timeout=RESOLVE_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise UnsafeUrl(f"the host '{host}' does not resolve ({type(exc).__name__})") from None
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


async def allowed_address(host: str, port: int, *, allow_private: bool) -> ResolvedAddress:
    """The address to connect to for `host`: the first it resolves to now; UnsafeUrl when it resolves to any
    forbidden address, unless `allow_private` (TRIAGE_DELIVERY_ALLOW_PRIVATE, for tests and local demos)."""
    addresses = await resolve(host, port)
    if not addresses:
        raise UnsafeUrl(f"the host '{host}' does not resolve")
    if not allow_private:
        refused = [str(a) for a in addresses if forbidden(a)]
        if refused:
            raise UnsafeUrl(f"the host '{host}' resolves to {', '.join(refused)}: loopback, private, link-local and "
                            "metadata addresses are not allowed")
    return addresses[0]


async def check(url: str, *, allow_private: bool) -> Target:
    """The URL as a checked target (see `allowed_address`)."""
    parts = parse(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = await allowed_address(host, port, allow_private=allow_private)
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    return Target(url=parts._replace(netloc=netloc).geturl(), host=parts.netloc.rpartition("@")[2], address=str(address))
