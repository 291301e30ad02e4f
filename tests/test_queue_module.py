"""The queue module's report and choice of messages (playbooks/library/qqrelay_queue.py),
on postqueue -j entries as Postfix writes them, and the fleet's report."""

from __future__ import annotations

from conftest import filter_plugin, playbook_module

queue = playbook_module("qqrelay_queue")
day2 = filter_plugin("qqrelay_day2")

NOW = 1_800_000_000.0
REFUSED = ("SASL authentication failed; server smtp.qq.com[203.205.232.7] said: 535 Login "
           "Fail.")
CACHED = "SASL [CACHED] authentication failed; server smtp.qq.com said: 535 Login Fail."
OUTAGE = "connect to smtp.qq.com[203.205.232.7]:465: Connection refused"


def entry(queue_id: str, queue_name: str, sender: str, to: str, reason: str = "",
          age: int = 60) -> dict:
    recipient = {"address": to, **({"delay_reason": reason} if reason else {})}
    return {"queue_name": queue_name, "queue_id": queue_id, "arrival_time": NOW - age,
            "message_size": 500, "sender": sender, "recipients": [recipient]}


MESSAGES = [
    entry("A1", "deferred", "alerts@qq.com", "ops@example.net", REFUSED, age=900),
    entry("A2", "deferred", "alerts@qq.com", "ops@example.net", CACHED),
    entry("B1", "deferred", "billing@qq.com", "pay@example.net", OUTAGE),
    entry("C1", "hold", "billing@qq.com", "pay@example.net"),
    entry("D1", "active", "alerts@qq.com", "dev@example.net"),
]


def test_the_report_counts_queues_and_groups_reasons_with_their_fix() -> None:
    report = queue.report(MESSAGES, top=5, now=NOW)
    assert report["queues"] == {"active": 1, "deferred": 3, "hold": 1, "incoming": 0,
                                "maildrop": 0}
    assert report["oldest"] == {"id": "A1", "queue": "deferred", "age_seconds": 900}
    assert [(r["reason"], r["count"]) for r in report["reasons"]] == [
        ("SASL authentication failed; server smtp.qq.com said: 535 Login Fail.", 2),
        ("connect to smtp.qq.com: Connection refused", 1)]
    assert report["reasons"][0]["fix"].startswith("The upstream refused the login.")
    assert report["top_senders"] == [("alerts@qq.com", 3), ("billing@qq.com", 2)]
    assert queue.report_lines(report)[1] == "oldest: A1 (deferred), 15 min 0 s old"


def test_every_given_criterion_must_match() -> None:
    def ids(**given: object) -> list[str]:
        params = {"ids": [], "queue": "", "sender": "", "recipient": "", "reason": "", **given}
        return [m["id"] for m in queue.chosen(MESSAGES, params)]
    assert ids() == ["A1", "A2", "B1", "C1", "D1"]
    assert ids(sender="^billing@") == ["B1", "C1"]
    assert ids(sender="^billing@", queue="hold") == ["C1"]
    assert ids(reason="authentication failed") == ["A1", "A2"]
    assert ids(recipient="dev@", ids=["A1"]) == []


def test_the_fleet_sums_the_relays() -> None:
    one = queue.report(MESSAGES[:3], top=5, now=NOW)
    two = queue.report(MESSAGES[3:], top=5, now=NOW)
    lines = day2.queue_fleet([one, two])
    assert lines[0] == ("fleet of 2 relays: 5 messages: active 1, deferred 3, hold 1, "
                        "incoming 0, maildrop 0")
    assert lines[1] == "oldest: 15 min 0 s old"


def test_a_rotation_entry_has_a_sender_of_its_account() -> None:
    assert day2.rotation_entry({"account": "b@qq.com", "authorization_code": "x",
                                "senders": ["@billing.example"]}) == {
        "account": "b@qq.com", "code": "x", "sender": "rotate-code-test@billing.example"}
    assert day2.rotation_entry({"account": "b@qq.com", "authorization_code": "x",
                                "senders": ["app@a.example", "@b.example"]})["sender"] == \
        "app@a.example"
