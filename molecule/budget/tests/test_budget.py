"""Daily budgets: an account that has used its budget keeps its mail queued, not bounced,
until the budget renews; the other accounts keep sending."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from qqrelay.testing import (
    assert_left_as,
    log_lines,
    postfix_queue,
    relay_mail,
    run_playbook,
    wait_until,
)

RELAY_IP = "172.30.105.2"
CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"
TEST_MAIL = Path(__file__).resolve().parents[3] / "playbooks" / "send-test-mail.yml"
TEAM_SENDER = "build@team.internal.test"  # a sender of the second account (molecule.yml)
BUDGET = 5  # the main account's postfix_relay_daily_budget (molecule.yml)
PACE = 3  # seconds between two deliveries of one account: 3600 / 1200 an hour
BEIJING = timezone(timedelta(hours=8))
# qqrelay-budget's lines in the Postfix log.
HOLD, RESUME = "has used its daily budget", "sending resumes"


def renew_now() -> str:
    """Move the renewal to this second (Beijing time) with the role, as a user would: a
    new budget day starts, whatever the clock says. The renewal time set."""
    renewal = datetime.now(BEIJING).strftime("%H:%M:%S")
    result = run_playbook(CONVERGE, "relays", {"postfix_relay_budget_renewal": renewal})
    assert result.returncode == 0, result.stdout[-3000:]
    return renewal


def arrived(upstream, tokens: list[str]) -> list[str]:
    """The tokens of ``tokens`` that reached the fake upstream."""
    seen = {(m.get("subject") or "").split()[-1] for m in upstream.events("message")}
    return [token for token in tokens if token in seen]


def held(relay) -> list[str]:
    """Queue IDs of the messages held by a budget (deferred transport)."""
    return [m["queue_id"] for m in postfix_queue(relay)
            if all(r.get("delay_reason") == "deferred transport" for r in m["recipients"])]


def assert_stops_at(relay, upstream, tokens: list[str], count: int, waiting: int) -> None:
    """``count`` of ``tokens`` arrive, no more after three further paces, and ``waiting``
    messages stay held in the queue."""
    wait_until(lambda: len(arrived(upstream, tokens)) >= count, 60 + count * PACE,
               f"{count} messages upstream")
    time.sleep(3 * PACE)
    assert len(arrived(upstream, tokens)) == count
    assert len(held(relay)) == waiting, postfix_queue(relay)


def status(relay) -> dict:
    """qqrelay-budget status --json."""
    return json.loads(relay.check_output("qqrelay-budget status --json"))


def test_an_account_over_its_budget_waits_for_the_renewal(relay, client, normal_upstream,
                                                          settings) -> None:
    account, second = settings["qqrelay_test_account"], settings["qqrelay_test_second_account"]
    relay.check_output("postsuper -d ALL")  # leftovers of an earlier run would use the budget
    # A budget day that ends during the test would release the mail early: then a new
    # day starts now.
    day = status(relay)
    renewal = "00:00"  # the role's default, which molecule.yml keeps
    if day["renews_in_seconds"] < 600 or day["accounts"][0]["sent_today"]:
        renewal = renew_now()
    holds, resumes = len(log_lines(relay, HOLD)), len(log_lines(relay, RESUME))
    main = relay_mail(client, RELAY_IP, count=12)["tokens"]
    team = relay_mail(client, RELAY_IP, sender=TEAM_SENDER, count=4)["tokens"]

    # The day's 5 leave; the other 7 stay queued. The second account sends meanwhile.
    for message in normal_upstream.wait_for_all(team, timeout=60):
        assert_left_as(message, second)
    assert_stops_at(relay, normal_upstream, main, BUDGET, waiting=12 - BUDGET)
    [line] = log_lines(relay, HOLD)[holds:]  # one line says so, and until when
    assert f"{account} {HOLD}" in line
    assert "held until" in line
    report = {entry["account"]: entry for entry in status(relay)["accounts"]}
    assert report[account]["sent_today"] == BUDGET
    assert report[account]["held"]
    assert report[second]["sent_today"] == 4
    assert not report[second]["held"]

    # Re-applying the role changes nothing and the mail stays held.
    rerun = run_playbook(CONVERGE, "relays", {"postfix_relay_budget_renewal": renewal})
    assert rerun.returncode == 0
    assert "changed=0" in rerun.stdout, rerun.stdout[-3000:]
    assert len(held(relay)) == 12 - BUDGET

    # The next day: 5 more leave and the budget holds the last 2 again; the day after, they
    # leave too. Every message arrives exactly once, and none bounced.
    renew_now()
    assert_stops_at(relay, normal_upstream, main, 2 * BUDGET, waiting=12 - 2 * BUDGET)
    renew_now()
    normal_upstream.wait_for_all(main, timeout=60)
    assert postfix_queue(relay) == []
    for token in main:
        [message] = normal_upstream.messages(token)
        assert_left_as(message, account)
    assert not log_lines(relay, "status=bounced")
    assert len(log_lines(relay, HOLD)) == holds + 2
    assert len(log_lines(relay, RESUME)) == resumes + 2

    # The test-mail report shows the day's count: the last 2, and the test message.
    report = run_playbook(TEST_MAIL, "relays", {})
    assert report.returncode == 0, report.stdout[-3000:]
    assert f"{account}: 3 of {BUDGET} sent today" in report.stdout
    assert f"{second}: 0 sent today, no budget" in report.stdout  # its 4: an earlier day
