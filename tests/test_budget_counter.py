"""qqrelay-budget (roles/postfix_relay/files/qqrelay_budget.py): the budget day, the count
of deliveries from Postfix's log, and what it changes in Postfix to hold or release."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parent.parent / "roles/postfix_relay/files/qqrelay_budget.py"
spec = importlib.util.spec_from_file_location("qqrelay_budget", PATH)
counter = importlib.util.module_from_spec(spec)
spec.loader.exec_module(counter)

UTC = timezone.utc  # noqa: UP017 (as in the program, which runs on Python 3.9 too)
SENT = ("postfix/account0/smtp[812]: 4F2A81C3D2: to=<a@example.net>, relay=smtp.qq.com"
        "[203.205.232.7]:465, delay=0.9, delays=0.02/0.01/0.6/0.2, dsn=2.0.0, status=sent (250 OK)")
CONFIG = {"renewal": "00:00", "utc_offset": "+08:00", "accounts": [
    {"account": "relay@qq.com", "transport": "account0", "hourly_rate": 500, "daily_budget": 2},
    {"account": "team@qq.com", "transport": "account1", "hourly_rate": 500, "daily_budget": None},
]}


@pytest.mark.parametrize(("now", "start"), [
    ("2026-11-27T15:59:59+00:00", "2026-11-26T16:00:00+00:00"),  # 23:59:59 in Beijing
    ("2026-11-27T16:00:00+00:00", "2026-11-27T16:00:00+00:00"),  # midnight in Beijing
    ("2026-11-27T20:00:00+00:00", "2026-11-27T16:00:00+00:00"),
])
def test_the_budget_day_starts_at_the_last_renewal_in_beijing(now: str, start: str) -> None:
    begin, end = counter.budget_day(datetime.fromisoformat(now), "00:00", "+08:00")
    assert begin == datetime.fromisoformat(start)
    assert end - begin == timedelta(days=1)


def test_a_renewal_with_seconds_at_another_offset() -> None:
    begin, _ = counter.budget_day(datetime(2026, 11, 27, 12, 0, tzinfo=UTC), "06:30:15", "-05:00")
    assert begin == datetime(2026, 11, 27, 11, 30, 15, tzinfo=UTC)


def test_each_log_format_gives_the_time_of_the_line() -> None:
    now = datetime(2026, 11, 27, 20, 0, tzinfo=UTC).timestamp()
    stamp = datetime(2026, 11, 27, 19, 20, 48, tzinfo=UTC).timestamp()
    classic = time.strftime("%b %d %H:%M:%S", time.localtime(stamp))  # local time, no year
    assert counter.line_time(f"{classic} relay {SENT}", now) == stamp
    iso = "2026-11-27T19:20:48.123456+00:00"
    assert counter.line_time(f"{iso} relay {SENT}", now) == stamp + 0.123456
    assert counter.line_time(f"2026-11-28T03:20:48+0800 relay {SENT}", now) == stamp
    assert counter.line_time(f"{stamp:.6f} relay {SENT}", now) == stamp
    assert counter.line_time(SENT, now) is None


def test_a_classic_stamp_from_december_read_in_january_is_last_year() -> None:
    now = datetime(2027, 1, 1, 12, 0).timestamp()  # local time
    assert counter.line_time(f"Dec 31 23:00:00 relay {SENT}", now) == \
        datetime(2026, 12, 31, 23, 0).timestamp()


def test_only_deliveries_of_the_accounts_since_the_renewal_count() -> None:
    since = 1795807000
    lines = [f"{since + offset}.000000 relay {line}" for offset, line in [
        (-1, SENT),  # before the renewal
        (0, SENT),
        (1, SENT.replace("to=<a@", "to=<b@")),  # a second recipient
        (2, SENT.replace("account0", "account1")),
        (3, SENT.replace("status=sent (250 OK)", "status=deferred (451 x)")),
        (4, SENT.replace("account0/smtp", "smtp")),  # not an account's transport
        (5, "postfix/qqrelay-budget[9]: relay@qq.com has used its daily budget"),
    ]]
    assert counter.count_sent(lines, since, since + 60) == {"account0": 2, "account1": 1}


class FakePostfix:
    """Stands in for postconf, postfix and postqueue; records what the program runs."""

    def __init__(self, monkeypatch, sent: int, deferred: str) -> None:
        self.settings = {"defer_transports": deferred, "maillog_file": ""}
        self.queue = ""  # postqueue -j
        self.commands: list[list[str]] = []
        now = datetime.now(UTC).timestamp()
        self.log = [f"{now - 1:.6f} relay {SENT}"] * sent
        monkeypatch.setattr(counter, "log_lines", lambda since, transports: self.log)
        monkeypatch.setattr(counter.subprocess, "run", self.run)
        monkeypatch.setattr(counter.time, "sleep", lambda seconds: None)

    def run(self, command, **_):
        self.commands.append(command)
        stdout = ""
        if command[:2] == ["postconf", "-h"]:
            stdout = self.settings[command[2]]
        elif command[:2] == ["postconf", "-e"]:
            name, value = command[2].split(" = ")
            self.settings[name] = value
        elif command == ["postqueue", "-j"]:
            stdout = self.queue
        return subprocess.CompletedProcess(command, 0, stdout=stdout, stderr="")

    def ran(self, program: str) -> list[list[str]]:
        return [c for c in self.commands if c[0] == program]


def test_an_account_that_used_its_budget_is_held_and_other_holds_stay(monkeypatch) -> None:
    postfix = FakePostfix(monkeypatch, sent=2, deferred="smtp")  # the operator's own hold
    counter.enforce(CONFIG, datetime.now(UTC))
    assert postfix.settings["defer_transports"] == "smtp account0"
    [notice] = postfix.ran("postlog")
    assert "relay@qq.com has used its daily budget (2 of 2" in notice[-1]
    assert "held until" in notice[-1]
    assert ["postfix", "reload"] in postfix.commands
    assert not postfix.ran("postqueue")


def queued(queue_id: str, sender: str, reason: str = "deferred transport") -> str:
    return json.dumps({"queue_id": queue_id, "sender": sender,
                       "recipients": [{"address": "a@example.net", "delay_reason": reason}]})


def test_a_renewed_account_is_released_and_only_its_mail_scheduled(monkeypatch) -> None:
    config = {**CONFIG, "accounts": [CONFIG["accounts"][0],
                                     {**CONFIG["accounts"][1], "daily_budget": 1}]}
    postfix = FakePostfix(monkeypatch, sent=0, deferred="account0 account1")
    postfix.log = [f"{datetime.now(UTC).timestamp() - 1:.6f} relay "
                   f"{SENT.replace('account0', 'account1')}"]  # account1 stays held
    postfix.queue = "\n".join([
        queued("A1", "relay@qq.com"), queued("A2", "double-bounce@relay.test"),
        queued("B1", "Team@qq.com"), queued("A3", "relay@qq.com", reason="connect timeout")])
    counter.enforce(config, datetime.now(UTC))
    assert postfix.settings["defer_transports"] == "account1"
    assert "relay@qq.com: daily budget renewed" in postfix.ran("postlog")[0][-1]
    # Not a flush, which would send account1's held mail too.
    assert [c for c in postfix.ran("postqueue") if c != ["postqueue", "-j"]] == [
        ["postqueue", "-i", "A1"], ["postqueue", "-i", "A2"]]


@pytest.mark.parametrize(("sent", "deferred"), [(1, ""), (2, "account0"), (5, "account0")])
def test_nothing_changes_when_the_holds_are_right(monkeypatch, sent, deferred) -> None:
    postfix = FakePostfix(monkeypatch, sent=sent, deferred=deferred)
    counter.enforce(CONFIG, datetime.now(UTC))
    assert [c for c in postfix.commands if c[:2] != ["postconf", "-h"]] == []


def test_without_budgets_enforcing_reads_no_log(monkeypatch) -> None:
    postfix = FakePostfix(monkeypatch, sent=3, deferred="")
    monkeypatch.setattr(counter, "log_lines", lambda *_: pytest.fail("log read"))
    config = {**CONFIG, "accounts": [{**a, "daily_budget": None} for a in CONFIG["accounts"]]}
    counter.enforce(config, datetime.now(UTC))
    assert postfix.commands == [["postconf", "-h", "defer_transports"]]


def test_a_budget_removed_while_held_releases_the_account(monkeypatch) -> None:
    postfix = FakePostfix(monkeypatch, sent=3, deferred="account0")
    config = {**CONFIG, "accounts": [{**a, "daily_budget": None} for a in CONFIG["accounts"]]}
    counter.enforce(config, datetime.now(UTC))
    assert postfix.settings["defer_transports"] == ""


def test_a_removed_accounts_hold_goes_with_it(monkeypatch) -> None:
    postfix = FakePostfix(monkeypatch, sent=0, deferred="smtp account7")
    counter.enforce(CONFIG, datetime.now(UTC))
    assert postfix.settings["defer_transports"] == "smtp"
    assert ["postfix", "reload"] in postfix.commands


def test_status_counts_without_budgets_too(monkeypatch) -> None:
    FakePostfix(monkeypatch, sent=3, deferred="")
    config = {**CONFIG, "accounts": [{**a, "daily_budget": None} for a in CONFIG["accounts"]]}
    report = counter.usage(config, datetime.now(UTC))
    assert [(a["sent_today"], a["held"]) for a in report["accounts"]] == [(3, False), (0, False)]
