"""Daily budgets and pace of a fleet: two relays that send as the same accounts never send
more than the account's limits together, through rotations, a restart, a reboot and a
relay lost for good; a used share keeps mail queued, not bounced, until the renewal; a
hold that Postfix cannot take is said, in the log and a metric, and applied once it can."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tooling.harness.testing import (
    addresses,
    assert_left_as,
    log_lines,
    mtail_metric,
    postfix_queue,
    relay_mail,
    restart_container,
    rotate_mail_log,
    run_playbook,
    scenario_config,
    wait_until,
)

SCENARIO = Path(__file__).resolve().parent.parent
CONVERGE = SCENARIO / "converge.yml"
PLATFORMS = scenario_config(__file__)["platforms"]
ADDRESS = addresses(__file__)
TEAM_SENDER = "build@team.internal.test"  # a sender of the second account (molecule.yml)
BEIJING = timezone(timedelta(hours=8))
# qqrelay-budget's lines in the Postfix log.
HOLD, RESUME = "has used its daily budget", "sending resumes"
HELD_REASON = "daily budget used"  # the reason of a held message in the queue
PLAYBOOKS = SCENARIO.parent.parent / "playbooks"


@pytest.fixture(scope="module")
def limits(hostvars) -> dict:
    """The fleet's limits of the main account (molecule.yml) and each relay's share."""
    relays = [p["name"] for p in PLATFORMS if "relays" in p["groups"]]
    rate = hostvars[relays[0]]["postfix_relay_hourly_rate"]
    budget = hostvars[relays[0]]["postfix_relay_daily_budget"]
    return {"relays": len(relays), "rate": rate, "budget": budget,
            "share": budget // len(relays), "pace": 3600 * len(relays) / rate}


@pytest.fixture(scope="module")
def relays(instances) -> list:
    return instances["relays"]


def ip(relay) -> str:
    return ADDRESS[relay.backend.name]


def renew_now(**settings) -> str:
    """Move the renewal to this second (Beijing time) with the role, as a user would: a
    new budget day starts on both relays, whatever the clock says (with ``settings``, more
    variables). The renewal set."""
    renewal = datetime.now(BEIJING).strftime("%H:%M:%S")
    result = run_playbook(CONVERGE, "relays", {"postfix_relay_budget_renewal": renewal, **settings})
    assert result.returncode == 0, result.stdout[-3000:]
    return renewal


def held(relay, sender: str) -> list[str]:
    """Queue IDs of the messages from ``sender`` (rewritten to the account: clients' mail,
    not the relay's own notices) held by a budget (the retry transport's reason)."""
    return [m["queue_id"] for m in postfix_queue(relay) if m["sender"] == sender
            and all(HELD_REASON in r.get("delay_reason", "") for r in m["recipients"])]


def status(relay, account: str) -> dict:
    """qqrelay-budget status --json, the entry of ``account``."""
    report = json.loads(relay.check_output("qqrelay-budget status --json"))
    return next(a for a in report["accounts"] if a["account"] == account)


def sent_today(relays: list, account: str) -> list[int]:
    """What each relay counts of ``account``'s day."""
    return [status(relay, account)["sent_today"] for relay in relays]


def assert_within_pace(times: list[float], limits: dict) -> None:
    """In every window between two arrivals, at most the fleet's hourly rate for that
    window, plus two deliveries per relay: each relay paces the starts of its share of
    deliveries on its own (two relays may deliver at the same moment), and a delivery that
    opens a connection (DNS, TLS, login) can arrive seconds after it started, next to the
    following one (seen: 1 s apart at a pace of 6 s)."""
    times = sorted(times)
    for first, start in enumerate(times):
        for last in range(first, len(times)):
            window = times[last] - start
            allowed = limits["rate"] * window / 3600 + 2 * limits["relays"]
            assert last - first + 1 <= allowed, (window, last - first + 1, times)


def test_the_fleet_sends_each_account_its_budget_once(relays, client, normal_upstream,
                                                      settings, limits) -> None:
    account = settings["qqrelay_test_account"]
    first, second = relays
    share, budget = limits["share"], limits["budget"]
    for relay in relays:
        relay.check_output("postsuper -d ALL")  # leftovers of an earlier run
    renewal = renew_now()
    holds = {relay: len(log_lines(relay, HOLD)) for relay in relays}

    # 4 of the 6 of the main account: 3 through the first relay, 1 through the other.
    main = relay_mail(client, ip(first), count=share)["tokens"]
    main += relay_mail(client, ip(second), count=1)["tokens"]
    wait_until(lambda: len(normal_upstream.arrivals(main)) == share + 1, 60 + 4 * limits["pace"],
               "4 messages upstream")
    assert status(first, account)["held"]
    assert sent_today(relays, account) == [share, 1]
    # The count says "held" at once; the hold itself is applied by the next run of the
    # program (after the delivery that used the budget), which then says so in one line.
    wait_until(lambda: log_lines(first, HOLD)[holds[first]:], 90, "the hold's log line")
    [line] = log_lines(first, HOLD)[holds[first]:]  # one line says so, and until when
    assert f"{account} {HOLD} ({share} of {share} sent by this relay" in line
    assert f"its share of {budget}): its mail is held until" in line

    # The day survives two rotations with mail_logs' settings on both relays, a Postfix
    # restart on the first and a reboot of the second.
    for relay in relays:
        for _ in range(2):
            relay.check_output("postlog -t qqrelay-test rotating")  # not empty: rotated
            rotate_mail_log(relay)
    assert len(first.check_output("ls /var/log/postfix.log-*").split()) >= 2
    first.check_output("systemctl restart postfix")
    restart_container(second)
    assert sent_today(relays, account) == [share, 1]
    assert status(first, account)["held"]
    assert not status(second, account)["held"]

    # The relay that sent most is lost (its Postfix stopped): the other sends its share,
    # 2 more, and no more, of 9 more; ten went to each relay in all. Back, the first
    # sends none of its own 7 more. Meanwhile a stream of the unbudgeted account through
    # both relays is paced at the fleet's rate.
    first.check_output("systemctl stop postfix")
    main += relay_mail(client, ip(second), count=9)["tokens"]
    wait_until(lambda: len(normal_upstream.arrivals(main)) >= budget, 60 + 3 * limits["pace"],
               f"{budget} messages upstream")
    first.check_output("systemctl start postfix")
    main += relay_mail(client, ip(first), count=10 - share)["tokens"]
    team = [token for relay in relays
            for token in relay_mail(client, ip(relay), sender=TEAM_SENDER, count=8)["tokens"]]
    normal_upstream.wait_for_all(team, timeout=60 + 8 * limits["pace"])
    time.sleep(3 * limits["pace"])
    received = normal_upstream.arrivals(main)
    assert len(received) == budget  # none twice
    assert {m["subject"].split()[-1] for m in received} <= set(main)
    for message in received:
        assert_left_as(message, account)
    assert (len(held(first, account)), len(held(second, account))) == (10 - share, 10 - share), \
        (postfix_queue(first), postfix_queue(second))
    assert sent_today(relays, account) == [share, share]
    for relay in relays:
        assert not log_lines(relay, "status=bounced")
        assert log_lines(relay, f"budget account={account} sent_today={share} relay_budget={share} "
                                f"fleet_budget={budget} held=1")
    stream = sorted(m["time"] for m in normal_upstream.arrivals(team))
    assert_within_pace(stream, limits)
    assert_within_pace([m["time"] for m in received], limits)
    print(f"pace: {len(team)} of the second account through both relays at {limits['rate']} "
          f"an hour for the fleet, in {stream[-1] - stream[0]:.0f} s")

    # Re-applying the role changes nothing and the mail stays held.
    rerun = run_playbook(CONVERGE, "relays", {"postfix_relay_budget_renewal": renewal})
    assert rerun.returncode == 0
    assert "changed=0" in rerun.stdout, rerun.stdout[-3000:]
    assert len(held(first, account)) == len(held(second, account)) == 10 - share

    # The next day each relay sends its share of the held mail again, the rest waits.
    renew_now()
    wait_until(lambda: len(normal_upstream.arrivals(main)) >= 2 * budget,
               60 + 3 * limits["pace"], f"{2 * budget} messages upstream")
    time.sleep(3 * limits["pace"])
    assert len(normal_upstream.arrivals(main)) == 2 * budget
    assert len(held(first, account)) == len(held(second, account)) == 10 - 2 * share
    assert [len(log_lines(relay, RESUME)) > 0 for relay in relays] == [True, True]


def test_no_way_of_moving_mail_sends_what_a_budget_holds(relays, client, normal_upstream,
                                                       settings, limits, tmp_path) -> None:
    """Invariant 1 of docs/design.md on every path: while both relays hold the main
    account, every flush, requeue and release, the day-2 playbooks that move mail
    (queue.yml, rotate_code.yml, move_queue.yml into a held relay) and a run of the role
    that rewrites main.cf and reloads send none of the held mail; the renewal (with a
    budget that takes them all) sends each held message once."""
    account = settings["qqrelay_test_account"]
    first, second = relays
    # The start, established and checked: a new day, each relay has used its share and
    # holds two more messages.
    for relay in relays:
        relay.check_output("postsuper -d ALL")
    renew_now()
    sent = {relay: relay_mail(client, ip(relay), count=limits["share"] + 2)["tokens"]
            for relay in relays}
    for relay in relays:
        wait_until(lambda relay=relay: len(held(relay, account)) == 2,
                   60 + (limits["share"] + 2) * limits["pace"], f"2 held on {relay.backend.name}")
    tokens = [token for each in sent.values() for token in each]
    delivered = {m["subject"].split()[-1] for m in normal_upstream.arrivals(tokens)}
    assert len(delivered) == 2 * limits["share"]
    waiting = [token for token in tokens if token not in delivered]

    def assert_none_left(path: str) -> None:
        time.sleep(limits["pace"] + 2)  # a delivery would be under way by now
        left = normal_upstream.arrivals(waiting)
        assert not left, f"{path} sent held mail: {[m['subject'] for m in left]}"

    # Postfix's own flushes, one after the other (each empties what the last put back).
    for queue_id in held(first, account):
        first.check_output(f"postqueue -i {queue_id}")
    for command in ("postqueue -f", "sendmail -q"):
        first.check_output(command)
    # postkick writes to qmgr's FIFO; while Postfix's master restarts qmgr the FIFO has
    # no reader and postkick dies of SIGPIPE (exit 141, seen in CI): a person tries again.
    wait_until(lambda: first.run("postkick public qmgr F").rc == 0, 30, "postkick qmgr F")
    first.check_output("postsuper -r ALL")
    assert_none_left("postqueue -i, -f, sendmail -q, postkick qmgr F or postsuper -r")
    # The day-2 playbooks that move mail.
    for action in ({"queue_action": "flush"}, {"queue_action": "requeue", "queue_all": True},
                   {"queue_action": "release"}):
        result = run_playbook(PLAYBOOKS / "queue.yml", "relays", action)
        assert result.returncode == 0, result.stdout[-3000:]
    rotated = run_playbook(PLAYBOOKS / "rotate_code.yml", "relays",
                           {"rotate_code_account": account})
    assert rotated.returncode == 0, rotated.stdout[-3000:]
    assert_none_left("queue.yml's flush, requeue or release, or rotate_code.yml")
    # The role rewrites main.cf and reloads Postfix while the budget program runs.
    first.check_output("systemctl start --no-block qqrelay-budget.service")
    changed = run_playbook(CONVERGE, "relays", {"postfix_relay_connect_timeout": 25})
    assert changed.returncode == 0, changed.stdout[-3000:]
    assert first.check_output("postconf -h smtp_connect_timeout") == "25s"
    first.check_output("postqueue -f")
    assert_none_left("a run of the role")
    # The second relay's queue moves into the first, which holds the account too.
    moved = run_playbook(PLAYBOOKS / "move_queue.yml", "all",
                         {"queue_from": second.backend.name, "queue_to": first.backend.name,
                          "queue_move_dir": str(tmp_path)})
    try:
        assert moved.returncode == 0, moved.stdout[-3000:]
        wait_until(lambda: len(held(first, account)) == 4, 60, "the moved mail held")
        assert_none_left("move_queue.yml")
    finally:
        second.check_output("systemctl unmask postfix postfix@- && systemctl start postfix")
    assert held(second, account) == []

    # The next day, with a budget that takes them all, each held message leaves once.
    renew_now(postfix_relay_daily_budget=4 * limits["relays"])
    normal_upstream.wait_for_all(waiting, timeout=60 + 4 * limits["pace"])
    time.sleep(2 * limits["pace"])
    assert sorted(m["subject"].split()[-1] for m in normal_upstream.arrivals(waiting)) == \
        sorted(waiting)
    assert postfix_queue(first) == []
    assert postfix_queue(second) == []


def test_a_hold_postfix_cannot_take_is_said_and_applied_when_it_runs(
        relays, client, normal_upstream, settings, limits) -> None:
    account = settings["qqrelay_test_account"]
    relay = relays[1]
    for each in relays:
        each.check_output("postsuper -d ALL")
    renewal = renew_now()
    token = relay_mail(client, ip(relay))["tokens"][0]
    normal_upstream.wait_for(token)
    assert not status(relay, account)["held"]
    # A lower budget reaches the relay while its Postfix is stopped (written by hand as
    # the role writes it: the role itself would start Postfix). Earlier tests may have
    # stopped it too (move_queue.yml): only the lines from now on count.
    applied = "holds applied to the running Postfix"
    stopped = "cannot hold or release accounts: Postfix is not running"
    earlier = {text: len(log_lines(relay, text)) for text in (applied, stopped, "enforced=0")}
    relay.check_output("systemctl stop postfix")
    lowered = json.loads(relay.check_output("cat /etc/qqrelay/budget.json"))
    lowered["accounts"][0]["relay_budget"] = 1
    relay.check_output(f"echo {json.dumps(json.dumps(lowered))} > /etc/qqrelay/budget.json")
    assert relay.run("systemctl start qqrelay-budget.service").rc != 0
    assert len(log_lines(relay, stopped)) > earlier[stopped]
    assert len(log_lines(relay, "budget relay enforced=0")) > earlier["enforced=0"]  # for mtail
    metrics = relay.package("mtail").is_installed  # relay_metrics: Debian 12 and later
    if metrics:
        wait_until(lambda: mtail_metric(relay, "qqrelay_budget_enforced") == 0, 30,
                   "the metric to say the hold is not applied")
    # Postfix runs again: within a minute the hold is in the running Postfix.
    relay.check_output("systemctl start postfix")
    wait_until(lambda: len(log_lines(relay, applied)) > earlier[applied], 90,
               "the hold to be applied")
    if metrics:
        wait_until(lambda: mtail_metric(relay, "qqrelay_budget_enforced") == 1, 30,
                   "the metric to say the hold is applied")
        assert mtail_metric(relay, f'qqrelay_budget_held{{account="{account}"}}') == 1
    late = relay_mail(client, ip(relay))["tokens"]
    time.sleep(2 * limits["pace"])
    assert not normal_upstream.arrivals(late)
    assert len(held(relay, account)) == 1
    if metrics:  # what the queue alerts leave out
        wait_until(lambda: mtail_metric(relay, "qqrelay_budget_held_messages") == 1, 30,
                   "the held message in the metrics")
    # The role puts the budget back, and the held message leaves.
    assert run_playbook(CONVERGE, "relays",
                        {"postfix_relay_budget_renewal": renewal}).returncode == 0
    normal_upstream.wait_for_all(late, timeout=60)
