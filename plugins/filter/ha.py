"""Filters of the keepalived cluster (relay_ha role and the firewall's VRRP rule).

One implementation of "who are the peers": the hosts of the relay group, in inventory
order, each with the address it speaks VRRP from and its priority.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from typing import Any

# Priorities from inventory order: the first relay 200, the next 190… (VRRP allows 1-254).
FIRST_PRIORITY = 200
PRIORITY_STEP = 10


def ha_peers(hosts: list, hostvars: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The relays of ``hosts`` (a group, in inventory order) as {host, address, priority}.

    The address is the host's ``relay_ha_address``, else its ``ansible_host``, else its
    name; the priority its ``relay_ha_priority``, else one derived from its position.
    Inventory variables only: the peers of a rolling run have no facts.
    """
    peers = []
    for position, host in enumerate(hosts):
        variables = hostvars[host]
        address = (variables.get("relay_ha_address") or variables.get("ansible_host")
                   or host)
        priority = (variables.get("relay_ha_priority")
                    or FIRST_PRIORITY - PRIORITY_STEP * position)
        peers.append({"host": host, "address": str(address), "priority": int(priority)})
    return peers


def ha_peer_problems(peers: list[dict[str, Any]]) -> list[str]:
    """What is wrong with ``peers``, one sentence each (empty when nothing is)."""
    problems = []
    for peer in peers:
        try:
            ipaddress.IPv4Address(peer["address"])
        except ValueError:
            problems.append(
                f"{peer['host']}: its VRRP address {peer['address']!r} is not an IPv4 address;"
                " set relay_ha_address in its host_vars (or ansible_host to an address)")
        if not 1 <= peer["priority"] <= 254:
            problems.append(f"{peer['host']}: relay_ha_priority {peer['priority']} is not"
                            " within 1-254")
    for key, what in (("address", "VRRP address"), ("priority", "priority")):
        values = [peer[key] for peer in peers]
        for value in sorted({v for v in values if values.count(v) > 1}, key=str):
            holders = ", ".join(p["host"] for p in peers if p[key] == value)
            problems.append(f"{holders} share the {what} {value}; each relay needs its own"
                            f" (relay_ha_{'address' if key == 'address' else 'priority'})")
    return problems


def ip_interface_problem(value: str, version: int) -> str:
    """Why ``value`` is not an IPv``version`` address with a prefix length ('' if it is)."""
    try:
        interface = ipaddress.ip_interface(str(value))
    except ValueError:
        return f"{value!r} is not an address with a prefix length"
    if "/" not in str(value):
        return f"{value!r} has no prefix length (write it as address/prefix, e.g. /24)"
    if interface.version != version:
        return f"{value!r} is not an IPv{version} address"
    if interface.ip in (interface.network.network_address,
                        interface.network.broadcast_address) and interface.network.prefixlen < 31:
        return f"{value!r} is its network's own or broadcast address"
    return ""


def ha_off_network(vip: str, addresses: list) -> list[str]:
    """The IPv4 ``addresses`` outside the network of ``vip`` (none for a /32 or a bad vip)."""
    try:
        network = ipaddress.IPv4Interface(str(vip)).network
    except ValueError:
        return []
    outside = []
    for address in addresses:
        try:
            inside = network.prefixlen == 32 or ipaddress.IPv4Address(str(address)) in network
        except ValueError:
            continue  # ha_peer_problems names it
        if not inside:
            outside.append(str(address))
    return outside


def ha_peer_report(probes: list, state_file: str) -> list[dict[str, Any]]:
    """Each peer probed before a handover (qqrelay_probe results of a loop over the peers):
    {host, ready, says}. Ready: reachable, keepalived active, and healthy in VRRP (its
    notify script last wrote BACKUP or MASTER to ``state_file``)."""
    report = []
    for probe in probes:
        host = (probe.get("item") or {}).get("host", "?")
        if probe.get("unreachable"):
            says = "unreachable"
        elif "commands" not in probe:  # a dead container, a host that does not answer
            first = (str(probe.get("msg") or "no answer").splitlines() or [""])[0]
            says = f"unreachable ({first[:100]})"
        elif probe["commands"]["keepalived"]["stdout"] != "active":
            says = f"keepalived {probe['commands']['keepalived']['stdout'] or 'not running'}"
        else:
            state = ((probe.get("contents") or {}).get(state_file) or "").split()
            says = f"keepalived {state[0] if state else 'without a state yet'}"
        report.append({"host": host, "ready": says in ("keepalived BACKUP", "keepalived MASTER"),
                       "says": f"{host}: {says}"})
    return report


def ha_unlisting_peers(probes: list, config_file: str, address: str) -> list[str]:
    """The peers (qqrelay_probe results of a loop over them) whose keepalived runs with a
    configuration that does not list ``address`` among its unicast peers: they would not
    hear a relay of that address, nor it them."""
    unlisting = []
    for probe in probes:
        if probe.get("skipped") or "commands" not in probe:
            continue  # not probed (same batch), or dead: not running
        if probe["commands"]["keepalived"]["stdout"] != "active":
            continue
        config = (probe.get("contents") or {}).get(config_file) or ""
        listed = [peer for block in re.findall(r"unicast_peer\s*\{([^}]*)\}", config)
                  for peer in block.split()]
        if address not in listed:
            unlisting.append((probe.get("item") or {}).get("host", "?"))
    return unlisting


def run_fingerprint(hosts: list, hostvars: Mapping[str, Any], prefixes: list,
                    root: str, trees: list, platform: object = None) -> str:
    """SHA-256 of what a site.yml run on a relay reads: the variables of ``hosts`` (this
    relay and the peers whose settings its files name) whose names start with one of
    ``prefixes``, plus their ``ansible_host``; the order in which ``hosts`` first name
    them (the inventory's order sets keepalived's priorities and the budget shares);
    every file of the toolkit under ``root``/``trees`` (roles, plugins and playbooks,
    whose links.yml says what each role reads); and ``platform`` (the relay's release).
    Equal fingerprints mean the run renders what the last complete run rendered. A value
    that cannot be read (an undefined variable) counts by its error's name, so it still
    compares equal to itself."""
    digest = hashlib.sha256()
    inputs: dict[str, Any] = {"": platform, "order": list(dict.fromkeys(hosts))}
    for host in sorted(set(hosts)):
        variables = hostvars[host]
        chosen: dict[str, Any] = {}
        for name in sorted(variables.keys()):
            if name.startswith(tuple(prefixes)) or name == "ansible_host":
                try:
                    chosen[name] = variables[name]
                except Exception as error:  # any failure is a value too
                    chosen[name] = f"<{type(error).__name__}>"
        inputs[host] = chosen
    digest.update(json.dumps(inputs, sort_keys=True, default=str).encode("utf-8"))
    paths = sorted(os.path.join(folder, name)
                   for tree in trees for folder, _, files in os.walk(os.path.join(root, tree))
                   if "__pycache__" not in folder for name in files)
    for path in paths:
        digest.update(os.path.relpath(path, root).encode("utf-8") + b"\0")
        with open(path, "rb") as source:
            digest.update(hashlib.sha256(source.read()).digest())
    return digest.hexdigest()


class FilterModule:
    def filters(self) -> dict:
        return {
            "ha_peers": ha_peers,
            "ha_peer_problems": ha_peer_problems,
            "ip_interface_problem": ip_interface_problem,
            "ha_off_network": ha_off_network,
            "ha_peer_report": ha_peer_report,
            "run_fingerprint": run_fingerprint,
            "ha_unlisting_peers": ha_unlisting_peers,
        }
