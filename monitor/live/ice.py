"""Which local addresses WebRTC may offer as ICE host candidates.

aioice (under aiortc) offers every address of every interface, whatever address the
HTTP server is bound to, and never loopback; it has no option to choose
(aiortc/aioice issue #2). So a server bound to 127.0.0.1 would still announce, and bind
UDP sockets on, the machine's LAN and VPN addresses. :func:`host_candidates_on` limits
the gathering done inside its ``with`` block to the addresses given; outside such a
block aioice behaves as it always does. The limit is a context variable, so two peer
connections gathering at once in one process (a server and a client in a test) each
get their own.

The hook replaces ``aioice.ice.get_host_addresses``, the one function aioice gathers
host addresses with (aioice 0.13, pinned in pyproject.toml for this reason).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

import aioice.ice

_allowed: ContextVar[tuple[str, ...] | None] = ContextVar("dfmon_ice_addresses", default=None)
_aioice_host_addresses = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    allowed = _allowed.get()
    if allowed is None:
        return _aioice_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    return [
        address
        for address in allowed
        if (use_ipv4 if ipaddress.ip_address(address).version == 4 else use_ipv6)
    ]


aioice.ice.get_host_addresses = _host_addresses


def normalize_address(address: str) -> str:
    """An IP address in canonical form; IPv4-mapped IPv6 (``::ffff:a.b.c.d``) as IPv4."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


@contextlib.contextmanager
def host_candidates_on(addresses: Sequence[str]) -> Iterator[None]:
    """Gather host candidates only on ``addresses`` (IP literals) within the block."""
    if not addresses:
        raise ValueError("at least one address is needed for ICE host candidates")
    token = _allowed.set(tuple(normalize_address(a) for a in addresses))
    try:
        yield
    finally:
        _allowed.reset(token)


def address_towards(host: str, port: int = 9) -> str:
    """The local address this machine sends from to reach ``host`` (no packet is sent).

    A client uses it as its only host candidate: the interface that reaches the server,
    which is loopback when the server is on 127.0.0.1 or ::1.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(sockaddr)  # UDP connect only picks the route
        return normalize_address(probe.getsockname()[0])
