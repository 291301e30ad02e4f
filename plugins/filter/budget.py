"""Sending budgets per account: each account's hourly rate, pace and daily budget.

The main account (postfix_relay_account) is account0; the Nth entry of
postfix_relay_sender_accounts is account<N+1>. An entry without `hourly_rate` or
`daily_budget` takes the main account's (postfix_relay_hourly_rate,
postfix_relay_daily_budget).

The rates and budgets are the account's limits for the fleet: the relays of
postfix_relay_fleet_group, all together. Each relay takes a fixed share of them, its
weight (postfix_relay_fleet_weight, 1 by default) over the sum of the fleet's weights:
its pace is the share of the hourly rate, and its daily budget the share of the daily
budget, in whole messages that add up to the fleet's budget (largest remainders first,
ties to the relay listed first). So the relays never need each other to stay within
the limits, and together they never exceed them.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

SECONDS_AN_HOUR = 3600  # Postfix paces in whole seconds: at most one delivery a second
TIME_OF_DAY = re.compile(r"([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?")
UTC_OFFSET = re.compile(r"([+-])(0\d|1[0-4]):([0-5]\d)")


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _variable(sender_accounts: list, index: int, key: str) -> str:
    """The variable that sets ``key`` of account<index>."""
    if index and key in sender_accounts[index - 1]:
        return f"postfix_relay_sender_accounts[{index - 1}].{key}"
    return f"postfix_relay_{key}"


def fleet_shares(total: int, weights: list) -> list:
    """``total`` split into whole parts in proportion to ``weights``, adding up to
    ``total``: each part rounded down, then the rest one by one to the largest
    remainders (ties: the first listed)."""
    whole = sum(weights)
    exact = [Fraction(total * weight, whole) for weight in weights]
    parts = [math.floor(share) for share in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for index in by_remainder[:total - sum(parts)]:
        parts[index] += 1
    return parts


def _fleet(fleet: object) -> tuple[list, int]:
    """The weights of the fleet's relays and this relay's place among them."""
    if isinstance(fleet, dict) and fleet.get("weights"):
        return list(fleet["weights"]), int(fleet.get("index", 0))
    return [1], 0


def account_budgets(sender_accounts: list, account: str, hourly_rate: object,
                    daily_budget: object, fleet: object = None) -> list:
    """One entry per account: address, transport, the fleet's hourly rate and daily budget
    (or None), and this relay's share of them: its pace (whole seconds between two
    deliveries) and its daily budget. ``fleet``: {weights: [...], index: N}."""
    weights, index = _fleet(fleet)
    share = Fraction(weights[index], sum(weights)) if _valid_weights(weights) else Fraction(1)
    budgets = []
    for number, entry in enumerate([{"account": account}, *sender_accounts]):
        rate = entry.get("hourly_rate", hourly_rate)
        budget = entry.get("daily_budget", daily_budget)
        paced = _is_whole(rate) and rate > 0
        budgets.append({
            "account": entry.get("account"),
            "transport": f"account{number}",
            "hourly_rate": rate,
            "daily_budget": budget,
            "rate_delay": math.ceil(SECONDS_AN_HOUR / (rate * share)) if paced else 0,
            "relay_budget": (fleet_shares(budget, weights)[index]
                             if _is_whole(budget) and budget > 0 and _valid_weights(weights)
                             else None),
            "fleet_share": f"{share.numerator}/{share.denominator}",
        })
    return budgets


def _valid_weights(weights: list) -> bool:
    return all(_is_whole(weight) and weight >= 1 for weight in weights)


def invalid_budgets(sender_accounts: list, account: str, hourly_rate: object,
                    daily_budget: object, fleet: object = None) -> list:
    """``variable (value)`` for each hourly rate and daily budget that this relay cannot
    take a share of, naming the variable that sets it: a rate must be a whole number
    whose share is 1 to 3600 an hour (Postfix paces in whole seconds), a budget null or
    a whole number whose share is at least 1."""
    weights, index = _fleet(fleet)
    if not _valid_weights(weights):
        return [f"postfix_relay_fleet_weight ({weights[index]!r})"]
    share = Fraction(weights[index], sum(weights))
    bad = []
    for number, entry in enumerate(account_budgets(sender_accounts, account, hourly_rate,
                                                   daily_budget, fleet)):
        rate, budget = entry["hourly_rate"], entry["daily_budget"]
        if not (_is_whole(rate) and 1 <= rate * share <= SECONDS_AN_HOUR):
            bad.append(f"{_variable(sender_accounts, number, 'hourly_rate')} ({rate!r})")
        if budget is not None and not (_is_whole(budget) and budget >= 1
                                       and entry["relay_budget"]):
            bad.append(f"{_variable(sender_accounts, number, 'daily_budget')} ({budget!r})")
    return list(dict.fromkeys(bad))  # a main-account value shared by many entries: once


def postfix_seconds(value: object) -> int | None:
    """A Postfix time (5d, 36h, 90m, 600s, 2w; a bare number is days) in seconds."""
    match = re.fullmatch(r"([0-9]+)([smhdw]?)", str(value))
    if not match:
        return None
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "": 86400}[match.group(2)]
    return int(match.group(1)) * unit


def utc_time_of_day(renewal: object, offset: object) -> str:
    """``renewal`` (HH:MM or HH:MM:SS at UTC ``offset``, like +08:00) as HH:MM:SS in UTC;
    empty when either is malformed."""
    time_match = TIME_OF_DAY.fullmatch(str(renewal))
    offset_match = UTC_OFFSET.fullmatch(str(offset))
    if not (time_match and offset_match):
        return ""
    hours, minutes, seconds = (int(part or 0) for part in time_match.groups())
    sign, offset_hours, offset_minutes = offset_match.groups()
    shift = (int(offset_hours) * 60 + int(offset_minutes)) * 60 * (1 if sign == "+" else -1)
    utc = (hours * 3600 + minutes * 60 + seconds - shift) % 86400
    return f"{utc // 3600:02d}:{utc % 3600 // 60:02d}:{utc % 60:02d}"


class FilterModule:
    def filters(self) -> dict:
        return {"account_budgets": account_budgets,
                "postfix_seconds": postfix_seconds,
                "invalid_budgets": invalid_budgets,
                "utc_time_of_day": utc_time_of_day}
