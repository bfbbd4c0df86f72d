"""Who a client is: the key every per-client bound counts under (body readers, refusals, work slots).

The key is the client address uvicorn reports (the peer, or the X-Forwarded-For of a proxy listed in
FORWARDED_ALLOW_IPS), normalised so that one client has one key: an IPv4-mapped IPv6 address
(`::ffff:192.0.2.1`) is its IPv4 address, and an IPv6 address is its network of CLIENT_IPV6_PREFIX bits (a
/64 by default: a host is handed a whole /64, so keying by the full address would give every request its
own budget). An address that does not parse (a Unix socket, a test client's name) is its own key.
"""

from __future__ import annotations

import functools
import ipaddress


def client_key(scope, ipv6_prefix: int) -> str:
    """The key of the client of ASGI `scope` (the empty string when the server does not know it)."""
    client = scope.get("client")
    return address_key(client[0], ipv6_prefix) if client else ""


@functools.lru_cache(maxsize=4096)
def address_key(host: str, ipv6_prefix: int) -> str:
    """`host` as a client key: IPv4 as is, IPv4-mapped IPv6 as its IPv4, other IPv6 as its network."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # a zone index (fe80::1%eth0) is the same host
    except ValueError:
        return host
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))
    return str(address)
