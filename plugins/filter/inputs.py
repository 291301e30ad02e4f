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


class FilterModule:
    def filters(self) -> dict:
        return {"invalid_sender_accounts": invalid_sender_accounts,
                "invalid_settings": invalid_settings}
