"""qqrelay-budget (roles/postfix_relay/files/qqrelay_budget.py): the budget day, the count
of deliveries from Postfix's log, and what it changes in Postfix to hold or release."""

from __future__ import annotations

import importlib.util
import json
import os
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

    def __init__(self, monkeypatch, sent: int, deferred: str, tmp_path: Path) -> None:
        self.settings = {"defer_transports": deferred, "maillog_file": ""}
        self.queue = ""  # postqueue -j
        self.commands: list[list[str]] = []
        self.running = True
        self.reload_fails = False
        self.master = "100:5000"
        now = datetime.now(UTC).timestamp()
        self.log = [f"{now - 1:.6f} relay {SENT}"] * sent
        monkeypatch.setattr(counter, "log_lines", lambda since, transports: self.log)
        monkeypatch.setattr(counter.subprocess, "run", self.run)
        monkeypatch.setattr(counter.time, "sleep", lambda seconds: None)
        monkeypatch.setattr(counter, "STATE", str(tmp_path / "state.json"))
        self.table = tmp_path / "budget_holds"
        self.table.write_text("")  # as the role creates it
        monkeypatch.setattr(counter, "HOLDS", str(self.table))
        monkeypatch.setattr(counter, "master_identity",
                            lambda: self.master if self.running else "")

    def run(self, command, **_):
        self.commands.append(command)
        stdout, code = "", 0
        if command[:2] == ["postconf", "-h"]:
            stdout = self.settings[command[2]]
        elif command[:2] == ["postconf", "-e"]:
            name, value = command[2].split(" = ")
            self.settings[name] = value
        elif command == ["postqueue", "-j"]:
            stdout = self.queue
        elif command == ["postfix", "status"]:
            code = 0 if self.running else 1
        elif command == ["postfix", "reload"]:
            code = 1 if self.reload_fails or not self.running else 0
        return subprocess.CompletedProcess(command, code, stdout=stdout, stderr="")

    def held(self) -> list[str]:
        """The accounts the holds table sends to the retry transport."""
        return [line.split(" is held")[0].rsplit(" ", 1)[-1]
                for line in self.table.read_text().splitlines() if " retry:4.7.1 " in line]

    def ran(self, program: str) -> list[list[str]]:
        return [c for c in self.commands if c[0] == program]

    def notices(self, text: str = "") -> list[str]:
        """What the program logged, but the status lines."""
        return [c[-1] for c in self.ran("postlog")
                if not c[-1].startswith("budget ") and text in c[-1]]

    def status(self) -> list[str]:
        return [c[-1] for c in self.ran("postlog") if c[-1].startswith("budget ")]


@pytest.fixture
def fake(monkeypatch, tmp_path):
    return lambda sent, deferred: FakePostfix(monkeypatch, sent, deferred, tmp_path)


def test_an_account_that_used_its_budget_is_held_and_other_holds_stay(fake) -> None:
    postfix = fake(sent=2, deferred="smtp")  # the operator's own hold
    assert counter.enforce(CONFIG, datetime.now(UTC))
    assert postfix.held() == ["relay@qq.com"]
    assert postfix.settings["defer_transports"] == "smtp"
    assert not postfix.ran("postconf")[1:]  # read, never written
    [notice] = postfix.notices()
    assert "relay@qq.com has used its daily budget (2 of 2" in notice
    assert "held until" in notice
    assert ["postfix", "reload"] in postfix.commands
    assert postfix.status() == [
        "budget account=relay@qq.com sent_today=2 relay_budget=2 fleet_budget=2 held=1",
        "budget account=team@qq.com sent_today=0 relay_budget=0 fleet_budget=0 held=0",
        "budget relay enforced=1 held_messages=0"]
    assert not [c for c in postfix.ran("postqueue") if c != ["postqueue", "-j"]]


def test_each_relay_holds_at_its_share_of_the_fleets_budget(fake) -> None:
    postfix = fake(sent=3, deferred="")
    config = {**CONFIG, "accounts": [{**CONFIG["accounts"][0], "daily_budget": 6,
                                      "relay_budget": 3}, CONFIG["accounts"][1]]}
    counter.enforce(config, datetime.now(UTC))
    assert postfix.held() == ["relay@qq.com"]
    assert "(3 of 3 sent by this relay since" in postfix.notices("has used")[0]
    assert "its share of 6" in postfix.notices("has used")[0]


HELD = "4.7.1 daily budget used: relay@qq.com is held on this relay until 2026-11-29"


def queued(queue_id: str, sender: str, reason: str = HELD) -> str:
    return json.dumps({"queue_id": queue_id, "sender": sender,
                       "recipients": [{"address": "a@example.net", "delay_reason": reason}]})


def test_a_renewed_account_is_released_and_only_its_mail_scheduled(fake) -> None:
    config = {**CONFIG, "accounts": [CONFIG["accounts"][0],
                                     {**CONFIG["accounts"][1], "daily_budget": 1}]}
    postfix = fake(sent=0, deferred="account0 account1")  # as versions before the table held
    postfix.log = [f"{datetime.now(UTC).timestamp() - 1:.6f} relay "
                   f"{SENT.replace('account0', 'account1')}"]  # account1 stays held
    postfix.queue = "\n".join([
        queued("A1", "relay@qq.com"),
        queued("A2", "double-bounce@relay.test", "deferred transport"),  # held before 1.2
        queued("B1", "Team@qq.com"), queued("A3", "relay@qq.com", reason="connect timeout")])
    counter.enforce(config, datetime.now(UTC))
    assert postfix.settings["defer_transports"] == ""
    assert postfix.held() == ["team@qq.com"]
    assert postfix.notices("relay@qq.com: daily budget renewed")
    # Not a flush, which would send account1's held mail too.
    assert [c for c in postfix.ran("postqueue") if c != ["postqueue", "-j"]] == [
        ["postqueue", "-i", "A1"], ["postqueue", "-i", "A2"]]
    assert postfix.status()[-1] == "budget relay enforced=1 held_messages=1"


@pytest.mark.parametrize(("sent", "deferred"), [(1, ""), (2, "account0"), (5, "account0")])
def test_a_second_run_changes_nothing_when_the_holds_are_right(fake, sent, deferred) -> None:
    postfix = fake(sent=sent, deferred=deferred)
    counter.enforce(CONFIG, datetime.now(UTC))
    postfix.commands.clear()
    assert counter.enforce(CONFIG, datetime.now(UTC))
    assert [c for c in postfix.commands
            if c[:2] != ["postconf", "-h"] and c != ["postqueue", "-j"]] == []


def test_the_status_lines_are_said_again_after_a_while(fake) -> None:
    postfix = fake(sent=1, deferred="")
    # Noon of QQ's day (UTC+8), far from the renewal: the day does not change meanwhile.
    now = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
    postfix.log = [f"{now.timestamp() - 1:.6f} relay {SENT}"]
    counter.enforce(CONFIG, now)
    counter.enforce(CONFIG, now + timedelta(seconds=counter.STATUS_EVERY - 1))
    assert len(postfix.status()) == 3  # unchanged: not repeated
    counter.enforce(CONFIG, now + timedelta(seconds=counter.STATUS_EVERY))
    assert len(postfix.status()) == 6  # mtail restarted meanwhile gets them back


def test_without_budgets_the_log_is_read_once_a_minute(fake) -> None:
    postfix = fake(sent=3, deferred="")
    config = {**CONFIG, "accounts": [{**a, "daily_budget": None} for a in CONFIG["accounts"]]}
    now = datetime.now(UTC)
    counter.enforce(config, now)
    assert postfix.status()[0].startswith("budget account=relay@qq.com sent_today=3 ")
    assert ["postfix", "reload"] not in postfix.commands
    postfix.log = None  # not read again within the minute
    postfix.commands.clear()
    counter.enforce(config, now + timedelta(seconds=30))
    assert postfix.commands == [["postconf", "-h", "defer_transports"]]


def test_a_budget_removed_while_held_releases_the_account(fake) -> None:
    postfix = fake(sent=3, deferred="")
    counter.enforce(CONFIG, datetime.now(UTC))
    assert postfix.held() == ["relay@qq.com"]
    config = {**CONFIG, "accounts": [{**a, "daily_budget": None} for a in CONFIG["accounts"]]}
    counter.enforce(config, datetime.now(UTC))
    assert postfix.table.read_text() == ""
    assert postfix.notices("relay@qq.com: daily budget renewed")


def test_a_removed_accounts_hold_goes_with_it(fake) -> None:
    postfix = fake(sent=0, deferred="smtp account7")
    counter.enforce(CONFIG, datetime.now(UTC))
    assert postfix.settings["defer_transports"] == "smtp"
    assert ["postfix", "reload"] in postfix.commands


def test_a_hold_postfix_cannot_take_is_said_and_retried_until_it_runs(fake) -> None:
    postfix = fake(sent=2, deferred="")
    postfix.running = False
    assert not counter.enforce(CONFIG, datetime.now(UTC))
    assert postfix.held() == ["relay@qq.com"]  # read when Postfix starts
    [failure] = postfix.notices("cannot hold or release")
    assert "Postfix is not running" in failure
    assert postfix.status()[-1] == "budget relay enforced=0 held_messages=0"
    # Still stopped: said once, not every minute; then Postfix runs, with a reload failing.
    assert not counter.enforce(CONFIG, datetime.now(UTC))
    assert len(postfix.notices("cannot hold")) == 1
    postfix.running, postfix.reload_fails = True, True
    assert not counter.enforce(CONFIG, datetime.now(UTC))
    assert "postfix reload failed" in postfix.notices("cannot hold")[-1]
    postfix.reload_fails = False
    assert counter.enforce(CONFIG, datetime.now(UTC))
    assert postfix.notices("holds applied to the running Postfix")
    assert postfix.status()[-1] == "budget relay enforced=1 held_messages=0"


def test_a_restarted_postfix_gets_the_holds_checked_again(fake) -> None:
    postfix = fake(sent=2, deferred="")
    counter.enforce(CONFIG, datetime.now(UTC))
    postfix.commands.clear()
    postfix.master = "200:9000"  # restarted (it read main.cf): one reload, to be sure
    counter.enforce(CONFIG, datetime.now(UTC))
    assert postfix.ran("postfix") == [["postfix", "status"], ["postfix", "reload"]]


def test_the_days_count_never_goes_down_within_the_day(fake) -> None:
    postfix = fake(sent=2, deferred="")
    counter.enforce(CONFIG, datetime.now(UTC))
    postfix.log = []  # the log is gone: the kept count holds the account
    report = counter.usage(CONFIG, datetime.now(UTC), counter.load_state(counter.STATE))
    assert [(a["sent_today"], a["held"]) for a in report["accounts"]] == [(2, True), (0, False)]
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    report = counter.usage(CONFIG, tomorrow, counter.load_state(counter.STATE))
    assert report["accounts"][0]["sent_today"] == 0


def test_every_rotation_written_since_the_renewal_is_read(tmp_path) -> None:
    log = tmp_path / "postfix.log"
    since = time.time() - 3600
    files = {"postfix.log": since + 50, "postfix.log-20261129-1795900000": since + 40,
             "postfix.log-20261129-1795800000.gz": since + 20, "postfix.log.1": since + 10,
             "postfix.log-20261128-1795700000.gz": since - 10, "postfix.logger": since + 5,
             "other.log": since + 60}
    for name, mtime in files.items():
        (tmp_path / name).write_text("")
        os.utime(tmp_path / name, (mtime, mtime))
    assert [Path(name).name for name in counter.log_files(str(log), since)] == [
        "postfix.log.1", "postfix.log-20261129-1795800000.gz",
        "postfix.log-20261129-1795900000", "postfix.log"]


def test_status_counts_without_budgets_too(fake) -> None:
    fake(sent=3, deferred="")
    config = {**CONFIG, "accounts": [{**a, "daily_budget": None} for a in CONFIG["accounts"]]}
    report = counter.usage(config, datetime.now(UTC))
    assert [(a["sent_today"], a["held"]) for a in report["accounts"]] == [(3, False), (0, False)]


def test_the_holds_table_takes_the_main_accounts_other_senders_too() -> None:
    accounts = [{"account": "relay@qq.com", "transport": "account0"},
                {"account": "team.ops+1@qq.com", "transport": "account1"}]
    table = counter.holds_table(accounts, accounts, "2026-11-29 00:00:00 UTC+08:00")
    assert table.splitlines()[1:] == [
        r"if !/^(team\.ops\+1@qq\.com)$/",
        "/^/ retry:4.7.1 daily budget used: relay@qq.com is held on this relay until "
        "2026-11-29 00:00:00 UTC+08:00",
        "endif",
        r"/^team\.ops\+1@qq\.com$/ retry:4.7.1 daily budget used: team.ops+1@qq.com is held "
        "on this relay until 2026-11-29 00:00:00 UTC+08:00"]
    assert counter.holds_table(accounts, accounts[1:], "x").splitlines()[1].startswith(
        r"/^team\.ops\+1@qq\.com$/ retry:")
    assert counter.holds_table(accounts, [], "x") == ""


def test_a_hold_stays_in_the_table_whatever_rewrites_main_cf(fake) -> None:
    """main.cf carries no hold: a run of the role that writes it and reloads takes none
    away, and the program has nothing to redo."""
    postfix = fake(sent=2, deferred="")
    counter.enforce(CONFIG, datetime.now(UTC))
    postfix.settings["defer_transports"] = ""  # main.cf rendered anew
    postfix.commands.clear()
    assert counter.enforce(CONFIG, datetime.now(UTC))
    assert postfix.held() == ["relay@qq.com"]
    assert ["postfix", "reload"] not in postfix.commands
