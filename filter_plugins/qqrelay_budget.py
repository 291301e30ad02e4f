"""Sending budgets per account: each account's hourly rate, pace and daily budget.

The main account (postfix_relay_account) is account0; the Nth entry of
postfix_relay_sender_accounts is account<N+1>. An entry without `hourly_rate` or
`daily_budget` takes the main account's (postfix_relay_hourly_rate,
postfix_relay_daily_budget).
"""

from __future__ import annotations

import math
import re

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


def account_budgets(sender_accounts: list, account: str, hourly_rate: object,
                    daily_budget: object) -> list:
    """One entry per account: address, transport, hourly rate, daily budget (or None)
    and the pace (whole seconds between two deliveries)."""
    budgets = []
    for index, entry in enumerate([{"account": account}, *sender_accounts]):
        rate = entry.get("hourly_rate", hourly_rate)
        budgets.append({
            "account": entry.get("account"),
            "transport": f"account{index}",
            "hourly_rate": rate,
            "daily_budget": entry.get("daily_budget", daily_budget),
            "rate_delay": math.ceil(SECONDS_AN_HOUR / rate) if _is_whole(rate) and rate > 0 else 0,
        })
    return budgets


def invalid_budgets(sender_accounts: list, account: str, hourly_rate: object,
                    daily_budget: object) -> list:
    """``variable (value)`` for each hourly rate outside 1..3600 and each daily budget that
    is neither null nor a whole number of 1 or more, naming the variable that sets it."""
    bad = []
    for index, entry in enumerate(account_budgets(sender_accounts, account, hourly_rate,
                                                  daily_budget)):
        rate, budget = entry["hourly_rate"], entry["daily_budget"]
        if not (_is_whole(rate) and 1 <= rate <= SECONDS_AN_HOUR):
            bad.append(f"{_variable(sender_accounts, index, 'hourly_rate')} ({rate!r})")
        if budget is not None and not (_is_whole(budget) and budget >= 1):
            bad.append(f"{_variable(sender_accounts, index, 'daily_budget')} ({budget!r})")
    return list(dict.fromkeys(bad))  # a main-account value shared by many entries: once


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
        return {"qqrelay_account_budgets": account_budgets,
                "qqrelay_invalid_budgets": invalid_budgets,
                "qqrelay_utc_time_of_day": utc_time_of_day}
