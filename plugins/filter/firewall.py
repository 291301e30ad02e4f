"""Firewall filters shared by the roles (standard library only): ports, and which ufw
rules this toolkit owns but the inventory no longer declares, and which it declares
but ufw does not have yet.
"""

from __future__ import annotations

import ipaddress

# The comment the firewall role puts on every ufw rule it adds: its mark of ownership.
OWNER = "qqrelay"


def invalid_ports(ports: list) -> list:
    """The entries that are not a TCP/UDP port number (1 to 65535)."""
    bad = []
    for port in ports:
        try:
            valid = 1 <= int(str(port)) <= 65535
        except ValueError:
            valid = False
        if not valid:
            bad.append(port)
    return bad


def _ufw_source(entry: str) -> str:
    """A network as ufw writes it in its rule files: a single host without its prefix."""
    network = ipaddress.ip_network(str(entry), strict=False)
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def ufw_owned_rules(rule_files: list) -> list:
    """The inbound allow rules marked as this toolkit's in ufw's user rule files.

    ``rule_files`` are the texts of /etc/ufw/user.rules and user6.rules; ufw keeps each
    rule as a line ``### tuple ### allow tcp 25 0.0.0.0/0 any 192.0.2.7 in comment=<hex>``.
    """
    owned = []
    for text in rule_files:
        for line in str(text).splitlines():
            if not line.startswith("### tuple ### "):
                continue
            fields = line.split()[3:]
            comment = next((f.split("=", 1)[1] for f in fields if f.startswith("comment=")), "")
            try:
                mine = bytes.fromhex(comment).decode() == OWNER
            except ValueError:
                mine = False
            if mine and len(fields) >= 7 and fields[0] == "allow" and fields[6] == "in":
                owned.append({"proto": fields[1], "port": fields[2], "from_ip": fields[5]})
    return owned


def ufw_stale_rules(rule_files: list, inbound: list) -> list:
    """The owned rules that ``inbound`` (list of {port, proto, sources}) no longer declares."""
    wanted = {(str(rule.get("proto", "tcp")), str(rule["port"]), _ufw_source(source))
              for rule in inbound for source in rule["sources"]}
    return [rule for rule in ufw_owned_rules(rule_files)
            if (rule["proto"], rule["port"], _ufw_source(rule["from_ip"])) not in wanted]


def ufw_missing_rules(rule_files: list, inbound: list) -> list:
    """The rules of ``inbound`` that ufw does not have as this toolkit's yet, one per source."""
    owned = {(rule["proto"], rule["port"], _ufw_source(rule["from_ip"]))
             for rule in ufw_owned_rules(rule_files)}
    missing = []
    for rule in inbound:
        proto = str(rule.get("proto", "tcp"))
        for source in rule["sources"]:
            if (proto, str(rule["port"]), _ufw_source(source)) not in owned:
                missing.append({"port": str(rule["port"]), "proto": proto, "from_ip": source})
    return missing


class FilterModule:
    def filters(self) -> dict:
        return {
            "invalid_ports": invalid_ports,
            "ufw_stale_rules": ufw_stale_rules,
            "ufw_missing_rules": ufw_missing_rules,
        }
