"""The queue module's report and choice of messages (plugins/modules/mail_queue.py),
on postqueue -j entries as Postfix writes them, and the fleet's report."""

from __future__ import annotations

import pytest
from conftest import collection_module, filter_plugin

queue = collection_module("mail_queue")
day2 = filter_plugin("day2")

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


def params(**given: object) -> dict:
    return {"action": "report", "ids": [], "queue": "", "sender": "", "recipient": "",
            "reason": "", "all": False, "listing": "tok123", "confirm": "", **given}


def test_widening_actions_need_a_selector_or_all() -> None:
    for action in ("requeue", "hold", "delete"):
        assert "needs the messages chosen" in queue.problem(params(action=action))
        assert queue.problem(params(action=action, all=True)) == ""
        assert queue.problem(params(action=action, sender="^a@")) == ""
    assert queue.problem(params(action="flush")) == ""
    assert "without queue_ids" in queue.problem(params(action="delete", all=True, ids=["A1"]))
    assert "not true" in queue.problem(params(action="delete", sender="x", confirm="true"))
    assert "delete and hold only" in queue.problem(params(action="flush", confirm="tok123"))


def test_a_confirmation_acts_on_the_listed_messages_only(tmp_path, monkeypatch) -> None:
    done: list = []
    monkeypatch.setattr(queue, "LISTING", str(tmp_path / "q" / "listing.json"))
    monkeypatch.setattr(queue, "act", lambda action, ids: done.append((action, ids)))
    first = queue.chosen(MESSAGES, params(sender="^alerts@"))
    changed, said, token = queue.carry_out("delete", first, params(sender="^alerts@"), False)
    assert (changed, token, done) == (False, "tok123", [])
    assert said == "would delete 3 messages: A1 A2 D1 (to do it: -e queue_confirm=tok123)"
    # Since the listing, D1 left and E1 arrived: only A1 and A2 go.
    now = [m for m in MESSAGES if m["queue_id"] != "D1"] + [
        entry("E1", "deferred", "alerts@qq.com", "new@example.net")]
    picked = queue.chosen(now, params(sender="^alerts@"))
    with pytest.raises(ValueError, match="not the token"):
        queue.carry_out("delete", picked, params(sender="^alerts@", confirm="other"), False)
    with pytest.raises(ValueError, match="not the token"):
        queue.carry_out("hold", picked, params(sender="^alerts@", confirm="tok123"), False)
    changed, said, _ = queue.carry_out("delete", picked,
                                       params(sender="^alerts@", confirm="tok123"), False)
    assert changed
    assert done == [("delete", ["A1", "A2"])]
    assert said == ("delete: 2 listed messages: A1 A2; listed but no longer queued or chosen: "
                    "D1; not listed, left alone: E1")
    with pytest.raises(ValueError, match="list again"):  # a token acts once
        queue.carry_out("delete", picked, params(sender="^alerts@", confirm="tok123"), False)


def test_check_mode_lists_without_recording(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(queue, "LISTING", str(tmp_path / "listing.json"))
    picked = queue.chosen(MESSAGES, params(queue="hold"))
    assert queue.carry_out("hold", picked, params(queue="hold"), True) == (
        False, "would hold 1 messages: C1", "")
    assert not (tmp_path / "listing.json").exists()


def test_an_empty_listing_is_recorded_so_the_fleets_confirmation_does_nothing_here(
        tmp_path, monkeypatch) -> None:
    done: list = []
    monkeypatch.setattr(queue, "LISTING", str(tmp_path / "listing.json"))
    monkeypatch.setattr(queue, "act", lambda action, ids: done.append((action, ids)))
    assert queue.carry_out("delete", [], params(sender="^none@"), False) == (
        False, "delete: no message matches", "tok123")
    assert queue.carry_out("delete", [], params(sender="^none@", confirm="tok123"), False) == (
        False, "delete: 0 listed messages", "")
    assert done == []
