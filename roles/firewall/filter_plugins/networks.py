"""Filters for the networks of the firewall role (standard library only)."""

from __future__ import annotations

import ipaddress


def firewall_invalid_networks(networks: list) -> list:
    """The entries that are not an IPv4/IPv6 network with zero host bits."""
    bad = []
    for entry in networks:
        try:
            ipaddress.ip_network(str(entry), strict=True)
        except ValueError:
            bad.append(entry)
    return bad


def firewall_networks_of_version(networks: list, version: int) -> list:
    """The networks of one IP version, as strings."""
    return [str(n) for n in networks if ipaddress.ip_network(str(n)).version == version]


class FilterModule:
    def filters(self) -> dict:
        return {
            "firewall_invalid_networks": firewall_invalid_networks,
            "firewall_networks_of_version": firewall_networks_of_version,
        }
