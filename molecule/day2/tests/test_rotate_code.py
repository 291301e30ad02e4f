"""playbooks/rotate-code.yml: a code the upstream refuses changes no relay; a good one is
installed while a stream of 100 messages goes through the relay, and none is lost,
duplicated or bounced, including the mail the old code left deferred."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from qqrelay.testing import log_lines, run_playbook, send_stream

PLAYBOOK = Path(__file__).resolve().parents[3] / "playbooks" / "rotate-code.yml"
TEAM = "team@qq.com"
NEW_CODE = "nwcdnwcdnwcdnwcd"  # the code QQ gives after the old one is revoked
CREDENTIALS = "md5sum /etc/postfix/sasl_passwd /etc/postfix/sasl_passwd.db"


def rotate(code: str, *options: str) -> tuple[int, str]:
    """The rotation, with the inventory's team entry (molecule.yml) holding ``code``,
    as after the vault was edited."""
    entry = {"account": TEAM, "authorization_code": code, "senders": ["@team.internal.test"],
             "hourly_rate": 3600}
    result = run_playbook(PLAYBOOK, "relays", {"rotate_code_account": TEAM,
                                               "postfix_relay_sender_accounts": [entry]},
                          options=options)
    return result.returncode, result.stdout + result.stderr


def test_a_code_the_upstream_refuses_changes_no_relay(relay: Any, normal_upstream: Any) -> None:
    before = relay.check_output(CREDENTIALS)
    code, output = rotate("refusedrefusedre")
    assert code != 0
    assert f"FAIL login {TEAM}: 535 Login Fail" in output
    assert "No relay was changed." in output
    assert "Install the code" not in output  # the second play never started
    assert relay.check_output(CREDENTIALS) == before


def test_a_rotation_under_a_stream_loses_and_bounces_nothing(relay: Any,
                                                            normal_upstream: Any) -> None:
    started = time.time()
    normal_upstream.fault("normal", codes={TEAM: NEW_CODE})  # QQ revoked the old code
    results: list[dict[str, Any]] = []
    stream = threading.Thread(target=lambda: results.extend(send_stream(
        relay, server="127.0.0.1", sender="app@team.internal.test", to="someone@example.net",
        sessions=25, per_session=4, gap=0.5)))
    stream.start()
    time.sleep(5)  # the old code is refused meanwhile: mail waits, deferred
    code, output = rotate(NEW_CODE)
    stream.join(timeout=300)
    assert code == 0, output[-3000:]
    assert all(result["accepted"] for result in results), results
    tokens = [token for result in results for token in result["tokens"]]
    assert len(tokens) == 100
    arrived = normal_upstream.wait_for_all(tokens, timeout=300)
    assert {message["login"] for message in arrived} == {TEAM}
    time.sleep(5)  # a duplicate would come after its first copy
    counts = Counter((m.get("subject") or "").split()[-1]
                     for m in normal_upstream.events("message", since=started))
    assert all(counts[token] == 1 for token in tokens)
    refused = [line for line in log_lines(relay, "SASL") if "authentication failed" in line
               and "account1/smtp" in line]
    assert refused, "no message was deferred by the old code before the rotation"
    assert not log_lines(relay, "status=bounced")
    assert "deferred by the refused code, sent now: " in output
    assert "test message: sent 250" in output


def test_check_mode_after_the_rotation_changes_nothing(relay: Any, normal_upstream: Any) -> None:
    normal_upstream.fault("normal", codes={TEAM: NEW_CODE})
    before = relay.check_output(CREDENTIALS)
    code, output = rotate(NEW_CODE, "--check", "--diff")
    assert code == 0, output[-3000:]
    assert f"ok   login {TEAM}" in output
    assert re.search(r"day2-relay\s+:.* changed=0 ", output.split("PLAY RECAP")[-1])
    assert relay.check_output(CREDENTIALS) == before
