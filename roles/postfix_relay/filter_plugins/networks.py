"""Filters for the client networks of postfix_relay (standard library only)."""

from __future__ import annotations

import ipaddress

LOOPBACK = ["127.0.0.0/8", "::1/128"]


def invalid_networks(networks: list) -> list:
    """The entries that are not an IPv4/IPv6 address or network (host bits must be zero)."""
    bad = []
    for entry in networks:
        try:
            ipaddress.ip_network(str(entry), strict=True)
        except ValueError:
            bad.append(entry)
    return bad


def mynetworks(networks: list) -> list:
    """Loopback plus ``networks`` in Postfix's notation (IPv6 in brackets), duplicates out."""
    result = []
    for entry in LOOPBACK + [str(n) for n in networks]:
        network = ipaddress.ip_network(entry, strict=True)
        text = (f"[{network.network_address}]/{network.prefixlen}"
                if network.version == 6 else str(network))
        if text not in result:
            result.append(text)
    return result


class FilterModule:
    def filters(self) -> dict:
        return {
            "postfix_relay_invalid_networks": invalid_networks,
            "postfix_relay_mynetworks": mynetworks,
        }
