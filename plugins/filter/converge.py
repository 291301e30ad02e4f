"""Filters that decide, from one qqrelay_probe of the host, what a run must change
(standard library only). A converged host then costs no module execution but the probe:
each file is written, and each block edited, only where it differs from what the
inventory renders.
"""

from __future__ import annotations

import hashlib
import re


def _checksum(content: object) -> str:
    return hashlib.sha1(str(content).encode("utf-8")).hexdigest()


def files_to_write(files: list, probed: dict, together: bool = False) -> list:
    """The entries of ``files`` ({dest, content, mode, owner, group}) that differ on the host.

    ``probed`` is the ``files`` result of qqrelay_probe: an entry is kept when its file is
    missing, or has other content, mode, owner or group than the entry asks for. With
    ``together``, files that are only written as a set: all of them when one differs.
    """
    differ = []
    for entry in files:
        state = probed.get(entry["dest"]) or {"exists": False}
        wanted = {"checksum": _checksum(entry["content"]),
                  "mode": str(entry.get("mode", "0644")).zfill(4),
                  "owner": entry.get("owner", "root"), "group": entry.get("group", "root")}
        if not state.get("exists") or any(state.get(k) != v for k, v in wanted.items()):
            differ.append(entry)
    return list(files) if together and differ else differ


def metadata_differs(state: dict, mode: str, owner: str, group: str) -> bool:
    """Whether a probed path is missing or has another mode, owner or group."""
    return (not state.get("exists") or state.get("mode") != str(mode).zfill(4)
            or state.get("owner") != owner or state.get("group") != group)


def blocks_to_write(blocks: list, contents: dict, marker: str = "") -> list:
    """The entries of ``blocks`` ({path, block, marker}; ``marker`` for those without one)
    that blockinfile would change in the files' ``contents`` (qqrelay_probe's, by path)."""
    return [entry for entry in blocks
            if block_differs(contents.get(entry["path"]), entry.get("marker", marker),
                             entry["block"])]


def block_differs(text: object, marker: str, block: str) -> bool:
    """Whether blockinfile would change ``text``: the block between the markers
    (``marker`` with {mark} as BEGIN/END) is not exactly ``block``, or, for an empty
    block, the markers are still there."""
    text = "" if text is None else str(text)
    begin, end = marker.replace("{mark}", "BEGIN"), marker.replace("{mark}", "END")
    lines = text.splitlines()
    if not block.strip():
        return begin in lines or end in lines
    if begin not in lines or end not in lines:
        return True
    inside = lines[lines.index(begin) + 1:lines.index(end)]
    return inside != block.rstrip("\n").splitlines()


def debconf_differs(selections: list, shown: object) -> list:
    """The debconf ``selections`` ({question, value, vtype}) that ``debconf-show``'s
    output does not hold with that value."""
    current = {}
    for line in str(shown or "").splitlines():
        name, _, value = line.lstrip("* ").partition(":")
        current[name.strip()] = value.strip()
    return [s for s in selections if current.get(s["question"]) != str(s["value"])]


def postconf_settings(text: object) -> dict:
    """``postconf -n name…`` output (lines ``name = value``) as a dict."""
    settings = {}
    for line in str(text or "").splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            settings[name.strip()] = value
    return settings


def missing_packages(packages: list, probed: dict) -> list:
    """The ``packages`` that the probe's ``packages`` (name to dpkg status) does not show
    as installed."""
    return [name for name in packages if (probed or {}).get(name) != "installed"]


def systemd_units(shown: object) -> dict:
    """``systemctl show -p Id,ActiveState,UnitFileState unit…`` output as
    {unit: {ActiveState, UnitFileState}} (a unit that does not exist is inactive, with
    an empty UnitFileState)."""
    units = {}
    for block in str(shown or "").split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in fields:
            units[fields.pop("Id")] = fields
    return units


def units_to_start(names: list, units: dict) -> list:
    """The ``names`` that are not both running and enabled, as systemd_units read them."""
    def converged(name: str) -> bool:
        unit = units.get(name if "." in name else name + ".service", {})
        return unit.get("ActiveState") == "active" and unit.get("UnitFileState") == "enabled"
    return [name for name in names if not converged(name)]


def postfix_check_problems(lines: list) -> list:
    """The lines of ``postfix check`` output that are warnings or errors: all but Debian
    13's notes of the files it copies into the chroot ("updating /etc/resolv.conf => …")."""
    return [line for line in lines if not re.match(r"updating /\S+ => ", str(line))]


class FilterModule:
    def filters(self) -> dict:
        return {
            "files_to_write": files_to_write,
            "metadata_differs": metadata_differs,
            "blocks_to_write": blocks_to_write,
            "debconf_differs": debconf_differs,
            "postconf_settings": postconf_settings,
            "missing_packages": missing_packages,
            "systemd_units": systemd_units,
            "units_to_start": units_to_start,
            "postfix_check_problems": postfix_check_problems,
        }
