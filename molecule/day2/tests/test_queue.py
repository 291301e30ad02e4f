"""playbooks/queue.yml on the three relays after provoking QQ's 535, throttling and an
outage on one: the report counts each and groups the reasons with their fix; a misspelled
variable or a missing selector changes nothing; hold by reason when confirmed with the
listing's token, requeue leaves held mail held, release by ID; delete by sender removes
exactly the listed messages, not one that arrived after the listing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tooling.harness.fake_upstream import AUTH_FAILED
from tooling.harness.testing import postfix_queue, run_playbook, send_mail, wait_until

PLAYBOOK = Path(__file__).resolve().parents[3] / "playbooks" / "queue.yml"
# The relay sends as the account (senders are rewritten), so each fault's mail is told
# apart by its recipient: the main account's mail meets a refused code; the second
# account's (team, molecule.yml) is throttled, then meets an outage.
MAIN, TEAM = "relay@qq.com", "team@qq.com"
PROVOKED = "day2-relay13"  # the relay the faults' mail waits on (the others' queues are empty)
REFUSED, THROTTLED, OUTAGE = ("refused@example.net", "throttled@example.net",
                              "outage@example.net")


def deferred_to(relay: Any, recipient: str, queue_name: str = "deferred") -> list[str]:
    return sorted(m["queue_id"] for m in postfix_queue(relay) if m["queue_name"] == queue_name
                  and [r["address"] for r in m["recipients"]] == [recipient])


def queue(*options: str, fail: bool = False, **extra_vars: Any) -> dict[str, Any]:
    """queue.yml on every relay: the module's result on the provoked relay (day2-relay13),
    with the fleet's lines under ``fleet`` and every relay's under ``relays``; or, with
    ``fail``, the output of a run that must fail."""
    result = run_playbook(PLAYBOOK, "relays", extra_vars, options=options,
                          env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"})
    if fail:
        assert result.returncode != 0, result.stdout[-3000:]
        return {"output": result.stdout}
    assert result.returncode == 0, result.stdout[-3000:]
    tasks = {task["task"]["name"]: task["hosts"]
             for task in json.loads(result.stdout)["plays"][0]["tasks"]}
    relays = tasks["Read the queue and act on the chosen messages"]
    outcome = relays[PROVOKED]
    outcome["relays"] = relays
    outcome["fleet"] = next(iter(tasks["Report the fleet"].values()))["msg"]
    return outcome


def send(relay: Any, sender: str, to: str, count: int) -> None:
    sent = send_mail(relay, server="127.0.0.1", sender=sender, to=to, count=count)
    assert sent["accepted"], sent


@pytest.fixture(scope="module")
def provoked(instances: dict[str, list[Any]], upstream: Any) -> Any:
    """On one relay: two messages deferred by 535, two throttled, two by the outage, which
    lasts until the end; removed after."""
    relay = next(r for r in instances["relays"] if r.backend.name == PROVOKED)
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
        # postqueue -f also makes the queue manager retry the accounts it paused.
        relay.run("postsuper -d ALL && postqueue -f")


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
    assert outcome["fleet"][0].startswith("fleet of 3 relays: 6 messages: active 0, deferred 6")
    assert sorted(r["lines"][0] for r in outcome["relays"].values()) == [
        "0 messages: active 0, deferred 0, hold 0, incoming 0, maildrop 0"] * 2 + [
        outcome["lines"][0]]


def confirmed(listing: dict[str, Any], **extra_vars: Any) -> dict[str, Any]:
    """The action of ``listing`` carried out with the token it printed."""
    assert listing["listed"], listing
    return queue(queue_confirm=listing["listed"], **extra_vars)


def test_a_misspelled_or_missing_selector_changes_nothing(provoked: Any) -> None:
    before = postfix_queue(provoked)
    typo = queue(fail=True, queue_action="delete", queue_sendr="^team@")
    assert "Unknown queue_sendr: queue.yml takes queue_action" in typo["output"]
    unchosen = queue(fail=True, queue_action="delete")
    assert "queue_action=delete needs the messages chosen" in unchosen["output"]
    assert "queue_all=true" in unchosen["output"]
    old_style = queue(fail=True, queue_action="delete", queue_sender="^team@",
                      queue_confirm=True)
    assert "queue_confirm takes the token that the listing printed" in old_style["output"]
    assert postfix_queue(provoked) == before


def test_hold_and_release_by_reason_and_requeue_keeps_held_mail_held(provoked: Any) -> None:
    outage = deferred_to(provoked, OUTAGE)
    listing = queue(queue_action="hold", queue_reason="Connection refused")
    assert listing["done"] == (f"would hold 2 messages: {' '.join(outage)} "
                               f"(to do it: -e queue_confirm={listing['listed']})")
    confirmed(listing, queue_action="hold", queue_reason="Connection refused")
    assert deferred_to(provoked, OUTAGE, "hold") == outage
    requeued = queue(queue_action="requeue", queue_all=True)
    assert requeued["done"].startswith("requeue: 4 messages: ")  # the 535 and the throttled
    assert not set(outage) & {m["id"] for m in requeued["chosen"]}
    # Requeued mail goes through cleanup again (new queue IDs) and waits for the outage.
    wait_until(lambda: len(deferred_to(provoked, REFUSED)) == len(deferred_to(provoked, THROTTLED))
               == 2, 90, "the requeued messages")
    assert deferred_to(provoked, OUTAGE, "hold") == outage
    queue(queue_action="release", queue_ids=outage)
    assert deferred_to(provoked, OUTAGE) == outage


def test_a_confirmed_delete_takes_only_the_listed_messages(provoked: Any) -> None:
    before = {to: deferred_to(provoked, to) for to in (REFUSED, THROTTLED, OUTAGE)}
    team = sorted(before[THROTTLED] + before[OUTAGE])
    listing = queue(queue_action="delete", queue_sender="^team@")
    assert listing["done"] == (f"would delete 4 messages: {' '.join(team)} "
                               f"(to do it: -e queue_confirm={listing['listed']})")
    assert not listing["changed"]
    queue("--check", queue_action="delete", queue_sender="^team@",
          queue_confirm=listing["listed"])
    assert {to: deferred_to(provoked, to) for to in before} == before  # nothing deleted yet
    # A message of the same sender arrives after the listing: it stays.
    send(provoked, "app@team.internal.test", OUTAGE, 1)
    wait_until(lambda: len(deferred_to(provoked, OUTAGE)) == 3, 90, "the late message")
    late = sorted(set(deferred_to(provoked, OUTAGE)) - set(before[OUTAGE]))
    outcome = confirmed(listing, queue_action="delete", queue_sender="^team@")
    assert outcome["done"] == (f"delete: 4 listed messages: {' '.join(team)}; "
                               f"not listed, left alone: {' '.join(late)}")
    assert outcome["changed"]
    assert deferred_to(provoked, THROTTLED) == []
    assert deferred_to(provoked, OUTAGE) == late
    assert deferred_to(provoked, REFUSED) == before[REFUSED]
    again = queue(fail=True, queue_action="delete", queue_sender="^team@",
                  queue_confirm=listing["listed"])  # a token acts once
    assert "list again" in again["output"]
