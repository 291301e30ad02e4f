"""playbooks/queue.yml after provoking QQ's 535, throttling and an outage: the report
counts each and groups the reasons with their fix; hold and release by reason; delete by
sender removes exactly the matching messages, and only when confirmed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qqrelay.fake_upstream import AUTH_FAILED
from qqrelay.testing import postfix_queue, run_playbook, send_mail, wait_until

PLAYBOOK = Path(__file__).resolve().parents[3] / "playbooks" / "queue.yml"
# The relay sends as the account (senders are rewritten), so each fault's mail is told
# apart by its recipient: the main account's mail meets a refused code; the second
# account's (team, molecule.yml) is throttled, then meets an outage.
MAIN, TEAM = "relay@qq.com", "team@qq.com"
REFUSED, THROTTLED, OUTAGE = ("refused@example.net", "throttled@example.net",
                              "outage@example.net")


def deferred_to(relay: Any, recipient: str, queue_name: str = "deferred") -> list[str]:
    return sorted(m["queue_id"] for m in postfix_queue(relay) if m["queue_name"] == queue_name
                  and [r["address"] for r in m["recipients"]] == [recipient])


def queue(*options: str, **extra_vars: Any) -> dict[str, Any]:
    """The module's result on the relay, and the fleet's lines under ``fleet``."""
    result = run_playbook(PLAYBOOK, "relays", extra_vars, options=options,
                          env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"})
    assert result.returncode == 0, result.stdout[-3000:]
    tasks = json.loads(result.stdout)["plays"][0]["tasks"]
    outcome = next(iter(tasks[0]["hosts"].values()))
    outcome["fleet"] = next(iter(tasks[2]["hosts"].values()))["msg"]
    return outcome


def send(relay: Any, sender: str, to: str, count: int) -> None:
    sent = send_mail(relay, server="127.0.0.1", sender=sender, to=to, count=count)
    assert sent["accepted"], sent


@pytest.fixture(scope="module")
def provoked(relay: Any, upstream: Any) -> Any:
    """Two messages deferred by 535, two throttled, two by the outage; removed after."""
    try:
        upstream.fault("reject-login")
        send(relay, "app@internal.test", REFUSED, 2)
        wait_until(lambda: len(deferred_to(relay, REFUSED)) == 2, 60, "the 535 deferrals")
        upstream.fault("rate-limit", per_minute=1)
        send(relay, "app@team.internal.test", THROTTLED, 3)  # one taken, two throttled
        wait_until(lambda: len(deferred_to(relay, THROTTLED)) == 2, 90, "the throttling")
        upstream.fault("down")
        send(relay, "app@team.internal.test", OUTAGE, 2)
        wait_until(lambda: len(deferred_to(relay, OUTAGE)) == 2, 90, "the outage deferrals")
        yield relay
    finally:
        upstream.fault("normal")
        relay.run("postsuper -d ALL")


def test_the_report_counts_and_groups_the_reasons(provoked: Any) -> None:
    outcome = queue()
    report = outcome["report"]
    assert report["queues"] == {"active": 0, "deferred": 6, "hold": 0, "incoming": 0,
                                "maildrop": 0}
    groups = [(r["reason"], r["count"], r["fix"]) for r in report["reasons"]]
    # The first refusal and its cached repeat are one group; QQ's 550 arrives as 450 (the
    # relay's reply filter), followed by the SMTP command it answered.
    wanted = [(f"SASL authentication failed; server smtp.qq.test said: {AUTH_FAILED}",
               "The upstream refused the login."),
              ("host smtp.qq.test said: 450 4.7.0 Connection frequency limited (in reply to ",
               "QQ is throttling this account"),
              ("connect to smtp.qq.test: Connection refused", "The relay cannot reach")]
    assert len(groups) == len(wanted), groups
    for reason, fix in wanted:
        found = [g for g in groups if g[0].startswith(reason)]
        assert len(found) == 1, (reason, groups)
        assert found[0][1] == 2, found
        assert found[0][2].startswith(fix), found
    assert report["top_senders"] == [[TEAM, 4], [MAIN, 2]]
    assert sorted(report["top_recipients"]) == [[OUTAGE, 2], [REFUSED, 2], [THROTTLED, 2]]
    assert report["oldest"]["id"] in deferred_to(provoked, REFUSED)
    assert outcome["lines"][0] == "6 messages: active 0, deferred 6, hold 0, incoming 0, maildrop 0"
    assert outcome["fleet"][0].startswith("fleet of 1 relays: 6 messages: active 0, deferred 6")


def test_hold_and_release_by_reason(provoked: Any) -> None:
    outage = deferred_to(provoked, OUTAGE)
    outcome = queue(queue_action="hold", queue_reason="Connection refused")
    assert outcome["done"].startswith(f"would hold 2 messages: {' '.join(outage)}")
    queue(queue_action="hold", queue_reason="Connection refused", queue_confirm=True)
    assert deferred_to(provoked, OUTAGE, "hold") == outage
    queue(queue_action="release", queue_ids=outage)
    assert deferred_to(provoked, OUTAGE) == outage


def test_delete_by_sender_needs_confirming_and_takes_only_the_matches(provoked: Any) -> None:
    before = {to: deferred_to(provoked, to) for to in (REFUSED, THROTTLED, OUTAGE)}
    team = sorted(before[THROTTLED] + before[OUTAGE])
    outcome = queue(queue_action="delete", queue_sender="^team@")
    assert outcome["done"] == (f"would delete 4 messages: {' '.join(team)} "
                               "(set queue_confirm: true to do it)")
    assert not outcome["changed"]
    queue("--check", queue_action="delete", queue_sender="^team@", queue_confirm=True)
    assert {to: deferred_to(provoked, to) for to in before} == before  # nothing deleted yet
    outcome = queue(queue_action="delete", queue_sender="^team@", queue_confirm=True)
    assert outcome["done"] == f"delete: 4 messages: {' '.join(team)}"
    assert outcome["changed"]
    assert deferred_to(provoked, THROTTLED) == deferred_to(provoked, OUTAGE) == []
    assert deferred_to(provoked, REFUSED) == before[REFUSED]
