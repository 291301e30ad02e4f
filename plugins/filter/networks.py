"""Network filters shared by the roles (standard library only).

One implementation of each rule: postfix_relay and firewall both check client networks
with these (called by their full names, qqrelay.relay.invalid_networks…).
"""

from __future__ import annotations

import ipaddress

LOOPBACK = ["127.0.0.0/8", "::1/128"]
# Wider than this is never a LAN: IPv4 /8 (10.0.0.0/8 is the widest private block),
# IPv6 /7 (fc00::/7, all unique-local addresses).
WIDEST_PREFIX = {4: 8, 6: 7}
# Publicly routed networks wider than this are someone else's Internet.
WIDEST_PUBLIC_PREFIX = {4: 16, 6: 32}


def _network(entry: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(str(entry), strict=True)


def invalid_networks(networks: list) -> list:
    """The entries that are not an IPv4/IPv6 address or network (host bits must be zero)."""
    bad = []
    for entry in networks:
        try:
            _network(entry)
        except ValueError:
            bad.append(entry)
    return bad


def wide_networks(networks: list) -> list:
    """The valid entries too wide for a relay's clients: the Internet or much of it.

    Shorter than /8 (IPv4) or /7 (IPv6) always; public (globally routed) networks shorter
    than /16 or /32. Private blocks such as 10.0.0.0/8 or fd00::/8 pass.
    """
    wide = []
    for entry in networks:
        try:
            network = _network(entry)
        except ValueError:
            continue
        private = network.is_private and network.prefixlen > 0
        if (network.prefixlen < WIDEST_PREFIX[network.version]
                or (not private and network.prefixlen < WIDEST_PUBLIC_PREFIX[network.version])):
            wide.append(entry)
    return wide


def postfix_networks(networks: list) -> list:
    """Loopback plus ``networks`` in Postfix's notation (IPv6 in brackets), duplicates out."""
    result = []
    for entry in LOOPBACK + [str(n) for n in networks]:
        network = _network(entry)
        text = (f"[{network.network_address}]/{network.prefixlen}"
                if network.version == 6 else str(network))
        if text not in result:
            result.append(text)
    return result


def networks_of_version(networks: list, version: int) -> list:
    """The networks of one IP version, as strings."""
    return [str(n) for n in networks if _network(n).version == version]


class FilterModule:
    def filters(self) -> dict:
        return {
            "invalid_networks": invalid_networks,
            "wide_networks": wide_networks,
            "postfix_networks": postfix_networks,
            "networks_of_version": networks_of_version,
        }
