"""Checks of inventory entries that Jinja tests cannot express in one expression: each
returns what is wrong, named as the variable the user sets (empty when all is right)."""

from __future__ import annotations

import json
import re

ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
SENDER = re.compile(r"([^@\s]+)?@[^@\s]+\.[^@\s]+")  # an address, or a domain as @example.com
SETTING = re.compile(r"[a-z0-9_]+")


def invalid_sender_accounts(entries: list) -> list:
    """``postfix_relay_sender_accounts[N]`` for each entry without a full `account`, an
    `authorization_code` of 8 characters or more without spaces, or `senders` (addresses,
    or domains written @example.com)."""
    bad = []
    for index, entry in enumerate(entries):
        entry = entry if isinstance(entry, dict) else {}
        code = str(entry.get("authorization_code") or "")
        senders = entry.get("senders") or []
        if (not ADDRESS.fullmatch(str(entry.get("account") or "")) or len(code) < 8
                or re.search(r"\s", code) or not isinstance(senders, list) or not senders
                or not all(SENDER.fullmatch(str(sender)) for sender in senders)):
            bad.append(f"postfix_relay_sender_accounts[{index}]")
    return bad


def invalid_settings(settings: dict, variable: str) -> list:
    """``variable.name (got value)`` for each main.cf setting whose name is not a Postfix
    name, or whose value is not text or a number on one line (booleans included: Postfix
    wants "yes" or "no")."""
    bad = []
    for name, value in settings.items():
        scalar = isinstance(value, (str, int, float)) and not isinstance(value, bool)
        if not SETTING.fullmatch(str(name)) or not scalar or re.search(r"[\n\r]", str(value)):
            bad.append(f"{variable}.{name} (got {json.dumps(value)})")
    return bad


SERVICE = re.compile(r"[a-z][a-z0-9-]*")


def invalid_services(services: list) -> list:
    """What is wrong with each ``postfix_relay_services`` entry, named by index (and name):
    a name that is not one (it names the log, postfix/NAME), a name or port given twice, a
    port that is not 1-65535 or is 25 (the relay's smtp service), options that are not
    main.cf settings on one line without spaces (master.cf's -o), booleans included
    (Postfix wants "yes" or "no"), files required by a path that is not absolute."""
    bad: list[str] = []
    names: set[str] = set()
    ports: set[object] = set()
    for index, service in enumerate(services or []):
        service = service if isinstance(service, dict) else {}
        name, port = str(service.get("name") or ""), service.get("port")
        label = f"postfix_relay_services[{index}]" + (f" ({name})" if name else "")
        if not SERVICE.fullmatch(name) or name in names:
            bad.append(f"{label}: name must be its own, of lower-case letters, digits and -.")
        if (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536
                or port == 25 or port in ports):
            bad.append(f"{label}: port must be its own, 1 to 65535 and not 25 (got {port!r}).")
        options = service.get("options") or {}
        variable = f"{label}.options"
        bad += [f"{entry}: a main.cf setting with a text or number value, without spaces "
                "(write booleans as \"yes\" or \"no\" in quotes)."
                for entry in (invalid_settings(options, variable) if isinstance(options, dict)
                              else [variable])]
        bad += [f"{variable}.{key}: its value may not hold spaces (master.cf's -o)."
                for key, value in (options.items() if isinstance(options, dict) else [])
                if not isinstance(value, bool) and re.search(r"\s", str(value))]
        requires = service.get("requires") or []
        if not isinstance(requires, list) or not all(str(p).startswith("/") for p in requires):
            bad.append(f"{label}: requires must list absolute paths (got {requires!r}).")
        names.add(name)
        ports.add(port)
    return bad


def systemd_refusals(results: list) -> list:
    """Messages for the looped ``systemd-analyze calendar|timespan VALUE`` results that
    systemd refused; each item is {name, kind, value}: the variable, what it must be, its value."""
    return [f"{r['item']['name']} ({r['item']['value']}) is not a systemd {r['item']['kind']}:"
            f" {(r.get('stderr') or '').strip()}; see man systemd.time (calendar: daily,"
            ' "Mon..Fri 03:00"; time span: 30min, 2h).'
            for r in results if r.get("rc") != 0]


class FilterModule:
    def filters(self) -> dict:
        return {"invalid_sender_accounts": invalid_sender_accounts,
                "invalid_services": invalid_services,
                "invalid_settings": invalid_settings,
                "systemd_refusals": systemd_refusals}
