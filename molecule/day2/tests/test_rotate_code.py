"""playbooks/rotate_code.yml on a relay of each release, at the default pace: a code the
upstream refuses changes no relay. Once QQ has revoked the main account's code, its
queued mail costs at most a few connections while the second account's mail leaves; the
rotation then completes on every relay without waiting for the backlog, and every
message of it arrives exactly once."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tooling.harness.testing import log_lines, postfix_queue, run_playbook, send_mail, wait_until

PLAYBOOK = Path(__file__).resolve().parents[3] / "playbooks" / "rotate_code.yml"
MAIN, TEAM = "relay@qq.com", "team@qq.com"
NEW_CODE = "nwcdnwcdnwcdnwcd"  # the code QQ gives after the old one is revoked
CREDENTIALS = "md5sum /etc/postfix/sasl_passwd /etc/postfix/sasl_passwd.db"
BACKLOG = 10  # queued messages of the main account on each relay
BACKLOG_TO = "backlog@example.net"
WINDOW = 90  # seconds in which the queued mail may cost QQ at most 3 connections


def rotate(code: str, *options: str) -> tuple[int, str]:
    """The rotation of the main account, its code ``code`` in the inventory (-e here), as
    after the vault was edited."""
    result = run_playbook(PLAYBOOK, "relays", {"rotate_code_account": MAIN,
                                               "postfix_relay_authorization_code": code},
                          options=options)
    return result.returncode, result.stdout + result.stderr


def relay_address(relay: Any) -> str:
    return relay.check_output("hostname -I").split()[0]


def test_a_code_the_upstream_refuses_changes_no_relay(instances: dict[str, list[Any]],
                                                      normal_upstream: Any) -> None:
    before = [relay.check_output(CREDENTIALS) for relay in instances["relays"]]
    code, output = rotate("refusedrefusedre")
    assert code != 0
    assert f"FAIL login {MAIN}: 535 Login Fail" in output
    assert "No relay was changed." in output
    assert "Install the code" not in output  # the second play never started
    assert [relay.check_output(CREDENTIALS) for relay in instances["relays"]] == before


def test_a_revoked_code_then_its_rotation_with_a_backlog(instances: dict[str, list[Any]],
                                                        normal_upstream: Any) -> None:
    relays = instances["relays"]
    started = time.time()
    normal_upstream.fault("normal", codes={MAIN: NEW_CODE})  # QQ revoked the old code
    backlog = {relay.backend.name: send_mail(relay, server="127.0.0.1", to=BACKLOG_TO,
                                             sender="app@internal.test", count=BACKLOG)
               for relay in relays}
    team = [send_mail(relay, server="127.0.0.1", sender="app@team.internal.test",
                      to="someone@example.net") for relay in relays]
    assert all(sent["accepted"] for sent in [*backlog.values(), *team])
    # The second account's mail leaves meanwhile, from every relay.
    normal_upstream.wait_for_all([sent["token"] for sent in team], timeout=60)

    def deferred(relay: Any) -> int:
        return sum(m["queue_name"] == "deferred" and m["recipients"][0]["address"] == BACKLOG_TO
                   for m in postfix_queue(relay))
    for relay in relays:
        wait_until(lambda relay=relay: deferred(relay) == BACKLOG, WINDOW,
                   f"{relay.backend.name}'s backlog deferred by the refused code")
    time.sleep(max(0.0, started + WINDOW - time.time()))
    events = normal_upstream.events(since=started)
    team_sessions = {e["session"] for e in events if e["event"] == "auth"
                     and e["login"] == TEAM and e["success"]}
    for relay in relays:
        connections = [e for e in events if e["event"] == "connect"
                       and e["peer"] == relay_address(relay) and e["session"] not in team_sessions]
        assert 1 <= len(connections) <= 3, (relay.backend.name, connections)

    code, output = rotate(NEW_CODE)
    assert code == 0, output[-3000:]
    assert output.count(f"ok   login {MAIN}: 235 accepted (no mail sent)") == len(relays) + 1
    assert output.count(f"deferred by the refused code, sent now: {BACKLOG}") == len(relays)
    assert output.count("budget: no daily budget") == len(relays)
    # At the default pace the backlog takes minutes: the rollout did not wait for it.
    tokens = [token for sent in backlog.values() for token in sent["tokens"]]
    arrived = normal_upstream.wait_for_all(tokens, timeout=420)
    assert {message["login"] for message in arrived} == {MAIN}
    time.sleep(5)  # a duplicate would come after its first copy
    counts = Counter((m.get("subject") or "").split()[-1]
                     for m in normal_upstream.events("message", since=started))
    assert all(counts[token] == 1 for token in tokens)
    for relay in relays:
        assert not log_lines(relay, "status=bounced")


def test_check_mode_after_the_rotation_changes_nothing(instances: dict[str, list[Any]],
                                                       normal_upstream: Any) -> None:
    normal_upstream.fault("normal", codes={MAIN: NEW_CODE})
    before = [relay.check_output(CREDENTIALS) for relay in instances["relays"]]
    code, output = rotate(NEW_CODE, "--check", "--diff")
    assert code == 0, output[-3000:]
    assert f"ok   login {MAIN}" in output
    assert re.findall(r" changed=(\d+) ", output.split("PLAY RECAP")[-1]) == ["0"] * 3
    assert [relay.check_output(CREDENTIALS) for relay in instances["relays"]] == before
